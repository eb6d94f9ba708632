"""Pose normalisation: shipped files win, automatic files are written and re-read, far-bound heuristics,
and the original --save_pose_avg_stats recipe (checked against the shipped chess COLMAP file)."""
import json
import logging
import shutil

import numpy as np
import pytest

import scene_fixtures as F
from core import frames
from core.errors import ConfigError
from dataset_loaders import DatasetError, load_scene, world_setup
from dataset_loaders import scene as scene_mod

CHESS_WORLD = {"near": 0, "far": 2, "pose_scale": 0.5, "pose_scale2": 1, "move_all_cam_vec": [0.0, 0.0, 1.0]}


def test_auto_pose_avg_is_written_and_reused(tmp_path):
    fake = F.make_7scenes(tmp_path)
    s1 = load_scene(F.make_args(fake.datadir, "7Scenes"))
    path = fake.datadir / "pose_avg_stats.txt"
    assert path.is_file() and s1.provenance["pose_avg"].startswith("auto") and str(path) in s1.provenance["pose_avg"]
    # A = average of the training OpenCV c2w poses of the dataset's world
    np.testing.assert_allclose(np.loadtxt(path), frames.average_poses(fake.poses_c2w("train")), atol=1e-12)
    # the second load (even with another trainskip) reads the file: same frame
    s2 = load_scene(F.make_args(fake.datadir, "7Scenes", trainskip=2))
    assert s2.provenance["pose_avg"] == f"read from {path}"
    np.testing.assert_allclose(s2.test.poses, s1.test.poses, atol=1e-12)
    assert s2.provenance["world_setup"].startswith("read from")


def test_auto_pose_avg_colmap_uses_axis_flipped_inverse(tmp_path):
    fake = F.make_7scenes(tmp_path)
    load_scene(F.make_args(fake.datadir, "7Scenes_colmap"))
    c2w_gl = fake.poses_c2w("train") @ np.diag([1.0, -1.0, -1.0, 1.0])  # (M·Q)⁻¹ = c2w · M
    np.testing.assert_allclose(np.loadtxt(fake.datadir / "pose_avg_stats_colmap.txt"), frames.average_poses(c2w_gl), atol=1e-9)


def test_original_files_win(tmp_path):
    fake = F.make_7scenes(tmp_path)
    A = F.random_c2w(1, seed=3, max_angle=120)[0]
    F.write_meta(fake.datadir, pose_avg=A, world=CHESS_WORLD)
    for flag in ([], ["--load_pose_avg_stats"]):
        s = load_scene(F.make_args(fake.datadir, "7Scenes", *flag))
        np.testing.assert_allclose(s.pose_avg, A, atol=1e-15)
        assert s.world_setup == frames.WorldSetup(**CHESS_WORLD)
        assert s.provenance["world_setup"] == f"read from {fake.datadir / 'world_setup.json'}"
    assert json.loads((fake.datadir / "world_setup.json").read_text()) == CHESS_WORLD  # untouched


def test_load_flag_without_file_warns_and_computes(tmp_path, caplog):
    fake = F.make_7scenes(tmp_path)
    with caplog.at_level(logging.WARNING):
        s = load_scene(F.make_args(fake.datadir, "7Scenes", "--load_pose_avg_stats"))
    assert s.provenance["pose_avg"].startswith("auto")
    assert any("load_pose_avg_stats" in r.getMessage() for r in caplog.records)


def test_auto_world_setup_from_depth(tmp_path):
    fake = F.make_7scenes(tmp_path, depth_mm=2000)  # 2 m everywhere, plus rows of 0 and 65535 (invalid)
    s = load_scene(F.make_args(fake.datadir, "7Scenes"))
    far_m = world_setup.DEPTH_MARGIN * 2.0
    ws = s.world_setup
    assert (ws.near, ws.far, ws.pose_scale) == (0.0, 2.0, 1.0)
    assert ws.pose_scale2 == pytest.approx(2.0 / far_m)
    # v moves the midpoint of the mean viewing frustum to the origin; cameras centred, looking along -z
    np.testing.assert_allclose(ws.move_all_cam_vec, [0, 0, far_m / 2], atol=1e-9)
    nerf = frames.apr_to_nerf(s.train.poses, ws)
    np.testing.assert_allclose(nerf[:, :, 3].mean(0), [0, 0, 1.0], atol=1e-9)
    assert "depth" in s.provenance["world_setup"]
    on_disk = frames.WorldSetup.from_json(fake.datadir / "world_setup.json")
    assert on_disk == ws
    assert load_scene(F.make_args(fake.datadir, "7Scenes")).world_setup == ws


def test_auto_world_setup_without_depth_uses_camera_spread(tmp_path):
    cam = F.make_cambridge(tmp_path, n_train=8, semantic=False)
    s = load_scene(F.make_args(cam.datadir, "Cambridge"))
    c = np.stack([cam.c2w[n] for n in s.train.names])[:, :, 3]
    spread = 2 * np.percentile(np.linalg.norm(c - c.mean(0), axis=1), 90)  # rigid-invariant
    far_m = world_setup.CAMERA_SPREAD_FACTOR * spread
    assert s.world_setup.pose_scale2 == pytest.approx(2.0 / far_m)
    assert "camera spread" in s.provenance["world_setup"] and s.far == 2.0   # noise images: no keypoints


def test_far_bound_for_static_cameras_falls_back_to_one_metre(caplog):
    c2w = np.tile(np.concatenate([np.eye(3), np.ones((3, 1))], 1), (4, 1, 1))
    ws, desc = world_setup.auto_world_setup(c2w)
    assert ws.pose_scale2 == pytest.approx(2.0) and "do not move" in desc


def test_unwritable_datadir_warns_and_continues(tmp_path, caplog, monkeypatch):
    fake = F.make_7scenes(tmp_path)

    def refuse(path, text):  # what a read-only datadir does (chmod does not stop root)
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(world_setup, "atomic_write_text", refuse)
    with caplog.at_level(logging.WARNING):
        s = load_scene(F.make_args(fake.datadir, "7Scenes"))
    assert "NOT written" in s.provenance["pose_avg"] and "NOT written" in s.provenance["world_setup"]
    assert not (fake.datadir / "pose_avg_stats.txt").exists() and len(s.train) == 10
    assert any("could not write" in r.getMessage() for r in caplog.records)


def test_set_near_far_override(tmp_path):
    fake = F.make_7scenes(tmp_path)
    F.write_meta(fake.datadir, world=CHESS_WORLD)
    s = load_scene(F.make_args(fake.datadir, "7Scenes", "--set_near_far", near_far=[0.1, 3.5]))
    assert (s.near, s.far) == (0.1, 3.5) and s.world_setup.far == 2.0 and "set_near_far" in s.provenance["near_far"]


@pytest.mark.parametrize("fname, content", [("world_setup.json", "{"), ("world_setup.json", '{"near": 0}'),
                                            ("pose_avg_stats.txt", "1 2 3\n"), ("pose_avg_stats.txt", "nan " * 12)])
def test_malformed_meta_files(tmp_path, fname, content):
    fake = F.make_7scenes(tmp_path)
    (fake.datadir / fname).write_text(content)
    with pytest.raises(DatasetError, match=str(fake.datadir / fname)):
        load_scene(F.make_args(fake.datadir, "7Scenes"))


@pytest.mark.parametrize("dtype", ["7Scenes", "7Scenes_colmap", "Cambridge"])
def test_save_pose_avg_stats_recipe(tmp_path, dtype):
    if dtype == "Cambridge":
        fake = F.make_cambridge(tmp_path, scene="ShopFacade", n_train=45, n_test=2, h=8, w=12, semantic=False)
        kept = [n for i, n in enumerate(sorted(F.cambridge_names(45))) if i not in (35, 42)][::2]
        raw = np.stack([fake.c2w[f"train/rgb/{n}"] for n in kept])
    else:
        fake = F.make_7scenes(tmp_path)
        raw = fake.poses_c2w("train", 2)
        if dtype == "7Scenes_colmap":
            raw = F.invert(raw)  # the recipe averages the raw w2c matrices
    F.write_meta(fake.datadir, pose_avg=np.zeros((3, 4)) + np.eye(3, 4))  # an existing file is overwritten
    args = F.make_args(fake.datadir, dtype, "--save_pose_avg_stats", trainskip=2)
    with pytest.raises(ConfigError, match="run_nefes.py"):   # a separate job, not a side effect of loading
        load_scene(args)
    path = scene_mod.save_pose_avg_stats(args)
    fname = world_setup.pose_avg_filename(dtype)
    assert path == fake.datadir / fname
    np.testing.assert_allclose(np.loadtxt(fake.datadir / fname), frames.average_poses(raw), atol=1e-9)


def test_save_pose_avg_stats_reproduces_shipped_chess_colmap(shared_ref, tmp_path):
    """Spec §1.5: the shipped pose_avg_stats_colmap.txt = average of the raw w2c of the COLMAP training
    list with the per-sequence skip 4 (train sequences 01, 02, 04, 06; frames sorted)."""
    lst = shared_ref / "data" / "7Scenes_colmap_poses" / "chess" / "chess_train.txt"
    scene_dir = tmp_path / "chess"
    scene_dir.mkdir()
    shutil.copy(lst, scene_dir / "chess_train.txt")
    seqs = sorted({ln.split("/")[0] for ln in lst.read_text().splitlines() if ln.strip()})
    assert seqs == ["seq-01", "seq-02", "seq-04", "seq-06"]
    (scene_dir / "TrainSplit.txt").write_text("".join(f"sequence{int(s[4:])}\n" for s in seqs))
    for ln in lst.read_text().splitlines():  # empty pose files: the COLMAP reader only lists frames
        name = ln.split()[0]
        (scene_dir / name.split("/")[0]).mkdir(exist_ok=True)
        (scene_dir / name.replace(".color.png", ".pose.txt")).touch()
    args = F.make_args(scene_dir, "7Scenes_colmap", "--save_pose_avg_stats", trainskip=4)
    path = scene_mod.save_pose_avg_stats(args)
    ref = np.loadtxt(shared_ref / "data" / "7Scenes" / "chess" / "pose_avg_stats_colmap.txt")
    assert path == scene_dir / "pose_avg_stats_colmap.txt"
    assert np.abs(np.loadtxt(path) - ref).max() < 1e-8
    # skip 2 gives a different matrix: the test can fail
    assert np.abs(frames.average_poses(_colmap_w2c(lst, skip=2)) - ref).max() > 1e-6


def _colmap_w2c(lst, skip):
    rows = sorted(ln.split() for ln in lst.read_text().splitlines() if ln.strip())
    by_seq = {}
    for r in rows:
        by_seq.setdefault(r[0].split("/")[0], []).append(r)
    keep = [r for s in sorted(by_seq) for r in by_seq[s][::skip]]
    return np.stack([frames.colmap_to_w2c([float(x) for x in r[1:5]], [float(x) for x in r[5:8]]) for r in keep])


def test_meta_dir_keeps_the_scene_folder_untouched(tmp_path):
    fake = F.make_7scenes(tmp_path / "scene")
    before = sorted(p.name for p in fake.datadir.iterdir())
    meta = tmp_path / "out" / "meta"
    s1 = load_scene(F.make_args(fake.datadir, "7Scenes", "--meta_dir", str(meta)))
    assert sorted(p.name for p in fake.datadir.iterdir()) == before
    assert (meta / "pose_avg_stats.txt").is_file() and (meta / "world_setup.json").is_file()
    s2 = load_scene(F.make_args(fake.datadir, "7Scenes", "--meta_dir", str(meta)))
    assert s2.provenance["pose_avg"] == f"read from {meta / 'pose_avg_stats.txt'}"
    np.testing.assert_allclose(s2.test.poses, s1.test.poses, atol=1e-12)
    # files shipped in the scene folder still win over meta_dir
    A = F.random_c2w(1, seed=5, max_angle=90)[0]
    F.write_meta(fake.datadir, pose_avg=A, world=CHESS_WORLD)
    s3 = load_scene(F.make_args(fake.datadir, "7Scenes", "--meta_dir", str(meta)))
    np.testing.assert_allclose(s3.pose_avg, A, atol=1e-15)
