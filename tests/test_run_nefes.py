"""run_nefes.py end to end on the tiny synthetic room: stages, outputs, resume, render_test."""
import json
import os
import signal
import subprocess
import sys
import time
from argparse import Namespace

import pytest
import torch

import run_nefes
from conftest import REPO, tiny_nefes_args
from models.trainer import Schedule


def _args(**kw):
    base = dict(epochs=600, new_schedule=1, epoch_to_fusion=None, lrate=5e-4, lrate_decay=0.754, stage1_color_only=False)
    base.update(kw)
    return Namespace(**base)


def test_schedule_is_the_originals():
    s1 = Schedule.from_args(_args())
    assert [s1.phase(e) for e in (0, 599, 600)] == ["color", "color", "feature"]   # the stage-1 quirk
    assert s1.last_epoch == 600
    assert s1.lr(0) == pytest.approx(5e-4) and s1.lr(754) == pytest.approx(5e-5)
    assert Schedule.from_args(_args(stage1_color_only=True)).last_epoch == 599
    s2 = Schedule.from_args(_args(new_schedule=2))
    assert [s2.phase(e) for e in (0, 199, 200, 600)] == ["feature", "feature", "fusion", "fusion"]
    assert Schedule.from_args(_args(new_schedule=2, epoch_to_fusion=5)).phase(5) == "fusion"


def _read_log(expdir):
    return [json.loads(l) for l in (expdir / "train_log.jsonl").read_text().splitlines()]


def test_stage1_then_stages_2_and_3(tiny_room, tmp_path, capsys):
    assert run_nefes.main(tiny_nefes_args(tiny_room, tmp_path, "s1", "--epochs", 2, "--i_weights", 1,
                                          "--i_testset", 2, "--stage1_color_only")) == 0
    s1 = tmp_path / "s1"
    assert {p.name for p in s1.glob("*.tar")} == {"000001.tar"}
    ck = torch.load(s1 / "000001.tar", weights_only=False)
    for key in ("global_step", "network_fn_state_dict", "network_fine_state_dict", "optimizer_state_dict",
                "field_type", "scene_box", "new_schedule", "rng_state"):
        assert key in ck
    assert (s1 / "val_000001" / "000_rgb.png").is_file() and (s1 / "val_000001" / "000_feat.png").is_file()
    assert "final validation: PSNR" in capsys.readouterr().out
    # stage-2 run from the stage-1 weights: feature phase, then fusion on patches
    assert run_nefes.main(tiny_nefes_args(tiny_room, tmp_path, "s2", "--new_schedule", 2, "--epochs", 2,
                                          "--epoch_to_fusion", 1, "--i_weights", 2, "--i_testset", 2,
                                          "--ft_path", s1 / "000001.tar")) == 0
    log = [r for r in _read_log(tmp_path / "s2") if "phase" in r]
    assert [r["phase"] for r in log] == ["feature", "fusion", "fusion"]
    assert all(torch.isfinite(torch.tensor([r["total"], r["feat"]])).all() for r in log)
    assert "fusion" in log[-1]
    ck2 = torch.load(tmp_path / "s2" / "000002.tar", weights_only=False)
    assert ck2["global_step"] == 2 and ck2["new_schedule"] == 2
    assert run_nefes.main(tiny_nefes_args(tiny_room, tmp_path, "s2", "--render_test")) == 0
    out = capsys.readouterr().out
    assert "train: PSNR" in out and "test: PSNR" in out


def _cmd(tiny_room, basedir, expname, *extra):
    return [sys.executable, str(REPO / "run_nefes.py"), *tiny_nefes_args(tiny_room, basedir, expname, "--epochs", 8,
                                                                          "--i_weights", 2, "--i_testset", 100, *extra)]


def test_killed_run_resumes_from_its_own_checkpoint_exactly(tiny_room, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    ref = subprocess.run(_cmd(tiny_room, tmp_path / "ref", "run"), env=env, capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr[-2000:]
    expdir = tmp_path / "cut" / "run"
    proc = subprocess.Popen(_cmd(tiny_room, tmp_path / "cut", "run"), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (expdir / "000002.tar").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = sorted(p.name for p in expdir.glob("*.tar"))
    assert saved and "000008.tar" not in saved, f"the run was not interrupted mid-way: {saved}"
    resumed = subprocess.run(_cmd(tiny_room, tmp_path / "cut", "run"), env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resumed from {expdir / saved[-1]}" in resumed.stderr
    a = torch.load(tmp_path / "ref" / "run" / "000008.tar", weights_only=False)
    b = torch.load(expdir / "000008.tar", weights_only=False)
    for part in ("network_fn_state_dict", "network_fine_state_dict"):
        for k, v in a[part].items():
            assert torch.equal(v, b[part][k]), f"{part}.{k} differs after resume"
    # --no_reload starts over
    again = subprocess.run(_cmd(tiny_room, tmp_path / "cut", "run", "--no_reload", "--epochs", 1), env=env,
                           capture_output=True, text=True)
    assert again.returncode == 0 and "new hashgrid field" in again.stderr
