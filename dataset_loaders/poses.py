"""Pose files on disk: ``pose_avg_stats*.txt`` read / write, and the sanity check of poses read from files.

The frames themselves (dataset -> APR -> NeRF, ``WorldSetup``, ``apr_to_nerf``) live in
:mod:`core.frames`, where models and loaders can both import them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from core import geometry
from core.errors import PoseFileError

__all__ = ["PoseFileError", "check_poses", "load_pose_avg_stats", "save_pose_avg_stats"]


# ----------------------------------------------------------------------------------------------
# pose_avg_stats files
# ----------------------------------------------------------------------------------------------
def load_pose_avg_stats(path: str | Path) -> np.ndarray:
    """Read a ``pose_avg_stats*.txt`` file (3 rows × 4 numbers) -> (3, 4) float64."""
    path = Path(path)
    try:
        A = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except FileNotFoundError:
        raise PoseFileError(f"{path}: file not found") from None
    except ValueError as e:
        raise PoseFileError(f"{path}: not a numeric text matrix ({e})") from None
    if A.shape != (3, 4):
        raise PoseFileError(f"{path}: expected 3 rows of 4 numbers, got shape {A.shape}")
    if not np.all(np.isfinite(A)):
        raise PoseFileError(f"{path}: contains NaN or infinite values")
    return A


def save_pose_avg_stats(path: str | Path, pose_avg: np.ndarray) -> None:
    """Write (3, 4) with numpy's default text format, as the original does."""
    np.savetxt(path, np.asarray(pose_avg, dtype=np.float64).reshape(3, 4))


def check_poses(poses: np.ndarray, source: str) -> np.ndarray:
    """Raise :class:`PoseFileError` naming ``source`` for NaN/inf poses or non-rotation blocks."""
    poses = np.asarray(poses, dtype=np.float64)
    if not np.all(np.isfinite(poses)):
        raise PoseFileError(f"{source}: pose contains NaN or infinite values")
    i, err, _ = geometry.first_non_rotation(poses[..., :3, :3], proper=False)
    if i is not None:
        raise PoseFileError(f"{source}: rotation block is not orthonormal (max |RᵀR - I| = {err:.3g})")
    return poses
