"""Coordinate frames: the only module that flips axes, re-centres or rescales poses.

Frames (spec §1.4)
------------------
* **dataset frame**: what the files on disk hold.
  - 7-Scenes ``frame-*.pose.txt`` and Cambridge ``poses/*.txt``: camera-to-world, OpenCV camera
    axes (x right, y down, z forward), metres.
  - COLMAP lists (``<scene>_{train,test}.txt``): world-to-camera ``(q, t)``, OpenCV axes.
* **APR frame**: where APRs regress poses, ground truth is evaluated and result files live.
  Camera-to-world with OpenGL camera axes (x right, y up, looking along -z), re-centred by the
  ``pose_avg_stats`` matrix A. A rigid transform of the metric world, so errors are metric.
  - OpenCV c2w P (7-Scenes dSLAM, Cambridge):   ``P_apr = M · A⁻¹ · P · M``
  - COLMAP w2c Q (7-Scenes_colmap):             ``P_apr = A⁻¹ · Q⁻¹ · M``
  with ``M = diag(1, -1, -1)``.
* **NeRF frame**: where NeFeS samples points. Same rotation as the APR frame, translation
  ``t_nerf = s2 · (s1 · t_apr + v)`` with ``world_setup.json`` = {pose_scale s1, move_all_cam_vec v,
  pose_scale2 s2}; near/far are ray bounds in this frame.

All poses are ``(..., 3, 4)`` arrays. The numpy functions work in float64.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from core import geometry
from core.errors import PoseFileError

#: Conjugation that swaps OpenCV <-> OpenGL camera axes (and, for c2w inputs, mirrors the world's y/z).
FLIP_YZ = np.diag([1.0, -1.0, -1.0])


# ----------------------------------------------------------------------------------------------
# world setup (APR frame <-> NeRF frame)
# ----------------------------------------------------------------------------------------------
@dataclass
class WorldSetup:
    """Contents of ``world_setup.json``: ray bounds and the APR -> NeRF translation map."""
    near: float = 0.0
    far: float = 1.0
    pose_scale: float = 1.0
    pose_scale2: float = 1.0
    move_all_cam_vec: list = field(default_factory=lambda: [0.0, 0.0, 0.0])

    @classmethod
    def from_json(cls, path: str | Path) -> "WorldSetup":
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise PoseFileError(f"{path}: file not found") from None
        except json.JSONDecodeError as e:
            raise PoseFileError(f"{path}: not valid JSON ({e})") from None
        missing = [k for k in ("near", "far", "pose_scale", "pose_scale2", "move_all_cam_vec") if k not in d]
        if missing:
            raise PoseFileError(f"{path}: missing key(s) {', '.join(missing)}")
        ws = cls(near=float(d["near"]), far=float(d["far"]), pose_scale=float(d["pose_scale"]),
                 pose_scale2=float(d["pose_scale2"]), move_all_cam_vec=[float(x) for x in d["move_all_cam_vec"]])
        ws.validate(path)
        return ws

    def validate(self, source="world setup"):
        vals = [self.near, self.far, self.pose_scale, self.pose_scale2, *self.move_all_cam_vec]
        if len(self.move_all_cam_vec) != 3 or not all(math.isfinite(v) for v in vals):
            raise PoseFileError(f"{source}: move_all_cam_vec must be 3 finite numbers and all values finite")
        if self.far <= self.near:
            raise PoseFileError(f"{source}: far ({self.far}) must be larger than near ({self.near})")
        if self.pose_scale <= 0 or self.pose_scale2 <= 0:
            raise PoseFileError(f"{source}: pose_scale and pose_scale2 must be positive")

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=4) + "\n")

    @property
    def scale(self) -> float:
        """Metres (APR frame) -> NeRF units factor s1·s2."""
        return self.pose_scale * self.pose_scale2

    @property
    def offset(self) -> np.ndarray:
        """Translation added in the NeRF frame: s2 · v."""
        return self.pose_scale2 * np.asarray(self.move_all_cam_vec, dtype=np.float64)


def apr_to_nerf(c2w_apr, ws: WorldSetup):
    """APR-frame camera-to-world (..., 3, 4) -> NeRF frame. numpy or torch; not in place;
    differentiable for torch inputs (the original's ``fix_coord_supp``)."""
    if isinstance(c2w_apr, torch.Tensor):
        off = torch.as_tensor(ws.offset, dtype=c2w_apr.dtype, device=c2w_apr.device)
        t = c2w_apr[..., :3, 3] * ws.scale + off
        return torch.cat([c2w_apr[..., :3, :3], t[..., None]], dim=-1)
    out = np.array(c2w_apr, dtype=np.float64, copy=True)
    out[..., :3, 3] = out[..., :3, 3] * ws.scale + ws.offset
    return out


def nerf_to_apr(c2w_nerf, ws: WorldSetup):
    """Inverse of :func:`apr_to_nerf`."""
    if isinstance(c2w_nerf, torch.Tensor):
        off = torch.as_tensor(ws.offset, dtype=c2w_nerf.dtype, device=c2w_nerf.device)
        t = (c2w_nerf[..., :3, 3] - off) / ws.scale
        return torch.cat([c2w_nerf[..., :3, :3], t[..., None]], dim=-1)
    out = np.array(c2w_nerf, dtype=np.float64, copy=True)
    out[..., :3, 3] = (out[..., :3, 3] - ws.offset) / ws.scale
    return out


# ----------------------------------------------------------------------------------------------
# pose averaging / centring (pose_avg_stats)
# ----------------------------------------------------------------------------------------------
def _normalize(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def average_poses(poses: np.ndarray) -> np.ndarray:
    """The original's ``average_poses``: (N, 3, 4) -> (3, 4) = [x y z centre].

    centre = mean position; z = normalised mean of column 2; y' = mean of column 1;
    x = normalise(y' × z); y = z × x.
    """
    poses = np.asarray(poses, dtype=np.float64)
    center = poses[:, :, 3].mean(0)
    z = _normalize(poses[:, :, 2].sum(0))
    y_ = poses[:, :, 1].sum(0)
    x = _normalize(np.cross(y_, z))
    y = np.cross(z, x)
    return np.stack([x, y, z, center], axis=1)


def _homog(p34: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :4] = p34
    return out


def center_poses(poses: np.ndarray, pose_avg: np.ndarray) -> np.ndarray:
    """Left-multiply each (N, 3, 4) pose by the inverse of the homogeneous ``pose_avg`` (3, 4)."""
    inv = np.linalg.inv(_homog(pose_avg))
    return np.einsum("ij,njk->nik", inv, _to_homog_batch(poses))[:, :3, :4]


def _to_homog_batch(poses: np.ndarray) -> np.ndarray:
    poses = np.asarray(poses, dtype=np.float64)
    out = np.tile(np.eye(4), (poses.shape[0], 1, 1))
    out[:, :3, :4] = poses[:, :3, :4]
    return out


def opencv_c2w_to_apr(c2w: np.ndarray, pose_avg: np.ndarray) -> np.ndarray:
    """7-Scenes dSLAM / Cambridge: OpenCV camera-to-world (N, 3, 4) -> APR frame, M·A⁻¹·P·M."""
    centred = center_poses(c2w, pose_avg)
    M = _homog(np.concatenate([FLIP_YZ, np.zeros((3, 1))], 1))
    return np.einsum("ij,njk,kl->nil", M, _to_homog_batch(centred), M)[:, :3, :4]


def colmap_w2c_to_apr(w2c: np.ndarray, pose_avg: np.ndarray) -> np.ndarray:
    """7-Scenes COLMAP: world-to-camera (N, 3, 4), OpenCV axes -> APR frame, A⁻¹·Q⁻¹·M.

    Only the camera axes are flipped (the world is not mirrored)."""
    w2c_gl = _to_homog_batch(w2c)
    w2c_gl[:, 1:3, :] *= -1.0  # M·Q
    c2w = np.linalg.inv(w2c_gl)[:, :3, :4]
    return center_poses(c2w, pose_avg)


def apr_to_opencv_c2w(c2w_apr: np.ndarray, pose_avg: np.ndarray) -> np.ndarray:
    """Inverse of :func:`opencv_c2w_to_apr`: APR frame -> OpenCV c2w in the dataset's world."""
    M = _homog(np.concatenate([FLIP_YZ, np.zeros((3, 1))], 1))
    p = np.einsum("ij,njk,kl->nil", M, _to_homog_batch(c2w_apr), M)
    return np.einsum("ij,njk->nik", _homog(pose_avg), p)[:, :3, :4]


def colmap_to_w2c(qwxyz, t) -> np.ndarray:
    """COLMAP pose(s) -> world-to-camera ``[R | t]`` (..., 3, 4) float64, OpenCV camera axes.

    Args:
        qwxyz: (..., 4) quaternion of the world-to-camera rotation, Hamilton, w first (normalised here).
        t: (..., 3) world-to-camera translation.
    """
    q = torch.as_tensor(np.asarray(qwxyz, dtype=np.float64))
    R = geometry.quat_to_rotmat(q).numpy()
    t = np.broadcast_to(np.asarray(t, dtype=np.float64), R.shape[:-2] + (3,))
    return np.concatenate([R, t[..., None]], axis=-1)
