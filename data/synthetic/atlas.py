"""Texture atlas: every mip level of every texture in one RGBA8 array; trilinear, repeat-addressed
lookups in metric surface coordinates."""
from __future__ import annotations

import math

import cv2
import numpy as np

from data.synthetic.constants import MIP_LEVELS


def canvas_dims(size_v: float, size_u: float, texel: float) -> tuple[int, int]:
    """Texture (h, w) for a surface of size_v x size_u metres: ~texel metres, multiples of 32."""
    q = 2 ** (MIP_LEVELS - 1)
    return (max(q, int(math.ceil(size_v / texel / q)) * q), max(q, int(math.ceil(size_u / texel / q)) * q))


class TextureAtlas:
    """Mip-mapped textures, sampled in metric surface coordinates with repeat addressing.

    ``add`` takes an sRGB canvas (h, w, 3) in [0, 1] with row 0 at the *top* (largest v) and the metric
    period (size_v, size_u) it covers. ``freeze`` builds the mip levels in linear light and packs them
    as RGBA8 words holding sqrt(linear albedo) (one gather per tap; filtering happens on the encoded
    values, decoding is a square). ``sample`` returns linear RGB.
    """

    def __init__(self):
        self._items: list[tuple[np.ndarray, float, float]] = []

    def add(self, img_srgb: np.ndarray, size_v: float, size_u: float) -> int:
        h, w = img_srgb.shape[:2]
        q = 2 ** (MIP_LEVELS - 1)
        if h % q or w % q:
            raise ValueError(f"texture dims {h}x{w} must be multiples of {q}")
        self._items.append((np.flipud(np.clip(img_srgb, 0, 1)).astype(np.float32), h / size_v, w / size_u))
        return len(self._items) - 1

    def image(self, tex_id: int) -> np.ndarray:
        """The stored sRGB canvas of a not yet frozen texture (row 0 = bottom), for in-place baking."""
        return self._items[tex_id][0]

    def freeze(self) -> None:
        n, L = len(self._items), MIP_LEVELS
        self.off = np.zeros(n * L, np.int64)
        self.w = np.zeros(n * L, np.float32)
        self.h = np.zeros(n * L, np.float32)
        self.tpm_u = np.zeros(n * L, np.float32)
        self.tpm_v = np.zeros(n * L, np.float32)
        chunks, pos = [], 0
        for i, (img, tv, tu) in enumerate(self._items):
            lvl = np.clip(img, 0, 1) ** 2.2
            for l in range(L):
                if l:
                    lvl = cv2.resize(lvl, (lvl.shape[1] // 2, lvl.shape[0] // 2), interpolation=cv2.INTER_AREA)
                rgba = np.zeros(lvl.shape[:2] + (4,), np.uint8)
                rgba[..., :3] = np.round(np.sqrt(np.clip(lvl, 0, 1)) * 255)
                chunks.append(rgba.reshape(-1, 4))
                k = i * L + l
                self.off[k], self.h[k], self.w[k] = pos, lvl.shape[0], lvl.shape[1]
                self.tpm_u[k], self.tpm_v[k] = tu / 2 ** l, tv / 2 ** l
                pos += lvl.shape[0] * lvl.shape[1]
        self.data = np.concatenate(chunks).view(np.uint32).ravel()
        self._lod_scale = np.maximum(self.tpm_u[::L], self.tpm_v[::L])
        self._items = []

    def _bilinear(self, k, u, v):
        """(n, 4) float32 encoded values (sqrt of linear RGB, 0) at level-table entries k."""
        w, h = self.w[k], self.h[k]
        x = u * self.tpm_u[k] - 0.5
        y = v * self.tpm_v[k] - 0.5
        x -= np.floor(x / w) * w          # wrap in float: exact for texel indices < 2**24
        y -= np.floor(y / h) * h
        x0, y0 = np.floor(x), np.floor(y)
        fx, fy = (x - x0)[:, None], (y - y0)[:, None]
        x1 = x0 + 1
        x1[x1 >= w] = 0
        y1 = y0 + 1
        y1[y1 >= h] = 0
        wi = w.astype(np.int64)
        r0 = self.off[k] + y0.astype(np.int64) * wi
        r1 = self.off[k] + y1.astype(np.int64) * wi
        c0, c1 = x0.astype(np.int64), x1.astype(np.int64)

        def tap(idx):
            return np.take(self.data, idx).view(np.uint8).reshape(-1, 4).astype(np.float32)
        a = tap(r0 + c0)
        a += (tap(r0 + c1) - a) * fx
        b = tap(r1 + c0)
        b += (tap(r1 + c1) - b) * fx
        a += (b - a) * fy
        return a

    def sample(self, tex: np.ndarray, u: np.ndarray, v: np.ndarray, footprint: np.ndarray) -> np.ndarray:
        """Linear RGB (3, n) at metric (u, v) of textures ``tex`` (n,) for pixel footprints (metres)."""
        lod = np.log2(np.maximum(footprint * self._lod_scale[tex], np.float32(1e-6)))
        np.clip(lod, 0, MIP_LEVELS - 1, out=lod)
        l0 = lod.astype(np.int64)
        frac = lod - l0
        # trilinear with a narrowed transition: one level when frac < 1/4 or > 3/4, a blend between
        # (continuous in lod, so no seams; half the second lookups of plain trilinear)
        k = tex * MIP_LEVELS + np.minimum(l0 + (frac >= 0.75), MIP_LEVELS - 1)
        c = self._bilinear(k, u, v)
        i = np.flatnonzero((frac > 0.25) & (frac < 0.75))
        if len(i):
            c1 = self._bilinear(np.minimum(k[i] + 1, tex[i] * MIP_LEVELS + MIP_LEVELS - 1), u[i], v[i])
            c[i] += (c1 - c[i]) * ((frac[i] - np.float32(0.25)) * 2)[:, None]
        c *= np.float32(1 / 255)
        c *= c
        return np.ascontiguousarray(c[:, :3].T)
