"""Procedural 2D building blocks for textures: periodic value noise, fractal noise, blending and
anti-aliased drawing. Canvases are (h, w[, 3]) float32 sRGB in [0, 1], row 0 at the top; every size is
metric so content does not depend on the texel size."""
from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np


def bspline_taps(n_out: int, n_cells: int):
    """Periodic cubic B-spline interpolation of ``n_cells`` lattice values at ``n_out`` evenly spaced
    points: (n_out, 4) lattice indices and (n_out, 4) float32 weights (rows sum to 1)."""
    x = (np.arange(n_out) + 0.5) * n_cells / n_out - 0.5
    i = np.floor(x).astype(np.int64)
    f = (x - i)[:, None]
    w = np.concatenate([(1 - f) ** 3 / 6, (3 * f**3 - 6 * f**2 + 4) / 6, (-3 * f**3 + 3 * f**2 + 3 * f + 1) / 6, f**3 / 6], 1)
    return (i[:, None] + np.arange(-1, 3)) % n_cells, w.astype(np.float32)


@lru_cache(maxsize=64)
def bspline_matrix(n_out: int, n_cells: int) -> np.ndarray:
    """The same interpolation as a dense (n_out, n_cells) matrix (fast for coarse lattices)."""
    idx, w = bspline_taps(n_out, n_cells)
    m = np.zeros((n_out, n_cells), np.float32)
    np.add.at(m, (np.repeat(np.arange(n_out), 4), idx.ravel()), w.ravel())
    return m


def noise(rng, h, w, cells_y, cells_x) -> np.ndarray:
    """Smooth periodic value noise (h, w), zero mean, unit std: a random lattice interpolated by
    B-splines (a dense matrix product for coarse lattices, 4-tap gathers for fine ones)."""
    cy, cx = max(1, int(round(cells_y))), max(1, int(round(cells_x)))
    g = rng.standard_normal((cy, cx)).astype(np.float32)
    if cy * cx <= 4096:
        out = bspline_matrix(h, cy) @ g @ bspline_matrix(w, cx).T
    else:
        iy, wy = bspline_taps(h, cy)
        ix, wx = bspline_taps(w, cx)
        rows = sum(wy[:, k, None] * g[iy[:, k]] for k in range(4))                 # (h, cx)
        out = sum(wx[None, :, k] * rows[:, ix[:, k]] for k in range(4))            # (h, w)
    out -= out.mean()
    std = out.std()
    return out / std if std > 1e-4 else np.zeros_like(out)   # a 1x1 lattice is a constant


def fbm(rng, h, w, size, freq, octaves=4, gain=0.5, stretch=(1.0, 1.0)) -> np.ndarray:
    """Fractal noise over a canvas of ``size`` = (height_m, width_m); ``freq`` cells per metre at the
    first octave; octaves finer than ~3 texels are dropped. Roughly unit std."""
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for _ in range(octaves):
        cy, cx = size[0] * freq * stretch[0], size[1] * freq * stretch[1]
        if cy > h / 3 or cx > w / 3:
            break
        out += amp * noise(rng, h, w, cy, cx)
        total += amp * amp
        amp *= gain
        freq *= 2.0
    return out / math.sqrt(max(total, 1e-6))


def smoothstep(e0, e1, x):
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def grid_coords(h, w, texel):
    """Metric texel-centre coordinates: X (1, w) rightwards, Y (h, 1) downwards from the top edge."""
    return ((np.arange(w, dtype=np.float32) + 0.5) * texel[1])[None, :], \
           ((np.arange(h, dtype=np.float32) + 0.5) * texel[0])[:, None]


def lerp(a, b, t):
    t = np.asarray(t, np.float32)
    if t.ndim == 2:
        t = t[..., None]
    return a + (b - a) * t


def tint(rng, base, spread=0.08):
    return np.clip(np.asarray(base, np.float32) * (1 + rng.uniform(-spread, spread, 3)), 0, 1).astype(np.float32)


WORDS = ("NOVA", "ATLAS", "MERIDIAN", "CAFE", "LUMEN", "ORBIT", "HARBOR", "PIXEL", "DELTA", "KIOSK",
          "VERTEX", "SUMMIT", "EMBER", "QUARTZ", "FOLIO", "RIVER", "BAKERY", "BOOKS", "TAILOR", "MUSEUM",
          "GALLERY", "STUDIO", "MARKET", "HOTEL", "PHARMACY", "THEATRE", "LIBRARY", "GARDEN", "OPEN", "SALE")


def paint(img, draw, color):
    """Blend ``color`` into ``img`` through an anti-aliased uint8 coverage mask made by ``draw(mask)``
    (OpenCV draws anti-aliased shapes and text only into 8-bit images)."""
    m = np.zeros(img.shape[:2], np.uint8)
    draw(m)
    x, y, w, h = cv2.boundingRect(m)
    if w == 0 or h == 0:
        return
    a = m[y:y + h, x:x + w, None].astype(np.float32) / 255.0
    img[y:y + h, x:x + w] += (np.asarray(color, np.float32) - img[y:y + h, x:x + w]) * a


def put_text(img, text, x, y, height_px, color, thick=None, font=cv2.FONT_HERSHEY_DUPLEX):
    """Anti-aliased text whose cap height is ``height_px`` with its lower-left corner at (x, y)."""
    (_, th), _ = cv2.getTextSize(text, font, 1.0, 1)
    scale = max(height_px / max(th, 1), 0.05)
    thick = thick or max(1, int(round(scale * 1.6)))
    paint(img, lambda m: cv2.putText(m, text, (int(x), int(y)), font, scale, 255, thick, cv2.LINE_AA), color)


def text_width(text, height_px, font=cv2.FONT_HERSHEY_DUPLEX):
    (tw, th), _ = cv2.getTextSize(text, font, 1.0, 1)
    return tw * height_px / max(th, 1)


def fill_rect(img, x0, y0, x1, y1, color, texel):
    """Fill a metric rectangle (x right, y down from the top edge, metres) with a colour."""
    h, w = img.shape[:2]
    c0, c1 = int(round(x0 / texel[1])), int(round(x1 / texel[1]))
    r0, r1 = int(round(y0 / texel[0])), int(round(y1 / texel[0]))
    img[max(r0, 0):min(r1, h), max(c0, 0):min(c1, w)] = color
