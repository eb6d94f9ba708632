"""Frame conversions (dataset -> APR -> NeRF) and the fidelity check against the paper's GT files."""
import numpy as np
import pytest
import torch

from conftest import SCENES_7
from core import frames
from core import geometry as G
from dataset_loaders import poses as P


def _random_c2w(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    R = G.random_rotation(n, 180.0, generator=g).numpy()
    t = np.random.default_rng(seed).normal(size=(n, 3, 1))
    return np.concatenate([R, t], axis=2)


def test_average_pose_is_rigid_and_centring_moves_mean_to_origin():
    c2w = _random_c2w(50)
    A = frames.average_poses(c2w)
    assert np.allclose(A[:, :3].T @ A[:, :3], np.eye(3), atol=1e-12)
    centred = frames.center_poses(c2w, A)
    assert np.allclose(centred[:, :, 3].mean(0), 0.0, atol=1e-12)


def test_opencv_to_apr_roundtrip_and_axes():
    c2w = _random_c2w(20, seed=1)
    A = frames.average_poses(c2w)
    apr = frames.opencv_c2w_to_apr(c2w, A)
    assert np.allclose(frames.apr_to_opencv_c2w(apr, A), c2w, atol=1e-12)
    # distances between cameras are preserved (rigid map)
    d0 = np.linalg.norm(c2w[0, :, 3] - c2w[1, :, 3])
    assert np.linalg.norm(apr[0, :, 3] - apr[1, :, 3]) == pytest.approx(d0)
    # relative rotations between cameras are preserved in angle
    assert np.linalg.det(apr[:, :, :3]).min() > 0.999


def test_colmap_and_opencv_paths_agree_on_camera_axes():
    """A COLMAP w2c list and an OpenCV c2w list of the same cameras give the same viewing directions."""
    c2w = _random_c2w(10, seed=2)
    w2c = np.linalg.inv(np.concatenate([c2w, np.tile([[[0, 0, 0, 1.0]]], (10, 1, 1))], 1))[:, :3]
    identity = np.concatenate([np.eye(3), np.zeros((3, 1))], 1)
    via_colmap = frames.colmap_w2c_to_apr(w2c, identity)
    # colmap path: c2w · M (camera axes flipped only) -> optical axis (-z in OpenGL) = +z of OpenCV
    assert np.allclose(-via_colmap[:, :, 2], c2w[:, :, 2], atol=1e-12)
    assert np.allclose(via_colmap[:, :, 3], c2w[:, :, 3], atol=1e-12)


def test_apr_nerf_maps_are_inverse_and_differentiable():
    ws = frames.WorldSetup(near=0, far=2, pose_scale=0.5, pose_scale2=0.2, move_all_cam_vec=[0, 0, 1])
    c2w = _random_c2w(5, seed=3)
    nerf = frames.apr_to_nerf(c2w, ws)
    assert np.allclose(nerf[:, :, 3], 0.2 * (0.5 * c2w[:, :, 3] + np.array([0, 0, 1])))
    assert np.allclose(frames.nerf_to_apr(nerf, ws), c2w)
    t = torch.tensor(c2w, requires_grad=True)
    out = frames.apr_to_nerf(t, ws)
    out[..., 3].sum().backward()
    assert torch.allclose(t.grad[..., 3], torch.full((5, 3), 0.1, dtype=torch.float64))
    assert t.grad[..., :3].abs().sum() == 0  # not in place, rotation untouched


def test_pose_avg_stats_io_and_errors(tmp_path):
    A = frames.average_poses(_random_c2w(7, seed=4))
    P.save_pose_avg_stats(tmp_path / "pose_avg_stats.txt", A)
    assert np.allclose(P.load_pose_avg_stats(tmp_path / "pose_avg_stats.txt"), A)
    (tmp_path / "bad.txt").write_text("1 2 3\n4 5 6\n")
    with pytest.raises(P.PoseFileError, match="bad.txt.*3 rows of 4"):
        P.load_pose_avg_stats(tmp_path / "bad.txt")
    (tmp_path / "nan.txt").write_text("1 0 0 0\n0 nan 0 0\n0 0 1 0\n")
    with pytest.raises(P.PoseFileError, match="NaN"):
        P.load_pose_avg_stats(tmp_path / "nan.txt")
    with pytest.raises(P.PoseFileError, match="not found"):
        P.load_pose_avg_stats(tmp_path / "missing.txt")


def test_world_setup_json(tmp_path, shared_ref):
    ws = frames.WorldSetup.from_json(shared_ref / "data/Cambridge_world_setup/ShopFacade/world_setup.json")
    assert (ws.far, ws.pose_scale, ws.pose_scale2, ws.move_all_cam_vec) == (20.0, 0.3027, 0.32, [0.0, 0.0, 2.5])
    (tmp_path / "w.json").write_text('{"near": 0, "far": 2}')
    with pytest.raises(P.PoseFileError, match="missing key"):
        frames.WorldSetup.from_json(tmp_path / "w.json")


def _colmap_test_gt(ref, scene):
    lines = [l.split() for l in (ref / f"data/7Scenes_colmap_poses/{scene}/{scene}_test.txt").read_text().splitlines() if l.strip()]
    # loader order: test sequences in split order (ascending), frames ascending
    lines.sort(key=lambda l: (int(l[0][4:6]), int(l[0].split("frame-")[1][:6])))
    w2c = np.stack([frames.colmap_to_w2c([float(x) for x in l[1:5]], [float(x) for x in l[5:8]]) for l in lines])
    A = P.load_pose_avg_stats(ref / f"data/7Scenes/{scene}/pose_avg_stats_colmap.txt")
    return frames.colmap_w2c_to_apr(w2c, A).reshape(-1, 12)


@pytest.mark.parametrize("scene", SCENES_7)
def test_colmap_pipeline_reproduces_paper_gt(shared_ref, scene):
    ours = _colmap_test_gt(shared_ref, scene)
    gt = np.loadtxt(shared_ref / f"paper_result/DFNet_NeFeS50_7Scenes_colmap/{scene}/{scene}_test_gt.txt")
    assert ours.shape == gt.shape
    assert np.abs(ours - gt).max() < 1e-6


def test_colmap_to_w2c_single_batched_and_sign_invariant():
    g = torch.Generator().manual_seed(0)
    R = G.random_rotation(5, 170.0, generator=g).numpy()
    q = G.rotmat_to_quat(torch.as_tensor(R)).numpy()                   # (5, 4) w first
    t = np.arange(15.0).reshape(5, 3)
    batch = frames.colmap_to_w2c(q * 3.0, t)                          # quaternions are normalised
    assert batch.shape == (5, 3, 4) and np.allclose(batch[:, :, :3], R, atol=1e-12) and np.array_equal(batch[:, :, 3], t)
    assert np.allclose(frames.colmap_to_w2c(-q[2], t[2]), batch[2], atol=1e-12)      # q and -q: one rotation
    assert np.array_equal(frames.colmap_to_w2c(q, np.zeros(3))[:, :, 3], np.zeros((5, 3)))  # t broadcasts
