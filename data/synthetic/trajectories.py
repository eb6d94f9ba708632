"""Hand-held-like camera paths (B-splines through random waypoints) and exposure random walks."""
from __future__ import annotations

import math

import numpy as np
import torch

from data.synthetic.constants import EXPOSURE_RANGE
from data.synthetic.render import Scene
from core import geometry


def bspline_curve(ctrl: np.ndarray, n: int) -> np.ndarray:
    """(K, D) control points (K >= 4) -> (n, D) points of the uniform cubic B-spline, evenly spaced in
    its parameter. The curve stays inside the convex hull of the control points."""
    K = len(ctrl)
    s = np.linspace(0.0, K - 3, n, endpoint=False) if n > 1 else np.zeros(1)
    seg = np.minimum(np.floor(s).astype(np.int64), K - 4)
    f = (s - seg)[:, None]
    w = [(1 - f) ** 3 / 6, (3 * f**3 - 6 * f**2 + 4) / 6, (-3 * f**3 + 3 * f**2 + 3 * f + 1) / 6, f**3 / 6]
    return sum(w[k] * ctrl[seg + k] for k in range(4))


def camera_rotation(yaw, pitch, roll) -> np.ndarray:
    """(n,) angles (rad) -> (n, 3, 3) camera-to-world rotations with OpenCV axes in a z-up world:
    optical axis at azimuth ``yaw`` and elevation ``pitch``, image x horizontal before ``roll``."""
    yaw, pitch, roll = (np.asarray(a, np.float64) for a in (yaw, pitch, roll))
    fwd = np.stack([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), np.sin(pitch)], -1)
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right, axis=-1, keepdims=True)
    down = np.cross(fwd, right)
    c, s = np.cos(roll)[:, None], np.sin(roll)[:, None]
    return np.stack([c * right + s * down, -s * right + c * down, fwd], -1)


def make_trajectory(scene: Scene, rng: np.random.Generator, n: int, region=None) -> np.ndarray:
    """A smooth hand-held-like path of ``n`` OpenCV camera-to-world poses (n, 4, 4).

    Positions: a B-spline through a random walk of waypoints inside ``region`` ((lo, hi) corners;
    default the scene's camera region) -> never leaves it except for the mm-level jitter. Viewing
    direction: B-splines through random yaw/pitch/roll waypoints, or, when ``scene.view`` has ``look_at``
    ((lo, hi) box), towards a B-spline through random targets in that box. Plus small per-frame jitter."""
    lo, hi = (np.asarray(c, np.float64) for c in (region or scene.cam_region))
    v = scene.view
    K = 3 + max(1, int(math.ceil(n / 20)))
    if scene.kind == "street":             # look at one side; walk on the half away from it
        side = float(rng.choice([-1.0, 1.0]))
        mid = lo[1] + 0.6 * (hi[1] - lo[1]) if side > 0 else lo[1] + 0.4 * (hi[1] - lo[1])
        lo, hi = lo.copy(), hi.copy()
        (hi if side > 0 else lo)[1] = mid
        yaw = side * math.pi / 2 + rng.uniform(-v["side_yaw"], v["side_yaw"], K)
        heading = float(rng.choice([0.0, math.pi]))
    else:
        yaw = rng.uniform(-math.pi, math.pi) + np.cumsum(rng.uniform(-v["yaw_step"], v["yaw_step"], K))
        heading = rng.uniform(-math.pi, math.pi)
    pts = [lo + (hi - lo) * rng.uniform(0, 1, 3)]
    for _ in range(K - 1):
        heading += rng.normal(0, 0.5 if scene.kind == "street" else 1.2)
        step = rng.uniform(*v["step"])
        q = pts[-1] + step * np.array([math.cos(heading), math.sin(heading), 0.0])
        q[2] = rng.uniform(lo[2], hi[2])
        out = (q < lo) | (q > hi)
        if out[0] or out[1]:               # bounce off the region border
            heading += math.pi
            q = 2 * np.clip(q, lo, hi) - q
        pts.append(np.clip(q, lo, hi))
    pos = bspline_curve(np.stack(pts), n)
    ang = bspline_curve(np.stack([yaw, rng.uniform(*v["pitch"], K), rng.uniform(-0.07, 0.07, K)], -1), n)
    if "look_at" in v:   # aim at a smooth path of targets inside a box (a 7-Scenes-like capture of one area)
        t_lo, t_hi = (np.asarray(c, np.float64) for c in v["look_at"])
        target = bspline_curve(t_lo + (t_hi - t_lo) * rng.uniform(0, 1, (K, 3)), n)
        d = target - pos
        ang[:, 0] = np.arctan2(d[:, 1], d[:, 0])
        ang[:, 1] = np.arctan2(d[:, 2], np.linalg.norm(d[:, :2], axis=1))
    R = camera_rotation(ang[:, 0], ang[:, 1], ang[:, 2])
    jit = geometry.so3_exp(torch.as_tensor(rng.normal(0, 0.003, (n, 3)))).numpy()
    c2w = np.tile(np.eye(4), (n, 1, 1))
    c2w[:, :3, :3] = R @ jit
    c2w[:, :3, 3] = pos + rng.normal(0, v["jitter_t"], (n, 3))
    return c2w


def exposure_walk(rng: np.random.Generator, n: int, lo: float = EXPOSURE_RANGE[0], hi: float = EXPOSURE_RANGE[1]):
    """(n,) smooth random walk of exposure gains in [lo, hi] (log-domain, mean-reverting, smoothed)."""
    x = math.log(rng.uniform(0.8, 1.25))
    steps = rng.normal(0, 0.07, n)
    out = np.empty(n)
    for i in range(n):
        x = min(max(x + steps[i] - 0.04 * x, math.log(lo)), math.log(hi))
        out[i] = x
    if n >= 3:
        out = np.convolve(np.pad(out, 1, mode="edge"), [0.25, 0.5, 0.25], mode="valid")
    return np.clip(np.exp(out), lo, hi)
