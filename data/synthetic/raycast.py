"""Analytic primitives (boxes, vertical cylinders, spheres), the pinhole camera and vectorised ray casting.

Arrays are structure-of-arrays: points and directions are (3, n) float32.

* ``intersect(origin (3,) | (3, n), dirs (3, n)) -> t (n,)``: nearest hit distance (t > HIT_EPS), inf = miss.
* ``surface(points (3, n)) -> normal (3, n) (visible side), u (n,), v (n,) metres, face (n,)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from data.synthetic.constants import HIT_EPS, KINDS, REF_CAMERA, SyntheticError


def _slab(o, d, half, t_near, t_far):
    """Update running entry/exit distances with the slab |o + t d| <= half along one axis."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.float32(1.0) / d
        t1 = (-half - o) * inv
        t2 = (half - o) * inv
    lo, hi = np.fmin(t1, t2), np.fmax(t1, t2)
    if t_near is None:
        return lo, hi
    return np.fmax(t_near, lo, out=t_near), np.fmin(t_far, hi, out=t_far)


class Box:
    """Box of full ``size`` (x, y, z) centred at ``center``, rotated by ``yaw`` (rad) about z.

    Faces: 0 -x, 1 +x, 2 -y, 3 +y, 4 -z, 5 +z (local frame). ``inward``: seen from inside (a room or an
    enclosure), the hit is the exit point and normals point inwards. Face coordinates (u, v) in metres:
    on side faces u runs to the viewer's right and v up; on -z/+z faces u = x, v = y (local).
    """
    n_faces = 6

    def __init__(self, center, size, mats, yaw=0.0, inward=False, offs=None, transient=False):
        self.c = np.asarray(center, np.float64)
        self.half = np.asarray(size, np.float64) / 2
        self.yaw, self.inward, self.transient = float(yaw), bool(inward), bool(transient)
        self.cos, self.sin = math.cos(self.yaw), math.sin(self.yaw)
        self.mats = np.broadcast_to(np.asarray(mats, np.int64), (6,)).copy()
        self.offs = np.zeros((6, 2), np.float32) if offs is None else np.asarray(offs, np.float32).reshape(6, 2)

    def _rot(self):
        return np.array([[self.cos, -self.sin, 0], [self.sin, self.cos, 0], [0, 0, 1]])

    def _local(self, x, y):
        """World-aligned offsets -> box frame (rotation by -yaw about z)."""
        if self.yaw == 0.0:
            return x, y
        return self.cos * x + self.sin * y, -self.sin * x + self.cos * y

    def corners(self):
        s = np.array([[i, j, k] for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)], np.float64) * self.half
        return s @ self._rot().T + self.c

    def intersect(self, o, d):
        c = self.c.astype(np.float32)
        ox, oy = self._local(o[0] - c[0], o[1] - c[1])
        dx, dy = self._local(d[0], d[1])
        half = self.half.astype(np.float32)
        tn, tf = _slab(ox, dx, half[0], None, None)
        tn, tf = _slab(oy, dy, half[1], tn, tf)
        tn, tf = _slab(o[2] - c[2], d[2], half[2], tn, tf)
        t = tf if self.inward else tn
        ok = (tf >= tn) & (t > HIT_EPS)
        return np.where(ok, t, np.float32(np.inf))

    def _visible_sign(self, face):
        return np.where(face % 2 == 1, 1.0, -1.0) * (-1.0 if self.inward else 1.0)

    def surface(self, p):
        c = self.c.astype(np.float32)
        x, y = self._local(p[0] - c[0], p[1] - c[1])
        z = p[2] - c[2]
        hx, hy, hz = self.half.astype(np.float32)
        ax, ay, az = np.abs(x) / hx, np.abs(y) / hy, np.abs(z) / hz
        axis = np.where((ax >= ay) & (ax >= az), 0, np.where(ay >= az, 1, 2))
        coord = np.where(axis == 0, x, np.where(axis == 1, y, z))
        face = 2 * axis + (coord > 0)
        s = self._visible_sign(face).astype(np.float32)
        u = np.where(axis == 0, s * y + hy, np.where(axis == 1, -s * x + hx, x + hx))
        v = np.where(axis == 2, y + hy, z + hz)
        nx, ny, nz = s * (axis == 0), s * (axis == 1), s * (axis == 2)
        if self.yaw != 0.0:
            nx, ny = self.cos * nx - self.sin * ny, self.sin * nx + self.cos * ny
        return np.stack([nx, ny, nz]).astype(np.float32), u, v, face

    def face_size(self, face):
        """(size_v, size_u) in metres of a face's (u, v) rectangle."""
        hx, hy, hz = self.half * 2
        return {0: (hz, hy), 1: (hz, hy), 2: (hz, hx), 3: (hz, hx), 4: (hy, hx), 5: (hy, hx)}[face]

    def face_points(self, face, u, v):
        """World points (n, 3) and the visible normal (3,) of face coordinates (u, v) (inverse of surface)."""
        axis, s = face // 2, float(self._visible_sign(np.int64(face)))
        hx, hy, hz = self.half
        side = self.half[axis] * (1 if face % 2 else -1)
        if axis == 0:
            pl = np.stack([np.full_like(u, side), s * (u - hy), v - hz], -1)
        elif axis == 1:
            pl = np.stack([-s * (u - hx), np.full_like(u, side), v - hz], -1)
        else:
            pl = np.stack([u - hx, v - hy, np.full_like(u, side)], -1)
        nl = np.zeros(3)
        nl[axis] = s
        R = self._rot()
        return pl @ R.T + self.c, R @ nl


class Cylinder:
    """Vertical cylinder (axis along z). Faces: 0 side, 1 bottom cap, 2 top cap. ``inward``: an enclosure.
    Side u = azimuth * radius (to the viewer's right from outside), v = z - z0; caps u, v = x, y."""
    n_faces = 3

    def __init__(self, center_xy, radius, z0, z1, mats, inward=False, offs=None, transient=False):
        self.cx, self.cy = float(center_xy[0]), float(center_xy[1])
        self.r, self.z0, self.z1 = float(radius), float(z0), float(z1)
        self.inward, self.transient = bool(inward), bool(transient)
        self.mats = np.broadcast_to(np.asarray(mats, np.int64), (3,)).copy()
        self.offs = np.zeros((3, 2), np.float32) if offs is None else np.asarray(offs, np.float32).reshape(3, 2)

    def corners(self):
        return np.array([[self.cx + i * self.r, self.cy + j * self.r, z]
                         for i in (-1, 1) for j in (-1, 1) for z in (self.z0, self.z1)])

    def intersect(self, o, d):
        ox, oy, oz = o[0] - np.float32(self.cx), o[1] - np.float32(self.cy), o[2]
        dx, dy, dz = d
        r2 = np.float32(self.r * self.r)
        with np.errstate(divide="ignore", invalid="ignore"):
            a = dx * dx + dy * dy
            b = ox * dx + oy * dy
            disc = b * b - a * (ox * ox + oy * oy - r2)
            sq = np.sqrt(disc)
            t = ((-b + sq) if self.inward else (-b - sq)) / a
            zs = oz + t * dz
            t = np.where((zs >= self.z0) & (zs <= self.z1) & (t > HIT_EPS), t, np.float32(np.inf))
            for zc in (self.z0, self.z1):
                tc = (np.float32(zc) - oz) / dz
                xc, yc = ox + tc * dx, oy + tc * dy
                t = np.where((tc > HIT_EPS) & (xc * xc + yc * yc <= r2) & (tc < t), tc, t)
        return t

    def surface(self, p):
        x, y, z = p[0] - np.float32(self.cx), p[1] - np.float32(self.cy), p[2]
        rho = np.sqrt(x * x + y * y)
        d_side, d_bot, d_top = np.abs(rho - self.r), np.abs(z - self.z0), np.abs(z - self.z1)
        face = np.where((d_side <= d_bot) & (d_side <= d_top), 0, np.where(d_bot <= d_top, 1, 2))
        sgn = np.float32(-1.0 if self.inward else 1.0)
        side = face == 0
        inv = sgn / np.maximum(rho, 1e-9)
        n = np.stack([np.where(side, x * inv, 0), np.where(side, y * inv, 0),
                      np.where(side, 0, np.where(face == 1, -sgn, sgn))]).astype(np.float32)
        az = np.arctan2(y, x) + np.float32(np.pi)
        if self.inward:
            az = np.float32(2 * np.pi) - az
        u = np.where(side, az * self.r, x + self.r)
        v = np.where(side, z - self.z0, y + self.r)
        return n, u, v, face


class Sphere:
    """Sphere; one face; u = (azimuth + pi) r, v = (elevation + pi/2) r."""
    n_faces = 1
    inward = False

    def __init__(self, center, radius, mat, offs=None, transient=False):
        self.c, self.r, self.transient = np.asarray(center, np.float64), float(radius), bool(transient)
        self.mats = np.array([int(mat)], np.int64)
        self.offs = np.zeros((1, 2), np.float32) if offs is None else np.asarray(offs, np.float32).reshape(1, 2)

    def corners(self):
        return np.array([self.c + self.r * np.array([i, j, k]) for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)])

    def intersect(self, o, d):
        c = self.c.astype(np.float32)
        ox, oy, oz = o[0] - c[0], o[1] - c[1], o[2] - c[2]
        a = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
        b = ox * d[0] + oy * d[1] + oz * d[2]
        disc = b * b - a * (ox * ox + oy * oy + oz * oz - np.float32(self.r * self.r))
        with np.errstate(invalid="ignore"):
            t = (-b - np.sqrt(disc)) / a
        return np.where(t > HIT_EPS, t, np.float32(np.inf))

    def surface(self, p):
        q = (p - self.c.astype(np.float32)[:, None]) / np.float32(self.r)
        u = (np.arctan2(q[1], q[0]) + np.float32(np.pi)) * self.r
        v = (np.arcsin(np.clip(q[2], -1, 1)) + np.float32(np.pi / 2)) * self.r
        return q, u, v, np.zeros(p.shape[1], np.int64)


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole camera at the stored image size: focal in pixels, principal point (W/2, H/2)."""
    width: int
    height: int
    focal: float


def default_intrinsics(kind: str, width: int | None = None, height: int | None = None) -> Intrinsics:
    """The loaders' hard-coded focal scaled to the width (585 @ 640 px for room, 744 @ 854 px for street)."""
    if kind not in KINDS:
        raise SyntheticError(f"unknown scene kind {kind!r} (choose from {', '.join(KINDS)})")
    f_ref, w_ref, (w0, h0) = REF_CAMERA[kind]
    if width is None and height is None:
        width, height = w0, h0
    elif width is None:
        width = int(round(height * w0 / h0))
    elif height is None:
        height = int(round(width * h0 / w0))
    if width < 8 or height < 8 or width > 8192 or height > 8192:
        raise SyntheticError(f"image size {width}x{height} out of range (8..8192 pixels per side)")
    return Intrinsics(int(width), int(height), f_ref * width / w_ref)


def pixel_rays(c2w: np.ndarray, intr: Intrinsics, rows=None, cols=None) -> np.ndarray:
    """World ray directions (3, n) float32 with camera-z component 1 (so the ray parameter is the
    z-depth) for pixel ``rows``/``cols`` (float arrays; default: every pixel, row-major).
    c2w: (3|4, 4) OpenCV camera-to-world."""
    if rows is None:
        rows = np.repeat(np.arange(intr.height, dtype=np.float32), intr.width)
        cols = np.tile(np.arange(intr.width, dtype=np.float32), intr.height)
    R = np.asarray(c2w, np.float32)[:3, :3]
    x = (cols - np.float32(intr.width / 2)) / np.float32(intr.focal)
    y = (rows - np.float32(intr.height / 2)) / np.float32(intr.focal)
    return np.stack([R[i, 0] * x + R[i, 1] * y + R[i, 2] for i in range(3)])


def _screen_rect(prim, c2w, intr):
    """Pixel rectangle (r0, r1, c0, c1) inclusive that can see ``prim``; 'full' or None (invisible)."""
    if prim.inward:
        return "full"
    corners = getattr(prim, "_corners", None)
    if corners is None:
        corners = prim._corners = prim.corners()
    pc = (corners - c2w[:3, 3]) @ c2w[:3, :3]
    z = pc[:, 2]
    if (z <= 1e-3).all():
        return None
    if (z <= 1e-3).any():
        return "full"
    u = pc[:, 0] / z * intr.focal + intr.width / 2
    v = pc[:, 1] / z * intr.focal + intr.height / 2
    c0, c1 = int(math.floor(u.min())) - 1, int(math.ceil(u.max())) + 1
    r0, r1 = int(math.floor(v.min())) - 1, int(math.ceil(v.max())) + 1
    if c1 < 0 or r1 < 0 or c0 >= intr.width or r0 >= intr.height:
        return None
    return max(r0, 0), min(r1, intr.height - 1), max(c0, 0), min(c1, intr.width - 1)


def cast(prims, origin, dirs, t_max=None, cull=None):
    """Nearest hit of the rays ``origin + t * dirs`` (t > 1e-4) among ``prims``.

    Args:
        origin: (3,) or (3, n) world points (metres); dirs: (3, n) float32 (need not be unit).
        t_max: optional scalar or (n,): hits at or beyond it are ignored (shadow rays).
        cull: optional (rows (n,), cols (n,), c2w, intr) for camera rays sorted by row: each primitive
            is only tested against the rays inside its projected bounding rectangle.
    Returns: t (n,) float32 (inf, or t_max, where nothing is hit), primitive index (n,) int16 (-1: none).
    """
    n = dirs.shape[1]
    t_best = np.full(n, np.inf, np.float32)
    if t_max is not None:
        t_best[:] = t_max
    pid = np.full(n, -1, np.int16)
    origin = np.asarray(origin, np.float32)
    per_ray_origin = origin.ndim == 2
    for k, prim in enumerate(prims):
        if cull is None:
            sel = None
        else:
            rows, cols, c2w, intr = cull
            rect = _screen_rect(prim, c2w, intr)
            if rect is None:
                continue
            sel = None
            if rect != "full":
                lo, hi = np.searchsorted(rows, [rect[0] - 0.5, rect[1] + 0.5])
                sel = lo + np.flatnonzero((cols[lo:hi] >= rect[2] - 0.5) & (cols[lo:hi] <= rect[3] + 0.5))
                if len(sel) == 0:
                    continue
        if sel is None:
            t = prim.intersect(origin, dirs)
            closer = t < t_best
            t_best[closer], pid[closer] = t[closer], k
        else:
            o = origin[:, sel] if per_ray_origin else origin
            t = prim.intersect(o, dirs[:, sel])
            closer = t < t_best[sel]
            idx = sel[closer]
            t_best[idx], pid[idx] = t[closer], k
    return t_best, pid
