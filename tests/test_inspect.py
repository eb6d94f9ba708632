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
    cov = np.loadtxt(out / "coverage_test.txt", ndmin=2)
    near, similar = inspect.view_coverage(scene.train.poses, scene.test.poses)
    np.testing.assert_allclose(cov, np.stack([near, similar], 1), atol=1e-6)
    assert "test views to the nearest training camera: median" in r.stdout
    png = out / "cameras.png"
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_view_coverage_needs_a_camera_looking_the_same_way():
    def cam(yaw_deg, x):
        a = np.radians(yaw_deg)
        R = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
        return np.concatenate([R, [[x], [0], [0]]], 1)
    train = np.stack([cam(0, 0.0), cam(180, 0.5), cam(10, 3.0)])
    query = np.stack([cam(0, 0.4), cam(90, 0.0)])
    near, similar = inspect.view_coverage(train, query)
    np.testing.assert_allclose(near, [0.1, 0.0])          # the nearest camera, whichever way it looks
    np.testing.assert_allclose(similar[0], 0.4)           # the opposite-facing one at 0.1 m does not count
    assert similar[1] == np.inf                           # nothing looks within 15 deg of a 90 deg turn
    np.testing.assert_allclose(inspect.view_coverage(train, query, max_angle_deg=95)[1], [0.4, 0.0])
    np.testing.assert_allclose(inspect.view_coverage(train, query, max_angle_deg=180)[1], near)
    assert inspect.camera_spread(train) == 3.0
    line = inspect.format_coverage(near, similar, inspect.camera_spread(train))
    assert "none for 1" in line and "median 0.400 m (13.3 %)" in line


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
