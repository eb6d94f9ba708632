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


def test_distortion_loss_is_a_logged_term_of_the_total_only_when_asked(tiny_room, tmp_path):
    for name, extra in (("off", []), ("on", ["--distortion_loss_w", 0.5])):
        assert run_nefes.main(tiny_nefes_args(tiny_room, tmp_path, name, "--epochs", 1, "--i_testset", 100,
                                              "--stage1_color_only", *extra)) == 0
    off, on = (next(r for r in _read_log(tmp_path / n) if "phase" in r) for n in ("off", "on"))
    assert "distortion" not in off and off["total"] == pytest.approx(off["color"], rel=1e-6)
    assert on["distortion"] > 0
    assert on["total"] == pytest.approx(on["color"] + 0.5 * on["distortion"], rel=1e-5)


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


def test_sigterm_mid_epoch_saves_the_last_completed_epoch_and_resumes_exactly(tiny_room, tmp_path):
    """SIGTERM during an epoch: no regular checkpoint is written or overwritten, interrupted.tar holds the
    last completed epoch, and the resumed run ends bit-identical to an uninterrupted one."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    sparse = ("--i_weights", 100)           # no regular checkpoint before the last epoch (8)
    ref = subprocess.run(_cmd(tiny_room, tmp_path / "ref", "run", *sparse), env=env, capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr[-2000:]
    expdir = tmp_path / "cut" / "run"
    proc = subprocess.Popen(_cmd(tiny_room, tmp_path / "cut", "run", *sparse), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    log, deadline = expdir / "train_log.jsonl", time.time() + 120
    while proc.poll() is None and time.time() < deadline and (
            not log.exists() or sum('"phase"' in ln for ln in log.read_text().splitlines()) < 3):
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)        # epochs 0-2 are done: now inside epoch 3 (or later)
    err = proc.communicate()[1]
    assert proc.returncode == 130, f"the run was not interrupted (exit {proc.returncode}): {err[-2000:]}"
    assert not list(expdir.glob("0*.tar")), "an interrupt must not write a regular epoch checkpoint"
    done = torch.load(expdir / "interrupted.tar", weights_only=False)["global_step"]
    n_logged = sum('"phase"' in ln for ln in log.read_text().splitlines())
    # an epoch's log line is written just before its snapshot is taken: the last logged epoch, or the one before
    assert 1 <= n_logged - 2 <= done <= n_logged - 1 < 7, (done, n_logged)
    resumed = subprocess.run(_cmd(tiny_room, tmp_path / "cut", "run", *sparse), env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resumed from {expdir / 'interrupted.tar'}" in resumed.stderr
    assert not (expdir / "interrupted.tar").exists(), "the final checkpoint supersedes interrupted.tar"
    a = torch.load(tmp_path / "ref" / "run" / "000008.tar", weights_only=False)
    b = torch.load(expdir / "000008.tar", weights_only=False)
    for part in ("network_fn_state_dict", "network_fine_state_dict"):
        for k, v in a[part].items():
            assert torch.equal(v, b[part][k]), f"{part}.{k} differs after the SIGTERM resume"
    for k, v in a["optimizer_state_dict"]["state"].items():
        assert all(torch.equal(v[s], b["optimizer_state_dict"]["state"][k][s]) for s in v), f"Adam state {k} differs"


def test_resume_prefers_the_newer_of_interrupted_and_regular_checkpoints(tmp_path):
    from models.trainer import INTERRUPTED, resume_checkpoint
    assert resume_checkpoint(tmp_path) is None
    torch.save({"global_step": 4}, tmp_path / INTERRUPTED)
    assert resume_checkpoint(tmp_path) == tmp_path / INTERRUPTED           # the only state there
    torch.save({"global_step": 2}, tmp_path / "000002.tar")
    assert resume_checkpoint(tmp_path) == tmp_path / INTERRUPTED           # epoch 4 is newer than 2
    torch.save({"global_step": 6}, tmp_path / "000006.tar")
    assert resume_checkpoint(tmp_path) == tmp_path / "000006.tar"          # a stale interrupted.tar is ignored
