"""python -m dataset_loaders.inspect: minimal config, outputs, and one-line errors."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import scene_fixtures as F
from dataset_loaders import inspect, load_scene

REPO = Path(__file__).resolve().parent.parent


def _run(*argv):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "dataset_loaders.inspect", *map(str, argv)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_inspect_minimal_config(tmp_path):
    fake = F.make_7scenes(tmp_path / "d")
    cfg = tmp_path / "cfg.txt"
    cfg.write_text(f"expname = insp\nbasedir = {tmp_path / 'logs'}\ndatadir = {fake.datadir}\n"
                   "dataset_type = 7Scenes_colmap\ndf = 2 # working size\ntrainskip = 2\ntestskip = 1\n")
    out = tmp_path / "out"
    r = _run("--config", cfg, "--out", out)
    assert r.returncode == 0, r.stderr
    assert "train 6, test 5" in r.stdout and "working 16x12" in r.stdout and "13.2500 px" in r.stdout
    assert "pose_avg_stats_colmap.txt" in r.stdout and "world_setup" in r.stdout
    scene = load_scene(F.make_args(fake.datadir, "7Scenes_colmap", df=2, trainskip=2))
    for split in ("train", "test"):
        rows = np.loadtxt(out / f"poses_{split}.txt", ndmin=2)
        poses = getattr(scene, split).poses
        assert rows.shape == (len(poses), 12)
        np.testing.assert_allclose(rows.reshape(-1, 3, 4), poses, atol=1e-12)
    png = out / "cameras.png"
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_inspect_bad_input_is_one_line(tmp_path, capsys):
    cfg = tmp_path / "cfg.txt"
    cfg.write_text(f"datadir = {tmp_path / 'missing'}\ndataset_type = 7Scenes\n")
    assert inspect.main(["--config", str(cfg), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "missing") in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as ei:  # the parser's own one-line error
        inspect.main(["--config", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "o")])
    assert ei.value.code != 0 and "nope.txt" in capsys.readouterr().err
    assert inspect.main(["--config", str(cfg)]) == 2 and "--out" in capsys.readouterr().err
    fake = F.make_7scenes(tmp_path / "d")
    (fake.image_root / "seq-01" / "frame-000003.pose.txt").write_text("1 2\n")
    cfg.write_text(f"datadir = {fake.datadir}\ndataset_type = 7Scenes\n")
    assert inspect.main(["--config", str(cfg), "--out", str(tmp_path / "o")]) == 2
    assert "frame-000003.pose.txt" in capsys.readouterr().err
