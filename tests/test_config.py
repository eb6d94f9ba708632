"""The one parser: original config files run unchanged, ours carry the same keys and values."""
import logging
import subprocess
import sys
from pathlib import Path


from config import options

REPO = Path(__file__).resolve().parent.parent


def _kv(path):
    out = {}
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "=" in line:
            k, v = (s.strip() for s in line.split("=", 1))
            out[k] = v
    return out


def test_original_configs_parse_unchanged(shared_ref, caplog):
    files = sorted((shared_ref / "config").glob("*/dfnet/*.txt"))
    assert len(files) == 33
    with caplog.at_level(logging.WARNING):
        for f in files:
            args = options.parse_args(["--config", str(f)])
            assert args.tinyscale == 4.0 and args.df == 2.0
            if f.stem.endswith("DFM"):
                assert args.pose_only == 2 and args.svd_reg and args.learning_rate == 1e-5
                assert args.no_verification_step == ("Cambridge" in str(f))
            else:
                assert args.semantic == ("Cambridge" in str(f))
                assert args.new_schedule == (2 if f.stem.endswith("stage2") else 1)
    assert not [r for r in caplog.records if "unknown key" in r.message]


def test_project_configs_mirror_the_original(shared_ref):
    for f in sorted((shared_ref / "config").glob("*/dfnet/*.txt")):
        ours = REPO / "config" / f.relative_to(shared_ref / "config")
        assert ours.is_file(), f"missing project config {ours}"
        a, b = _kv(f), _kv(ours)
        assert a.keys() == b.keys(), ours
        for k in a:
            assert a[k].replace("../", "./") == b[k], (ours, k)


def test_unknown_key_warns_and_legacy_key_is_accepted(tmp_path, caplog):
    cfg = tmp_path / "c.txt"
    cfg.write_text("df=2 # inline comment\nsvd_reg=True\nNeRFW=True\nmade_up_key=3\n")
    with caplog.at_level(logging.INFO):
        args = options.parse_args(["--config", str(cfg)])
    assert args.df == 2.0 and args.svd_reg is True
    assert any("made_up_key" in r.message and r.levelno == logging.WARNING for r in caplog.records)
    assert any("NeRFW" in r.message for r in caplog.records)


def _run(*argv):
    return subprocess.run([sys.executable, "-c", "import sys; from config.options import parse_args; parse_args(sys.argv[1:])", *argv],
                          cwd=REPO, capture_output=True, text=True)


def test_bad_inputs_give_one_clear_line(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("df=abc\n")
    r = _run("--config", str(bad))
    assert r.returncode == 2 and "--df" in r.stderr and "abc" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = _run("--config", str(tmp_path / "nope.txt"))
    assert r.returncode == 2 and "config file not found" in r.stderr and "nope.txt" in r.stderr
    r = _run("--not_an_option", "1")
    assert r.returncode == 2 and "not_an_option" in r.stderr
    r = _run("--dataset_type", "KITTI")
    assert r.returncode == 2 and "KITTI" in r.stderr


def test_legacy_script_relative_paths_map_to_repo(monkeypatch):
    monkeypatch.chdir(REPO)
    assert options.resolve_path("../logs") == str(REPO / "logs")
    assert options.resolve_path("/abs/path") == "/abs/path"


def test_device_auto_is_cpu_here_or_cuda():
    import torch
    dev = options.get_device("auto")
    assert dev.type == ("cuda" if torch.cuda.is_available() else "cpu")
