"""Sparse depth of training views: SIFT matches between neighbouring views, triangulated at the
known poses (this project; the original trains NeFeS from colour alone).

Two users:

* the automatic world setup of a scene without depth maps (:mod:`dataset_loaders.world_setup`) takes its
  far bound from the keypoints' depths, in metres, at the APR-frame poses;
* the trainer's ``sparse_depth_w`` pulls the rendered depth of keypoint rays towards them, in NeRF
  units at the NeRF-frame poses (docs/convergence.md, twelfth pass: a field trained on a few hundred
  small images of a street can fit every view with the wrong geometry).

A SIFT keypoint matched in two nearby views and triangulated with the two known poses gives its depth
to a fraction of a pixel's parallax, from the images at their full resolution.

Conventions: the poses are camera-to-world with OpenGL axes in any frame that is rigid up to one
scale (APR or NeRF), and depths come out in that frame's units as the camera's z-depth, which is
what the renderer's ``depth`` is (rays have camera-frame z = -1). The camera is :mod:`core.camera`'s
pinhole ``h x w`` with ``focal``; a full-size pixel index ``x`` lies at the coordinate
``(x + 0.5) * w / W`` (the training targets are the full image resized, so the stretch of a
non-integer resize is the same).

Outliers: a match is kept only if its triangulated point reprojects within ``max_reproj_px``
full-size pixels in both views, lies in front of both cameras, and is seen under at least
``min_angle_deg`` of parallax; a keypoint is kept only if ``min_views`` neighbours agree on its depth
(within ``max_spread``), which removes the repeated-texture matches that pass the two-view test.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core import camera

_logger = logging.getLogger(__name__)


@dataclass
class SparseDepth:
    """Triangulated keypoints of the training views."""
    view: np.ndarray     # (M,) int: training view index
    xy: np.ndarray       # (M, 2) float32: render-size image coordinates (0 = the left / top edge)
    depth: np.ndarray    # (M,) float32: camera z-depth, NeRF units

    def __len__(self) -> int:
        return len(self.view)

    def save(self, path: Path, poses: np.ndarray) -> None:
        """Write to ``path`` (.npz) with the poses it was triangulated at (the cache's key); atomic."""
        tmp = path.with_name(path.stem + ".tmp.npz")
        np.savez_compressed(tmp, view=self.view, xy=self.xy, depth=self.depth, poses=poses)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path, poses: np.ndarray) -> "SparseDepth | None":
        """The points saved at ``path`` if they were triangulated at ``poses``; None if not, or if the file
        is missing or unreadable."""
        try:
            with np.load(path) as z:
                if z["poses"].shape != poses.shape or not np.allclose(z["poses"], poses, atol=1e-5):
                    return None
                return cls(z["view"], z["xy"], z["depth"])
        except (OSError, ValueError, KeyError):
            return None


@dataclass
class TriangulationSettings:
    neighbours: int = 4           # nearest training cameras (by centre) matched with each view
    max_axis_angle_deg: float = 30.0
    n_features: int = 4000        # SIFT keypoints per image
    ratio: float = 0.8            # Lowe's ratio test
    max_reproj_px: float = 1.0    # full-size pixels
    min_angle_deg: float = 1.0    # parallax between the two rays
    min_views: int = 2            # neighbours that must agree on a keypoint's depth
    max_spread: float = 0.05      # their depths' (max - min) / median


def _camera_dirs(xy: np.ndarray, h: int, w: int, focal: float) -> np.ndarray:
    """(K, 2) render-size coordinates -> (K, 3) camera-frame ray directions (the camera model of
    :mod:`core.camera`: OpenGL axes, z = -1; ``center=0`` because ``xy`` already counts from the edge)."""
    return camera.camera_dirs(torch.from_numpy(xy), h, w, focal, center=0.0).numpy()


def _project(p_world: np.ndarray, c2w: np.ndarray, h: int, w: int, focal: float) -> np.ndarray:
    """(K, 3) NeRF-frame points -> (K, 2) render-size coordinates (:func:`models.camera.project`)."""
    x_cam = (p_world - c2w[:3, 3]) @ c2w[:3, :3]          # world -> camera: R^T (p - t)
    with np.errstate(divide="ignore", invalid="ignore"):
        return camera.project(torch.from_numpy(x_cam), h, w, focal, center=0.0).numpy()


def _neighbours(c2w: np.ndarray, k: int, max_axis_deg: float) -> list[list[int]]:
    centres, axes = c2w[:, :3, 3], -c2w[:, :3, 2]
    dist = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
    similar = axes @ axes.T > np.cos(np.radians(max_axis_deg))
    out = []
    for i in range(len(c2w)):
        cand = [j for j in np.argsort(dist[i]) if j != i and similar[i, j] and dist[i, j] > 1e-9]
        out.append(cand[:k])
    return out


def _features(path: Path, sift, h: int, w: int):
    import cv2
    gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if gray is None:
        raise FileNotFoundError(f"cannot read image {path}")
    kps, desc = sift.detectAndCompute(gray, None)
    H, W = gray.shape
    xy = np.array([kp.pt for kp in kps], dtype=np.float64).reshape(-1, 2)
    xy = (xy + 0.5) * np.array([w / W, h / H])           # full-size pixel index -> render-size coordinate
    return xy, desc, W / w


def _triangulate_pair(xy_i, xy_j, c2w_i, c2w_j, h, w, focal):
    """Midpoint triangulation of matched coordinates -> (points (K, 3), depth in i, depth in j, parallax deg)."""
    d_i = _camera_dirs(xy_i, h, w, focal) @ c2w_i[:3, :3].T
    d_j = _camera_dirs(xy_j, h, w, focal) @ c2w_j[:3, :3].T
    o_i, o_j = c2w_i[:3, 3], c2w_j[:3, 3]
    # minimise |o_i + s d_i - o_j - t d_j|^2 over (s, t): a 2x2 system per match
    b = o_j - o_i
    a11, a12, a22 = (d_i * d_i).sum(-1), -(d_i * d_j).sum(-1), (d_j * d_j).sum(-1)
    r1, r2 = (d_i * b).sum(-1), -(d_j * b).sum(-1)
    det = a11 * a22 - a12 * a12
    with np.errstate(divide="ignore", invalid="ignore"):
        s = (a22 * r1 - a12 * r2) / det
        t = (a11 * r2 - a12 * r1) / det
    p = 0.5 * (o_i + s[:, None] * d_i + o_j + t[:, None] * d_j)
    cos = (d_i * d_j).sum(-1) / (np.linalg.norm(d_i, axis=-1) * np.linalg.norm(d_j, axis=-1))
    return p, s, t, np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def triangulate(image_paths: list[Path], c2w_nerf: np.ndarray, h: int, w: int, focal: float,
                s: TriangulationSettings | None = None, progress: bool = True) -> SparseDepth:
    """Sparse depths of the views ``image_paths`` at NeRF-frame poses ``c2w_nerf`` (N, 3, 4), for the
    render camera ``h x w`` with ``focal`` (module docstring)."""
    import cv2
    from tqdm import tqdm
    s = s or TriangulationSettings()
    c2w = np.asarray(c2w_nerf, dtype=np.float64)
    sift = cv2.SIFT_create(nfeatures=s.n_features)
    feats = [_features(p, sift, h, w) for p in tqdm(image_paths, desc="SIFT keypoints", disable=not progress, leave=False)]
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    estimates: dict[tuple[int, int], list[float]] = {}   # (view, keypoint) -> depths from its neighbours
    pairs = sorted({(min(i, j), max(i, j)) for i, nb in enumerate(_neighbours(c2w, s.neighbours, s.max_axis_angle_deg))
                    for j in nb})
    for i, j in tqdm(pairs, desc="matching views", disable=not progress, leave=False):
        (xy_i, desc_i, px_i), (xy_j, desc_j, _) = feats[i], feats[j]
        if desc_i is None or desc_j is None or len(desc_i) < 2 or len(desc_j) < 2:
            continue
        m = [a for a, b in matcher.knnMatch(desc_i, desc_j, k=2) if a.distance < s.ratio * b.distance]
        if not m:
            continue
        qi = np.array([a.queryIdx for a in m])
        qj = np.array([a.trainIdx for a in m])
        p, d_i, d_j, angle = _triangulate_pair(xy_i[qi], xy_j[qj], c2w[i], c2w[j], h, w, focal)
        uv_i = _project(p, c2w[i], h, w, focal)
        uv_j = _project(p, c2w[j], h, w, focal)
        err = np.maximum(np.linalg.norm(uv_i - xy_i[qi], axis=-1), np.linalg.norm(uv_j - xy_j[qj], axis=-1)) * px_i
        ok = (d_i > 0) & (d_j > 0) & (angle >= s.min_angle_deg) & (err <= s.max_reproj_px)
        for k, dk in zip(qi[ok], d_i[ok]):
            estimates.setdefault((i, int(k)), []).append(float(dk))
        for k, dk in zip(qj[ok], d_j[ok]):
            estimates.setdefault((j, int(k)), []).append(float(dk))
    view, xy, depth = [], [], []
    for (i, k), ds in estimates.items():
        if len(ds) < s.min_views:
            continue
        med = float(np.median(ds))
        if (max(ds) - min(ds)) > s.max_spread * med:
            continue
        view.append(i)
        xy.append(feats[i][0][k])
        depth.append(med)
    out = SparseDepth(np.asarray(view, dtype=np.int64), np.asarray(xy, dtype=np.float32).reshape(-1, 2),
                      np.asarray(depth, dtype=np.float32))
    _logger.info("sparse depth: %d keypoints in %d of %d views (%d view pairs)", len(out),
                 len(np.unique(out.view)), len(c2w), len(pairs))
    return out
