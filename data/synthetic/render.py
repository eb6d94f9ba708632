"""The scene (primitives, materials, lights) and the renderer: shading, edge supersampling, exposure,
gamma, sensor noise, depth and transient masks."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from data.synthetic.atlas import TextureAtlas
from data.synthetic.raycast import Intrinsics, cast, pixel_rays


@dataclass
class PointLight:
    """A point light: world position (m), linear RGB colour, power (irradiance scale)."""
    pos: tuple
    color: tuple
    power: float
    radius: float = 2.0      # irradiance falls off as power / (1 + (d / radius)^2)


@dataclass
class Frame:
    """One rendered view: rgb (H, W, 3) uint8, depth_mm (H, W) uint16 (65535 = no hit),
    mask (H, W) uint8 (255 static, 0 transient), depth (H, W) float32 z-depth in metres (inf = no hit)."""
    rgb: np.ndarray
    depth_mm: np.ndarray
    mask: np.ndarray
    depth: np.ndarray


@dataclass
class Scene:
    """Static primitives + materials + lights, plus what trajectories need.

    ``cam_region``: (lo, hi) corners (m) of the box camera centres stay in. ``view``: trajectory
    parameters: ``pitch`` (min, max) rad, ``step`` (min, max) waypoint spacing (m), ``jitter_t`` (m),
    and ``yaw_step`` (room: yaw random-walk step, rad) or ``side_yaw`` (street: spread around facing a
    facade, rad). ``actors``: transient movers (see :meth:`transients_at`). ``bounds``: scene box (m).
    """
    kind: str
    prims: list
    atlas: TextureAtlas
    mat_tex: np.ndarray          # (M,) texture id per material
    mat_emit: np.ndarray         # (M,) > 0: unlit, radiance = albedo * emit
    mat_detail: np.ndarray       # (M,) amplitude of the shared fine-grain detail map
    detail: np.ndarray           # (h, w) float32 tileable grain, mean 1
    detail_period: float         # metres covered by ``detail``
    lights: list
    ambient: np.ndarray          # (3,)
    sun_dir: np.ndarray | None = None
    sun_color: np.ndarray | None = None
    cam_region: tuple = ((0, 0, 0), (1, 1, 1))
    view: dict = field(default_factory=dict)
    actors: list = field(default_factory=list)
    bounds: tuple = ((0, 0, 0), (1, 1, 1))

    # ---- lighting (points p and normals n are (3, m)) ----------------------------------------
    def direct_terms(self, p, n):
        """Unshadowed direct irradiance per light, each (3, m) float32, and the ray (3, m) to the light
        with the distance at which the light is reached (1 for point lights, large for the sun)."""
        out = []
        for L in self.lights:
            lx, ly, lz = (np.float32(c) - q for c, q in zip(L.pos, p))
            d2 = lx * lx + ly * ly + lz * lz
            ndl = np.maximum((n[0] * lx + n[1] * ly + n[2] * lz) / np.sqrt(np.maximum(d2, 1e-9)), 0)
            e = ndl * np.float32(L.power) / (1 + d2 / np.float32(L.radius**2))
            out.append((np.asarray(L.color, np.float32)[:, None] * e, np.stack([lx, ly, lz]), 1.0))
        if self.sun_dir is not None:
            s = self.sun_dir.astype(np.float32)
            ndl = np.maximum(n[0] * s[0] + n[1] * s[1] + n[2] * s[2], 0)
            out.append((self.sun_color.astype(np.float32)[:, None] * ndl, np.broadcast_to(s[:, None], p.shape), 1e4))
        return out

    def ambient_term(self, n):
        return self.ambient.astype(np.float32)[:, None] * (0.8 + 0.2 * n[2])

    def irradiance(self, p, n):
        e = self.ambient_term(n)
        for term, _, _ in self.direct_terms(p, n):
            e += term
        return e

    # ---- shading ------------------------------------------------------------------------------
    def shade(self, prims, origin, dirs, t, pid, focal, fp_scale=1.0):
        """Linear radiance (3, n), transient flag (n,) and a surface key (n,) (primitive*8 + face, -1 for
        no hit) of camera-ray hits. dirs (3, n) have camera-z component 1, so t is the z-depth."""
        n = len(t)
        rad = np.zeros((3, n), np.float32)
        trans = np.zeros(n, bool)
        key = np.full(n, -1, np.int64)
        hit = np.flatnonzero(pid >= 0)
        if len(hit) == 0:
            return rad, trans, key
        ph = pid[hit]
        order = np.argsort(ph, kind="stable")
        hit, ph = hit[order], ph[order]
        th, d = t[hit], dirs[:, hit]
        p = origin.astype(np.float32)[:, None] + th * d
        nrm = np.empty_like(p)
        u, v = np.empty(len(hit), np.float32), np.empty(len(hit), np.float32)
        mat, fkey = np.empty(len(hit), np.int64), np.empty(len(hit), np.int64)
        starts = np.flatnonzero(np.diff(ph, prepend=-2))
        for s, e in zip(starts, np.append(starts[1:], len(ph))):
            k = int(ph[s])
            prim = prims[k]
            nn, uu, vv, face = prim.surface(p[:, s:e])
            nrm[:, s:e], mat[s:e], fkey[s:e] = nn, prim.mats[face], k * 8 + face
            u[s:e], v[s:e] = uu + prim.offs[face, 0], vv + prim.offs[face, 1]
            if prim.transient:
                trans[hit[s:e]] = True
        key[hit] = fkey
        cosi = -(nrm[0] * d[0] + nrm[1] * d[1] + nrm[2] * d[2]) / np.sqrt(d[0] ** 2 + d[1] ** 2 + d[2] ** 2)
        nrm *= np.where(cosi < 0, np.float32(-1), np.float32(1))
        footprint = th * np.float32(fp_scale / focal) / np.maximum(np.abs(cosi), np.float32(0.2))
        albedo = self.atlas.sample(self.mat_tex[mat], u, v, footprint)
        albedo *= self._detail(self.mat_detail[mat], u, v, footprint)
        emit = self.mat_emit[mat]
        lit = emit <= 0
        out = albedo * emit
        if lit.all():
            out = albedo * self.irradiance(p, nrm)
        elif lit.any():
            li = np.flatnonzero(lit)
            out[:, li] = albedo[:, li] * self.irradiance(p[:, li], nrm[:, li])
        rad[:, hit] = out
        return rad, trans, key

    def _detail(self, amp, u, v, footprint):
        """Multiplicative fine grain (n,), faded out once a pixel covers several grain texels."""
        h, w = self.detail.shape
        tpm = w / self.detail_period
        fade = np.clip(2.0 - footprint * np.float32(tpm / 2), 0, 1) * amp
        x, y = u * np.float32(tpm) - 0.5, v * np.float32(tpm) - 0.5
        x0, y0 = np.floor(x), np.floor(y)
        fx, fy = x - x0, y - y0
        ix, iy = x0.astype(np.int64) % w, y0.astype(np.int64) % h
        ix1, iy1 = (ix + 1) % w, (iy + 1) % h
        g = self.detail.ravel()
        a = np.take(g, iy * w + ix)
        a += (np.take(g, iy * w + ix1) - a) * fx
        b = np.take(g, iy1 * w + ix)
        b += (np.take(g, iy1 * w + ix1) - b) * fx
        a += (b - a) * fy
        return 1 + fade * (a - 1)

    def cast(self, origin, dirs, t_max=None, extra=()):
        """Nearest hit among the static primitives (+ ``extra``); see :func:`cast`."""
        return cast(list(self.prims) + list(extra), origin, dirs, t_max)

    # ---- rendering ----------------------------------------------------------------------------
    def render(self, c2w, intr: Intrinsics, gain: float = 1.0, transients=(), noise_seed=None,
               supersample: bool = True) -> Frame:
        """Render one view. c2w: (3|4, 4) OpenCV camera-to-world (metres); gain: exposure multiplier;
        noise_seed: seed of the sensor noise (None: no noise)."""
        c2w = np.asarray(c2w, np.float64)[:3]
        H, W, f = intr.height, intr.width, intr.focal
        prims = list(self.prims) + list(transients)
        rows, cols = _pixel_grid(H, W)
        origin = c2w[:3, 3].astype(np.float32)
        dirs = pixel_rays(c2w, intr, rows, cols)
        t, pid = cast(prims, origin, dirs, cull=(rows, cols, c2w, intr))
        rad, trans, key = self.shade(prims, origin, dirs, t, pid, f)
        if supersample:
            idx = np.flatnonzero(_edge_pixels(t.reshape(H, W), key.reshape(H, W)))
            if len(idx):
                sr = (rows[idx, None] + _SUBPIXEL[None, :, 0]).ravel()
                sc = (cols[idx, None] + _SUBPIXEL[None, :, 1]).ravel()
                sd = pixel_rays(c2w, intr, sr, sc)
                st, sp = cast(prims, origin, sd, cull=(sr, sc, c2w, intr))
                srad, strans, _ = self.shade(prims, origin, sd, st, sp, f, fp_scale=0.5)
                rad[:, idx] = srad.reshape(3, -1, 4).mean(2)
                trans[idx] = strans.reshape(-1, 4).mean(1) >= 0.5
        img = rad.reshape(3, H, W) * (_vignette(H, W) * np.float32(gain * (len(_GAMMA_LUT) - 1)))
        np.clip(img, 0, len(_GAMMA_LUT) - 1, out=img)
        img = np.take(_GAMMA_LUT, img.transpose(1, 2, 0).astype(np.int64))     # (H, W, 3), 0..255 float
        if noise_seed is not None:
            img += np.random.default_rng(noise_seed).standard_normal(img.shape, dtype=np.float32) * np.float32(0.8)
        rgb = np.clip(np.round(img), 0, 255).astype(np.uint8)
        depth = t.reshape(H, W)
        depth_mm = np.where(np.isfinite(depth), np.clip(np.round(depth * 1000), 0, 65534), 65535).astype(np.uint16)
        mask = np.where(trans.reshape(H, W), 0, 255).astype(np.uint8)
        return Frame(rgb, depth_mm, mask, depth)

    def transients_at(self, time_s: float, cam_pos, min_dist: float = 2.5) -> list:
        """Transient primitives at ``time_s`` (actors move along x and wrap around), skipping those
        within ``min_dist`` metres (horizontally) of the camera."""
        out = []
        for a in self.actors:
            span = a["x_max"] - a["x_min"]
            x = a["x_min"] + (a["x0"] + a["speed"] * time_s - a["x_min"]) % span
            if math.hypot(x - cam_pos[0], a["y"] - cam_pos[1]) < min_dist + a["radius"]:
                continue
            out += a["make"](x)
        return out


#: linear [0, 1] quantised to 16 bits -> display value 255 * x^(1/2.2)
_GAMMA_LUT = (np.linspace(0, 1, 65536, dtype=np.float64) ** (1 / 2.2) * 255).astype(np.float32)
_SUBPIXEL = np.array([[-0.25, -0.25], [-0.25, 0.25], [0.25, -0.25], [0.25, 0.25]], np.float32)


@lru_cache(maxsize=8)
def _pixel_grid(H, W):
    return (np.repeat(np.arange(H, dtype=np.float32), W), np.tile(np.arange(W, dtype=np.float32), H))


@lru_cache(maxsize=8)
def _vignette(H, W):
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    r2 = ((xx - W / 2) ** 2 + (yy - H / 2) ** 2) / ((W / 2) ** 2 + (H / 2) ** 2)
    return (1 - 0.25 * r2).astype(np.float32)


def _edge_pixels(t, key):
    """Flat mask of pixels next to a change of surface (primitive or face) or a depth jump > 8 %."""
    edge = np.zeros(t.shape, bool)
    tt = np.where(np.isfinite(t), t, np.float32(1e6))
    for sl0, sl1 in (((slice(None, -1), slice(None)), (slice(1, None), slice(None))),
                     ((slice(None), slice(None, -1)), (slice(None), slice(1, None)))):
        jump = (key[sl0] != key[sl1]) | (np.abs(tt[sl0] - tt[sl1]) > 0.08 * np.minimum(tt[sl0], tt[sl1]))
        edge[sl0] |= jump
        edge[sl1] |= jump
    return edge.ravel()
