"""Sparse depth of the training views (core/triangulation.py): SIFT matches triangulated at the known
poses agree with the generator's true depth; the automatic world setup takes its far bound from them,
and the trainer's ``sparse_depth_w`` uses them."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from data import synthetic as S
from core.triangulation import SparseDepth, TriangulationSettings, triangulate

OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0])


@pytest.fixture(scope="module")
def small_street(tmp_path_factory) -> Path:
    """A street of 8 training frames at 320x180 (large enough for SIFT), generated once (~2 s)."""
    out = tmp_path_factory.mktemp("sparse") / "street"
    S.generate("street", out, seed=7, width=320, height=180, n_train_seq=1, frames_per_seq=8, n_test_seq=1,
               test_frames_per_seq=1, progress=False, workers=1)
    return out


def _world_views(street: Path):
    """(image paths, (N, 3, 4) world-frame c2w with OpenGL axes, focal, (H, W), generator scene)."""
    info = json.loads((street / "synthetic_info.json").read_text())
    focal = float(info["intrinsics"]["focal_px"])
    H, W = int(info["image_size"]["height"]), int(info["image_size"]["width"])
    paths = sorted((street / "train" / "rgb").glob("*.png"))
    c2w = []
    for p in paths:
        m = np.loadtxt(street / "train" / "poses" / (p.stem + ".txt"))
        c2w.append(np.concatenate([m[:3, :3] @ OPENCV_TO_OPENGL, m[:3, 3:]], 1))
    return paths, np.stack(c2w), focal, (H, W), S.build_scene("street", int(info["seed"]), focal)


def test_triangulated_depths_are_the_true_depths(small_street):
    from data.synthetic.raycast import Intrinsics
    paths, c2w, focal, (H, W), scene = _world_views(small_street)
    sd = triangulate(paths, c2w, H, W, focal, progress=False)
    assert len(sd) >= 100 and len(np.unique(sd.view)) >= 6
    errs = []
    for i in np.unique(sd.view):
        m = c2w[i]
        opencv = np.concatenate([np.concatenate([m[:3, :3] @ OPENCV_TO_OPENGL, m[:3, 3:]], 1), [[0, 0, 0, 1]]])
        true = scene.render(opencv, Intrinsics(W, H, focal), supersample=False).depth
        xy = sd.xy[sd.view == i]
        d_true = true[xy[:, 1].astype(int), xy[:, 0].astype(int)]     # the pixel the keypoint lies in
        errs.append(np.abs(sd.depth[sd.view == i] - d_true) / d_true)
    err = np.concatenate(errs)
    err = err[np.isfinite(err)]
    assert np.median(err) < 0.03, np.median(err)
    assert (err > 0.2).mean() < 0.05


def test_a_wrong_pose_leaves_its_view_without_points(small_street):
    """Matches that do not fit the known poses are dropped: a view moved sideways by a metre keeps
    almost nothing, and the other views keep their points."""
    paths, c2w, focal, (H, W), _ = _world_views(small_street)
    good = triangulate(paths, c2w, H, W, focal, progress=False)
    bad_pose = c2w.copy()
    bad_pose[3, :3, 3] += bad_pose[3, :3, 0] * 1.0                    # camera x axis, 1 m
    bad = triangulate(paths, bad_pose, H, W, focal, progress=False)
    assert (bad.view == 3).sum() <= 0.1 * max(1, (good.view == 3).sum())
    assert (bad.view != 3).sum() >= 0.5 * (good.view != 3).sum()


def test_settings_trade_points_for_agreement(small_street):
    paths, c2w, focal, (H, W), _ = _world_views(small_street)
    loose = triangulate(paths, c2w, H, W, focal, TriangulationSettings(min_views=1), progress=False)
    strict = triangulate(paths, c2w, H, W, focal, TriangulationSettings(min_views=3), progress=False)
    default = triangulate(paths, c2w, H, W, focal, progress=False)
    assert len(loose) > len(default) > len(strict)


def _true_depths(street: Path) -> np.ndarray:
    """Every finite true depth (metres) of the training views, from the generator."""
    from data.synthetic.raycast import Intrinsics
    paths, c2w, focal, (H, W), scene = _world_views(street)
    out = []
    for m in c2w:
        opencv = np.concatenate([np.concatenate([m[:3, :3] @ OPENCV_TO_OPENGL, m[:3, 3:]], 1), [[0, 0, 0, 1]]])
        d = scene.render(opencv, Intrinsics(W, H, focal), supersample=False).depth.ravel()
        out.append(d[np.isfinite(d)])
    return np.concatenate(out)


def test_auto_far_bound_without_depth_maps_comes_from_the_keypoints(small_street, tmp_path):
    """A Cambridge-layout scene has no depth maps: the automatic far bound is twice the 99th percentile
    of the triangulated keypoints' depths. On this short walk it covers the façades the views see (the
    camera spread's bound, 3x a 2 m walk, would cut them off) without reaching far beyond them."""
    from argparse import Namespace
    from dataset_loaders import load_scene, world_setup
    scene = load_scene(Namespace(datadir=str(small_street), dataset_type="Cambridge", meta_dir=str(tmp_path),
                                 df=2, trainskip=1, testskip=1), preload=False)
    assert "SIFT keypoints" in scene.provenance["world_setup"]
    far_m = scene.world_setup.far / (scene.world_setup.pose_scale * scene.world_setup.pose_scale2)
    true = _true_depths(small_street)
    assert (true < far_m).mean() > 0.99
    assert far_m < 3 * np.percentile(true, 99)
    by_cameras, _ = world_setup.far_from_cameras(scene.train.poses)
    assert (true < by_cameras).mean() < 0.5
    assert json.loads((tmp_path / "world_setup.json").read_text())["pose_scale2"] == pytest.approx(2.0 / far_m)


def test_cache_roundtrip_is_keyed_by_the_poses(tmp_path):
    sd = SparseDepth(np.array([0, 2]), np.array([[1.5, 2.5], [3, 4]], np.float32), np.array([1.0, 2.0], np.float32))
    poses = np.eye(4)[None, :3].repeat(3, 0)
    sd.save(tmp_path / "s.npz", poses)
    back = SparseDepth.load(tmp_path / "s.npz", poses)
    assert np.array_equal(back.view, sd.view) and np.array_equal(back.xy, sd.xy) and np.array_equal(back.depth, sd.depth)
    moved = poses.copy()
    moved[1, 0, 3] += 0.1
    assert SparseDepth.load(tmp_path / "s.npz", moved) is None          # other poses: triangulate again
    assert SparseDepth.load(tmp_path / "missing.npz", poses) is None
    (tmp_path / "bad.npz").write_text("not a zip")
    assert SparseDepth.load(tmp_path / "bad.npz", poses) is None


def test_training_with_sparse_depth_logs_the_term_and_caches_the_points(tmp_path, small_street):
    """A tiny stage-1 run on the street (Cambridge layout) with ``sparse_depth_w``: the points are
    triangulated once per experiment folder (a resumed run reads them back), the depth term is logged,
    and it falls over a few epochs."""
    import run_nefes
    from conftest import TINY_FIELD
    meta = tmp_path / "meta"
    meta.mkdir()      # far = 2 NeRF units = 20 m (the automatic bound, 3x this short walk's spread, ends before the façades)
    (meta / "world_setup.json").write_text(json.dumps(
        {"near": 0.0, "far": 2.0, "pose_scale": 1.0, "pose_scale2": 0.1, "move_all_cam_vec": [0.0, 0.0, 10.0]}))
    args = ["--datadir", str(small_street), "--dataset_type", "Cambridge", "--meta_dir", str(meta),
            "--basedir", str(tmp_path), "--expname", "sd", "--df", "2", "--tinyscale", "1", "--testskip", "1",
            "--strict_config", *TINY_FIELD, "--N_samples", "32", "--N_importance", "16", "--stage1_color_only", "--i_weights", "4", "--i_testset", "100",
            "--sparse_depth_w", "0.5", "--sparse_depth_rays", "32"]
    assert run_nefes.main(args + ["--epochs", "6"]) == 0
    cache = tmp_path / "sd" / "sparse_depth.npz"
    assert cache.is_file()
    log = [json.loads(line) for line in (tmp_path / "sd" / "train_log.jsonl").read_text().splitlines()]
    terms = [r["sparse_depth"] for r in log if "sparse_depth" in r]
    assert len(terms) == 6 and terms[-1] < terms[0]
    stamp = cache.stat().st_mtime_ns
    assert run_nefes.main(args + ["--epochs", "7"]) == 0               # resumes: the cache is reused
    assert cache.stat().st_mtime_ns == stamp


def test_an_undecodable_training_image_is_a_dataset_error(small_street, tmp_path):
    from dataset_loaders import DatasetError, world_setup
    paths, c2w, focal, (H, W), _ = _world_views(small_street)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="broken.png"):
        world_setup.far_from_keypoints([bad, *paths[1:]], c2w, (H, W, focal))
