"""Issue 14: an output folder that cannot be created or written, or a disk that fills up, ends the
training entry points (run_nefes.py, train_dfnet.py, demo.py) with one line naming the place and exit
code 2, with nothing half-written (test_refinement.py has its own tests in test_refinement_run.py)."""
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import tiny_nefes_args
from test_dfnet_training import _FakeScene

REPO = Path(__file__).resolve().parent.parent


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.startswith("error")]    # progress bars also go to stderr
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def _blocker(tmp_path) -> Path:
    f = tmp_path / "a_file"
    f.write_text("not a folder\n")
    return f


def test_run_nefes_output_folder_through_a_file(tiny_room, tmp_path, capsys):
    import run_nefes
    base = _blocker(tmp_path)
    assert run_nefes.main(tiny_nefes_args(tiny_room, base, "exp", "--epochs", 1)) == 2
    assert str(base) in _one_error_line(capsys)
    assert base.read_text() == "not a folder\n"


def _torch_full_disk(obj, f, *a, **k):
    Path(f).write_bytes(b"PK\x03\x04 partial")    # what the zip writer got out before the disk filled
    raise RuntimeError("[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing file "
                       "data/3: file write failed")


def test_run_nefes_full_disk_at_a_checkpoint(tiny_room, tmp_path, monkeypatch, capsys, one_thread):
    import run_nefes
    import torch
    monkeypatch.setattr(torch, "save", _torch_full_disk)
    assert run_nefes.main(tiny_nefes_args(tiny_room, tmp_path, "exp", "--epochs", 1, "--i_weights", 1,
                                          "--stage1_color_only")) == 2
    line = _one_error_line(capsys)
    assert str(tmp_path / "exp") in line and "write" in line
    exp = tmp_path / "exp"
    assert not list(exp.glob("*.tar")) and not list(exp.glob(".*.tmp"))   # no truncated or temporary checkpoint


def test_train_dfnet_output_folder_through_a_file(tmp_path, monkeypatch, capsys):
    import dataset_loaders
    import train_dfnet
    monkeypatch.setattr(dataset_loaders, "load_scene", lambda args: _FakeScene(), raising=False)
    base = _blocker(tmp_path)
    argv = ["--basedir", str(base), "--expname", "e", "--epochs", "1", "--dfnet_width", "0.0625",
            "--combine_loss_w", "1", "0", "0", "--rvs_loss_w", "0"]
    assert train_dfnet.main(argv) == 2
    assert str(base) in _one_error_line(capsys)


def test_train_dfnet_full_disk(tmp_path, monkeypatch, capsys):
    import dataset_loaders
    import torch
    import train_dfnet
    monkeypatch.setattr(dataset_loaders, "load_scene", lambda args: _FakeScene(), raising=False)
    monkeypatch.setattr(torch, "save", _torch_full_disk)
    argv = ["--basedir", str(tmp_path), "--expname", "e", "--epochs", "1", "--dfnet_width", "0.0625",
            "--combine_loss_w", "1", "0", "0", "--rvs_loss_w", "0"]
    assert train_dfnet.main(argv) == 2
    line = _one_error_line(capsys)
    assert str(tmp_path / "e") in line
    assert not list((tmp_path / "e").glob("*.pt")) + list((tmp_path / "e").glob("*.tar")) + list((tmp_path / "e").glob(".*.tmp"))


def test_demo_output_folder_through_a_file(tmp_path):
    base = _blocker(tmp_path)
    r = subprocess.run([sys.executable, str(REPO / "demo.py"), "--out", str(base / "demo")],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert lines[-1].startswith("error: ") and str(base) in lines[-1], r.stderr
