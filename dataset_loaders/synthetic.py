"""Synthetic scenes rendered on the CPU in the exact 7-Scenes and Cambridge on-disk layouts.

The project proves NeFeS + DFNet end to end on scenes it renders itself. Two kinds:

* ``room``   (7-Scenes style): a furnished room (~5 x 4 x 2.6 m), hand-held cameras at 1.2-1.8 m;
  writes colour, dSLAM-style poses, z-depth and a COLMAP-style pseudo-GT list in its own world frame.
* ``street`` (Cambridge style): a street with facades, trees, a far backdrop and moving pedestrians/cars
  (transients) marked 0 in 8-bit semantic masks (255 = static).

Conventions
-----------
* World frame: metres, z up (gravity -z). Poses on disk are camera-to-world 4x4 with OpenCV camera axes
  (x right, y down, z forward). The COLMAP list is world-to-camera in a second world frame
  ``X_colmap = G · X_world`` (G: a fixed random rigid transform, written to ``synthetic_info.json``).
* Pixels: the ray of integer pixel (u, v) has camera direction ``((u - W/2)/f, (v - H/2)/f, 1)``, the
  convention of ``models/rays.py`` (principal point W/2, H/2). With that direction un-normalised the ray
  parameter ``t`` *is* the z-depth, which is what the depth PNGs hold (millimetres, 65535 = no hit).
* Image formation: linear radiance (Lambertian albedo x irradiance of point lights / sun + ambient,
  static shadows baked into textures) x mild vignetting x per-frame exposure gain, then gamma 1/2.2, clip,
  a little sensor noise, 8-bit. Textures are mip-mapped and sampled trilinearly; pixels on geometric
  edges are re-rendered with 2x2 sub-samples.

Everything is vectorised numpy (Python loops only over primitives, textures and frames). Deterministic
for a seed; geometry and trajectories do not depend on the image size (textures get coarser texels for
small images).
"""
from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import shutil
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import torch

from models import geometry

_logger = logging.getLogger(__name__)

GENERATOR_VERSION = "1.0"
KINDS = ("room", "street")
LAYOUTS = ("single", "original")
#: Reference intrinsics the loaders hard-code: focal (px) at a reference width (px), default size.
REF_CAMERA = {"room": (585.0, 640, (640, 480)), "street": (744.0, 854, (854, 480))}
EXPOSURE_RANGE = (0.65, 1.35)
INCOMPLETE_MARKER = ".synthetic_incomplete"
INFO_FILE = "synthetic_info.json"
_EPS = 1e-4
_MIP_LEVELS = 6   # texture dims are multiples of 2**(_MIP_LEVELS-1)


class SyntheticError(ValueError):
    """Bad request for the generator (unknown kind, occupied output folder, bad size...)."""


# ==============================================================================================
# procedural 2D patterns (all sizes in metres; canvases are (h, w[, 3]) float32 sRGB, row 0 = top)
# ==============================================================================================
@lru_cache(maxsize=64)
def _bspline_matrix(n_out: int, n_cells: int) -> np.ndarray:
    """(n_out, n_cells) periodic cubic B-spline interpolation weights (rows sum to 1)."""
    x = (np.arange(n_out) + 0.5) * n_cells / n_out - 0.5
    i = np.floor(x).astype(np.int64)
    f = x - i
    weights = [(1 - f) ** 3 / 6, (3 * f**3 - 6 * f**2 + 4) / 6, (-3 * f**3 + 3 * f**2 + 3 * f + 1) / 6, f**3 / 6]
    m = np.zeros((n_out, n_cells))
    rows = np.arange(n_out)
    for k, wk in enumerate(weights):
        np.add.at(m, (rows, (i - 1 + k) % n_cells), wk)
    return m.astype(np.float32)


def _noise(rng, h, w, cells_y, cells_x) -> np.ndarray:
    """Smooth periodic value noise (h, w), unit std: a random lattice interpolated by B-splines."""
    cy, cx = max(1, int(round(cells_y))), max(1, int(round(cells_x)))
    g = rng.standard_normal((cy, cx)).astype(np.float32)
    out = _bspline_matrix(h, cy) @ g @ _bspline_matrix(w, cx).T
    out -= out.mean()
    std = out.std()
    return out / std if std > 1e-4 else np.zeros_like(out)   # a 1x1 lattice is a constant


def _fbm(rng, h, w, size, freq, octaves=4, gain=0.5, stretch=(1.0, 1.0)) -> np.ndarray:
    """Fractal noise over a canvas of ``size`` = (height_m, width_m); ``freq`` cells per metre at the
    first octave; octaves finer than ~3 texels are dropped. Roughly unit std."""
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for _ in range(octaves):
        cy, cx = size[0] * freq * stretch[0], size[1] * freq * stretch[1]
        if cy > h / 3 or cx > w / 3:
            break
        out += amp * _noise(rng, h, w, cy, cx)
        total += amp * amp
        amp *= gain
        freq *= 2.0
    return out / math.sqrt(max(total, 1e-6))


def _smoothstep(e0, e1, x):
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _grid_coords(h, w, texel):
    """Metric texel-centre coordinates: X (1, w) rightwards, Y (h, 1) downwards from the top edge."""
    return ((np.arange(w, dtype=np.float32) + 0.5) * texel[1])[None, :], \
           ((np.arange(h, dtype=np.float32) + 0.5) * texel[0])[:, None]


def _lerp(a, b, t):
    t = np.asarray(t, np.float32)
    if t.ndim == 2:
        t = t[..., None]
    return a + (b - a) * t


def _tint(rng, base, spread=0.08):
    return np.clip(np.asarray(base, np.float32) * (1 + rng.uniform(-spread, spread, 3)), 0, 1).astype(np.float32)


_WORDS = ("NOVA", "ATLAS", "MERIDIAN", "CAFE", "LUMEN", "ORBIT", "HARBOR", "PIXEL", "DELTA", "KIOSK",
          "VERTEX", "SUMMIT", "EMBER", "QUARTZ", "FOLIO", "RIVER", "BAKERY", "BOOKS", "TAILOR", "MUSEUM",
          "GALLERY", "STUDIO", "MARKET", "HOTEL", "PHARMACY", "THEATRE", "LIBRARY", "GARDEN", "OPEN", "SALE")


def _paint(img, draw, color):
    """Blend ``color`` into ``img`` through an anti-aliased uint8 coverage mask made by ``draw(mask)``
    (OpenCV draws anti-aliased shapes and text only into 8-bit images)."""
    m = np.zeros(img.shape[:2], np.uint8)
    draw(m)
    x, y, w, h = cv2.boundingRect(m)
    if w == 0 or h == 0:
        return
    a = m[y:y + h, x:x + w, None].astype(np.float32) / 255.0
    img[y:y + h, x:x + w] += (np.asarray(color, np.float32) - img[y:y + h, x:x + w]) * a


def _put_text(img, text, x, y, height_px, color, thick=None, font=cv2.FONT_HERSHEY_DUPLEX):
    """Anti-aliased text whose cap height is ``height_px`` with its lower-left corner at (x, y)."""
    (_, th), _ = cv2.getTextSize(text, font, 1.0, 1)
    scale = max(height_px / max(th, 1), 0.05)
    thick = thick or max(1, int(round(scale * 1.6)))
    _paint(img, lambda m: cv2.putText(m, text, (int(x), int(y)), font, scale, 255, thick, cv2.LINE_AA), color)


def _text_width(text, height_px, font=cv2.FONT_HERSHEY_DUPLEX):
    (tw, th), _ = cv2.getTextSize(text, font, 1.0, 1)
    return tw * height_px / max(th, 1)


def _rect(img, x0, y0, x1, y1, color, texel):
    """Fill a metric rectangle (x right, y down from the top edge, metres) with a colour."""
    h, w = img.shape[:2]
    c0, c1 = int(round(x0 / texel[1])), int(round(x1 / texel[1]))
    r0, r1 = int(round(y0 / texel[0])), int(round(y1 / texel[0]))
    img[max(r0, 0):min(r1, h), max(c0, 0):min(c1, w)] = color


# ---- materials: each returns (h, w, 3) sRGB in [0, 1] for a canvas of size (height_m, width_m) ------
def tex_plaster(rng, h, w, size, color):
    n = _fbm(rng, h, w, size, 1.5, 6) * 0.06 + _fbm(rng, h, w, size, 0.3, 2) * 0.05
    return np.clip(np.asarray(color, np.float32) * (1 + n)[..., None], 0, 1)


def tex_wallpaper(rng, h, w, size, c1, c2):
    X, Y = _grid_coords(h, w, (size[0] / h, size[1] / w))
    period = rng.uniform(0.12, 0.2)
    stripes = _smoothstep(0.2, 0.35, np.abs(np.sin(np.pi * X / period)))
    mx, my = X / period * 2, Y / period * 2
    motif = np.clip(np.abs(np.sin(np.pi * (mx + my) / 2) * np.sin(np.pi * (mx - my) / 2)) * 1.4 - 0.5, 0, 1)
    img = _lerp(np.asarray(c1, np.float32), np.asarray(c2, np.float32), np.broadcast_to(0.6 * stripes * motif, (h, w)))
    seam = _smoothstep(0.004, 0.0, np.abs((X % 0.53) - 0.265) - 0.263)
    img *= (1 - 0.12 * seam)[..., None]
    return np.clip(img * (1 + 0.04 * _fbm(rng, h, w, size, 2.0, 4))[..., None], 0, 1)


def tex_bricks(rng, h, w, size, base, mortar=(0.72, 0.7, 0.66), brick=(0.215, 0.065), joint=0.01, vary=1.0):
    X, Y = _grid_coords(h, w, (size[0] / h, size[1] / w))
    ph, pl = brick[1] + joint, brick[0] + joint
    row = np.floor(Y / ph)
    xs = X + (row % 2) * pl / 2
    col = np.floor(xs / pl)
    fx, fy = xs - col * pl, Y - row * ph
    edge = np.minimum(np.minimum(fx, pl - fx - joint), np.minimum(fy, ph - fy - joint))
    is_brick = _smoothstep(-0.001, 0.0015, edge)
    n_rows, n_cols = int(np.ceil(size[0] / ph)) + 1, int(np.ceil(size[1] / pl)) + 2
    tints = (1 + vary * rng.uniform(-0.25, 0.18, (n_rows, n_cols, 1))) * (1 + vary * rng.uniform(-0.07, 0.07, (n_rows, n_cols, 3)))
    tints = tints.astype(np.float32)
    rid = np.broadcast_to(row, (h, w)).astype(np.int64) % n_rows
    cid = col.astype(np.int64) % n_cols
    bcol = np.asarray(base, np.float32) * tints[rid, cid]
    bcol *= (1 + 0.08 * _fbm(rng, h, w, size, 6.0, 4))[..., None]
    mcol = np.asarray(mortar, np.float32) * (1 + 0.1 * _fbm(rng, h, w, size, 20.0, 2))[..., None]
    return np.clip(_lerp(mcol, bcol, is_brick), 0, 1)


def tex_planks(rng, h, w, size, base, plank_w=0.17):
    """Wood planks running along x (canvas width)."""
    X, Y = _grid_coords(h, w, (size[0] / h, size[1] / w))
    row = np.floor(Y / plank_w)
    n_rows = int(np.ceil(size[0] / plank_w)) + 1
    shift = rng.uniform(0, 2.0, n_rows).astype(np.float32)
    length = rng.uniform(1.1, 1.9, n_rows).astype(np.float32)
    ri = np.broadcast_to(row, (h, w)).astype(np.int64)
    xs = X + shift[ri]
    seg = np.floor(xs / length[ri])
    key = (ri * 131 + seg.astype(np.int64) * 17) % 257
    tint = rng.uniform(0.78, 1.15, 257).astype(np.float32)[key]
    grain = _fbm(rng, h, w, size, 3.0, 5, stretch=(8.0, 0.25))
    rings = 0.5 + 0.5 * np.sin(40 * (Y + 0.03 * grain) + 3 * np.sin(2.1 * X + ri))
    img = np.asarray(base, np.float32) * (tint * (1 + 0.12 * grain) * (0.9 + 0.12 * rings))[..., None]
    fy = Y - row * plank_w
    fx = xs - seg * length[ri]
    gap = np.minimum(np.minimum(fy, plank_w - fy), np.minimum(fx, length[ri] - fx))
    return np.clip(img * (0.45 + 0.55 * _smoothstep(0.0, 0.003, gap))[..., None], 0, 1)


def tex_tiles(rng, h, w, size, base, tile=0.45):
    X, Y = _grid_coords(h, w, (size[0] / h, size[1] / w))
    fx, fy = X % tile, Y % tile
    key = ((np.floor(X / tile) * 37 + np.floor(Y / tile) * 11) % 199).astype(np.int64)
    tint = rng.uniform(0.85, 1.1, 199).astype(np.float32)[key]
    vein = np.abs(np.sin(6 * X + 4 * Y + 4 * _fbm(rng, h, w, size, 1.5, 4)))
    img = np.asarray(base, np.float32) * (tint * (1 - 0.15 * _smoothstep(0.15, 0.0, vein)))[..., None]
    img *= (1 + 0.05 * _fbm(rng, h, w, size, 30.0, 2))[..., None]
    grout = np.minimum(np.minimum(fx, tile - fx), np.minimum(fy, tile - fy))
    return np.clip(_lerp(np.float32([0.5, 0.48, 0.45]), img, _smoothstep(0.002, 0.004, grout)), 0, 1)


def tex_wood(rng, h, w, size, base):
    grain = _fbm(rng, h, w, size, 4.0, 5, stretch=(0.2, 6.0))
    X, Y = _grid_coords(h, w, (size[0] / h, size[1] / w))
    rings = 0.5 + 0.5 * np.sin(55 * X + 6 * grain)
    return np.clip(np.asarray(base, np.float32) * (1 + 0.12 * grain + 0.1 * rings)[..., None], 0, 1)


def tex_fabric(rng, h, w, size, base):
    n = _fbm(rng, h, w, size, 3.0, 5)
    X, Y = _grid_coords(h, w, (size[0] / h, size[1] / w))
    weave = 0.5 + 0.25 * (np.sin(2 * np.pi * X / 0.012) + np.sin(2 * np.pi * Y / 0.012))
    return np.clip(np.asarray(base, np.float32) * (1 + 0.08 * n + 0.06 * weave)[..., None], 0, 1)


def tex_noisy(rng, h, w, size, base, amount=0.15, freq=3.0):
    return np.clip(np.asarray(base, np.float32) * (1 + amount * _fbm(rng, h, w, size, freq, 6))[..., None], 0, 1)


def tex_cardboard(rng, h, w, size):
    img = tex_noisy(rng, h, w, size, (0.62, 0.47, 0.3), 0.1, 4.0)
    tex_h = (size[0] / h, size[1] / w)
    _rect(img, 0, size[0] * 0.42, size[1], size[0] * 0.55, (0.8, 0.72, 0.55), tex_h)   # tape
    word = _WORDS[rng.integers(len(_WORDS))]
    hp = 0.12 * size[0] / tex_h[0]
    _put_text(img, word, 0.1 * size[1] / tex_h[1], 0.35 * size[0] / tex_h[0], hp, (0.15, 0.12, 0.1))
    return img


def tex_poster(rng, h, w, size):
    """Printed-looking poster: gradient, shapes, a title and lines of small text, white border."""
    c1, c2 = rng.uniform(0.05, 0.95, 3), rng.uniform(0.05, 0.95, 3)
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    img = np.broadcast_to(_lerp(c1.astype(np.float32), c2.astype(np.float32), t), (h, w, 3)).copy()
    for _ in range(rng.integers(2, 6)):
        col = rng.uniform(0, 1, 3)
        cx, cy, r = int(rng.uniform(0.1, 0.9) * w), int(rng.uniform(0.25, 0.75) * h), int(rng.uniform(0.08, 0.3) * w)
        if rng.random() < 0.5:
            _paint(img, lambda m: cv2.circle(m, (cx, cy), r, 255, -1, cv2.LINE_AA), col)
        else:
            pts = (np.array([cx, cy]) + rng.uniform(-r, r, (3 + rng.integers(2), 2))).astype(np.int32)
            _paint(img, lambda m: cv2.fillPoly(m, [pts], 255, cv2.LINE_AA), col)
    ink = (0.05, 0.05, 0.05) if img.mean() > 0.5 else (0.97, 0.97, 0.95)
    title = " ".join(_WORDS[i] for i in rng.integers(len(_WORDS), size=rng.integers(1, 3)))
    hp = min(0.09 * h, 0.8 * w / max(_text_width(title, 1.0), 1))
    _put_text(img, title, 0.08 * w, 0.16 * h, hp, ink)
    for k in range(rng.integers(2, 5)):
        line = " ".join(_WORDS[i].lower() for i in rng.integers(len(_WORDS), size=4))
        hl = min(0.025 * h, 0.84 * w / max(_text_width(line, 1.0), 1))
        _put_text(img, line, 0.08 * w, (0.82 + 0.045 * k) * h, hl, ink, thick=1)
    b = max(1, int(0.04 * w))
    img[:b], img[-b:], img[:, :b], img[:, -b:] = 0.95, 0.95, 0.95, 0.95
    return np.clip(img, 0, 1)


def tex_painting(rng, h, w, size, frame_col):
    """Framed landscape/abstract painting (frame and mat included)."""
    X, Y = _grid_coords(h, w, (1.0 / h, 1.0 / w))
    sky = _lerp(np.float32([0.35, 0.55, 0.85]), np.float32([0.9, 0.8, 0.6]), Y * 1.6)
    ridge = 0.45 + 0.12 * _fbm(rng, 1, w, (0.1, 1.0), 3.0, 4)[0][None, :]
    hill_col = rng.uniform(0.15, 0.6, 3).astype(np.float32)
    hills = hill_col * (1 + 0.25 * _fbm(rng, h, w, (1, 1), 6.0, 4))[..., None]
    img = _lerp(sky, hills, _smoothstep(-0.005, 0.005, Y - ridge))
    cx, cy = rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.3)
    sun = _smoothstep(0.07, 0.06, np.sqrt((X - cx) ** 2 + (Y - cy) ** 2))
    img = _lerp(img, np.float32([1.0, 0.9, 0.6]), sun)
    frame, mat = max(1, int(0.06 * min(h, w))), max(1, int(0.1 * min(h, w)))
    out = np.empty_like(img)
    out[:] = np.float32([0.93, 0.92, 0.88])
    out[mat:-mat, mat:-mat] = img[mat:-mat, mat:-mat]
    fc = np.asarray(frame_col, np.float32)
    out[:frame], out[-frame:], out[:, :frame], out[:, -frame:] = fc, fc, fc, fc
    return np.clip(out, 0, 1)


def tex_window_view(rng, h, w, size):
    """Bright outdoor view (emissive) with mullions."""
    img = tex_painting(rng, h, w, size, (0.9, 0.9, 0.88))
    img = 0.35 + 0.65 * img
    t = (size[0] / h, size[1] / w)
    _rect(img, size[1] / 2 - 0.025, 0, size[1] / 2 + 0.025, size[0], (0.85, 0.85, 0.82), t)
    _rect(img, 0, size[0] * 0.4 - 0.025, size[1], size[0] * 0.4 + 0.025, (0.85, 0.85, 0.82), t)
    return np.clip(img, 0, 1)


def tex_door_panel(rng, h, w, size, base):
    img = tex_wood(rng, h, w, size, base)
    t = (size[0] / h, size[1] / w)
    for (y0, y1) in ((0.12, 0.45), (0.55, 0.9)):
        for (x0, x1) in ((0.12, 0.45), (0.55, 0.88)):
            sl = (slice(int(y0 * h), int(y1 * h)), slice(int(x0 * w), int(x1 * w)))
            img[sl] *= 0.82
    _rect(img, size[1] * 0.82, size[0] * 0.48, size[1] * 0.9, size[0] * 0.52, (0.75, 0.72, 0.65), t)
    return img


def tex_books(rng, h, w, size):
    """Book spines seen from the front of a shelf row (each a vertical band with title bars)."""
    img = np.zeros((h, w, 3), np.float32)
    x = 0
    while x < w:
        bw = max(2, int(rng.uniform(0.02, 0.05) * w / size[1]))
        col = rng.uniform(0.08, 0.85, 3).astype(np.float32)
        img[:, x:x + bw] = col
        y0 = int(rng.uniform(0.15, 0.3) * h)
        img[y0:y0 + max(1, h // 14), x:x + bw] = 1.0 - col * 0.5
        x += bw
    return img


def tex_corkboard(rng, h, w, size):
    """Cork notice board with pinned paper notes and a wooden frame."""
    img = tex_noisy(rng, h, w, size, (0.62, 0.45, 0.28), 0.25, 25.0)
    t = (size[0] / h, size[1] / w)
    for _ in range(int(rng.integers(5, 9))):
        nw, nh = rng.uniform(0.1, 0.22), rng.uniform(0.1, 0.2)
        x0, y0 = rng.uniform(0.05, size[1] - nw - 0.05), rng.uniform(0.05, size[0] - nh - 0.05)
        _rect(img, x0, y0, x0 + nw, y0 + nh, rng.uniform(0.75, 1.0, 3), t)
        for k in range(int(nh / 0.025) - 1):
            _rect(img, x0 + 0.015, y0 + 0.02 + k * 0.025, x0 + nw * rng.uniform(0.5, 0.9), y0 + 0.026 + k * 0.025, (0.2, 0.2, 0.3), t)
        _rect(img, x0 + nw / 2 - 0.006, y0 + 0.006, x0 + nw / 2 + 0.006, y0 + 0.018, rng.uniform(0, 1, 3), t)
    f = 0.03
    for r in ((0, 0, size[1], f), (0, size[0] - f, size[1], size[0]), (0, 0, f, size[0]), (size[1] - f, 0, size[1], size[0])):
        _rect(img, *r, (0.45, 0.3, 0.18), t)
    return img


def tex_leaves(rng, h, w, size):
    n = _fbm(rng, h, w, size, 4.0, 6)
    base = _lerp(np.float32([0.08, 0.2, 0.05]), np.float32([0.35, 0.5, 0.15]), _smoothstep(-0.8, 1.2, n))
    return np.clip(base, 0, 1)


def tex_asphalt(rng, h, w, size):
    n = _fbm(rng, h, w, size, 0.4, 3) * 0.08 + _fbm(rng, h, w, size, 40.0, 3) * 0.12
    img = np.float32([0.3, 0.3, 0.31]) * (1 + n)[..., None]
    cracks = _smoothstep(0.035, 0.0, np.abs(_fbm(rng, h, w, size, 1.2, 4)))
    return np.clip(img * (1 - 0.35 * cracks)[..., None], 0, 1)


def tex_paving(rng, h, w, size, slab=0.6):
    img = tex_tiles(rng, h, w, size, (0.62, 0.6, 0.56), slab)
    return np.clip(img * (1 + 0.06 * _fbm(rng, h, w, size, 0.8, 3))[..., None], 0, 1)


# ==============================================================================================
# texture atlas: all mip levels of all textures in one RGBA8 array, trilinear lookups
# ==============================================================================================
def canvas_dims(size_v: float, size_u: float, texel: float) -> tuple[int, int]:
    """Texture (h, w) for a surface of size_v x size_u metres: ~texel metres, multiples of 32."""
    q = 2 ** (_MIP_LEVELS - 1)
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
        q = 2 ** (_MIP_LEVELS - 1)
        if h % q or w % q:
            raise ValueError(f"texture dims {h}x{w} must be multiples of {q}")
        self._items.append((np.flipud(np.clip(img_srgb, 0, 1)).astype(np.float32), h / size_v, w / size_u))
        return len(self._items) - 1

    def image(self, tex_id: int) -> np.ndarray:
        """The stored sRGB canvas of a not yet frozen texture (row 0 = bottom), for in-place baking."""
        return self._items[tex_id][0]

    def freeze(self) -> None:
        n, L = len(self._items), _MIP_LEVELS
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
        np.clip(lod, 0, _MIP_LEVELS - 1, out=lod)
        l0 = lod.astype(np.int64)
        frac = lod - l0
        k = tex * _MIP_LEVELS + l0
        c = self._bilinear(k, u, v)
        i = np.flatnonzero(frac > 0.02)     # trilinear only where the level is fractional
        if len(i):
            c1 = self._bilinear(np.minimum(k[i] + 1, tex[i] * _MIP_LEVELS + _MIP_LEVELS - 1), u[i], v[i])
            c[i] += (c1 - c[i]) * frac[i, None]
        c *= np.float32(1 / 255)
        c *= c
        return np.ascontiguousarray(c[:, :3].T)


# ==============================================================================================
# primitives. Arrays are structure-of-arrays: points/directions (3, n).
#   intersect(origin (3,) | (3, n), dirs (3, n)) -> t (n,) float32, inf = miss (t > 1e-4 only)
#   surface(points (3, n)) -> normal (3, n) (visible side), u (n,), v (n,) metres, face (n,) int
# ==============================================================================================
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
        ok = (tf >= tn) & (t > _EPS)
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
            t = np.where((zs >= self.z0) & (zs <= self.z1) & (t > _EPS), t, np.float32(np.inf))
            for zc in (self.z0, self.z1):
                tc = (np.float32(zc) - oz) / dz
                xc, yc = ox + tc * dx, oy + tc * dy
                t = np.where((tc > _EPS) & (xc * xc + yc * yc <= r2) & (tc < t), tc, t)
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
        return np.where(t > _EPS, t, np.float32(np.inf))

    def surface(self, p):
        q = (p - self.c.astype(np.float32)[:, None]) / np.float32(self.r)
        u = (np.arctan2(q[1], q[0]) + np.float32(np.pi)) * self.r
        v = (np.arcsin(np.clip(q[2], -1, 1)) + np.float32(np.pi / 2)) * self.r
        return q, u, v, np.zeros(p.shape[1], np.int64)


# ==============================================================================================
# cameras and ray casting
# ==============================================================================================
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


# ==============================================================================================
# the scene: primitives, materials, lights; shading and rendering
# ==============================================================================================
@dataclass
class PointLight:
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
    """Static primitives + materials + lights, plus what trajectories need (camera region, view params)."""
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


# ==============================================================================================
# scene construction
# ==============================================================================================
class _Builder:
    """Collects materials (textures), primitives and faces whose textures get baked shadows.

    Layout randomness comes from one generator; every texture gets its own generator (seeded by its
    index), so the layout does not depend on the texel size (i.e. on the image size)."""

    def __init__(self, seed: int, texel: float):
        self.seed, self.texel = seed, texel
        self.rng = np.random.default_rng([seed, 0])
        self.atlas = TextureAtlas()
        self.mats: list[tuple[int, float, float]] = []
        self.prims: list = []
        self.baked: list = []          # (prim, face, tex id, corner_ao)
        self._n_tex = 0

    def material(self, recipe, size=(1.0, 1.0), *args, emit=0.0, detail=0.06, texel=None, **kw) -> int:
        """Bake ``recipe(rng, h, w, size, *args)`` over ``size`` = (height_m, width_m) (the tiling period)."""
        self._n_tex += 1
        h, w = canvas_dims(size[0], size[1], texel or self.texel)
        img = recipe(np.random.default_rng([self.seed, 100, self._n_tex]), h, w, size, *args, **kw)
        self.mats.append((self.atlas.add(img, *size), float(emit), float(detail)))
        return len(self.mats) - 1

    def face_material(self, prim, face, recipe, *args, bake=False, corner_ao=False, **kw) -> int:
        """A texture made for exactly one face (no repetition); optionally shadow-baked later."""
        m = self.material(recipe, prim.face_size(face), *args, **kw)
        prim.mats[face] = m
        prim.offs[face] = 0
        if bake:
            self.baked.append((prim, face, self.mats[m][0], corner_ao))
        return m

    def add(self, prim):
        self.prims.append(prim)
        return prim

    def offs(self, n):
        return self.rng.uniform(0, 10, (n, 2)).astype(np.float32)

    def finish(self, kind, lights, ambient, sun=None, bake_step=0.1, **extra) -> Scene:
        self._n_tex += 1
        period = 0.25
        n = canvas_dims(period, period, self.texel / 3)[0]
        grain = 1 + 0.35 * _fbm(np.random.default_rng([self.seed, 100, self._n_tex]), n, n, (period, period), 12.0, 6)
        m = np.array(self.mats, np.float64).reshape(-1, 3)
        scene = Scene(kind=kind, prims=self.prims, atlas=self.atlas, mat_tex=m[:, 0].astype(np.int64),
                      mat_emit=m[:, 1].astype(np.float32), mat_detail=m[:, 2].astype(np.float32),
                      detail=np.clip(grain, 0.2, 1.8).astype(np.float32), detail_period=period, lights=lights,
                      ambient=np.asarray(ambient, np.float32),
                      sun_dir=None if sun is None else np.asarray(sun[0], np.float64) / np.linalg.norm(sun[0]),
                      sun_color=None if sun is None else np.asarray(sun[1], np.float32), **extra)
        self._bake_shadows(scene, bake_step)
        self.atlas.freeze()
        return scene

    def _bake_shadows(self, scene: Scene, step: float) -> None:
        """Multiply the textures of baked faces by (shadowed / unshadowed) irradiance (+ corner AO)."""
        blockers = [p for p in self.prims if not getattr(p, "no_shadow", False)]
        for prim, face, tex, corner_ao in self.baked:
            sv, su = prim.face_size(face)
            nv, nu = max(2, int(math.ceil(sv / step))), max(2, int(math.ceil(su / step)))
            V, U = np.meshgrid((np.arange(nv) + 0.5) * sv / nv, (np.arange(nu) + 0.5) * su / nu, indexing="ij")
            p, n = prim.face_points(face, U.ravel(), V.ravel())
            p = (p + n * 2e-3).T.astype(np.float32)               # (3, m), just off the surface
            nn = np.broadcast_to(n.astype(np.float32)[:, None], p.shape)
            lit, full = scene.ambient_term(nn), scene.ambient_term(nn)
            for term, to_light, reach in scene.direct_terms(p, nn):
                active = np.flatnonzero(term.max(0) > 0)
                vis = np.zeros(p.shape[1], np.float32)
                if len(active):
                    _, pid = cast(blockers, p[:, active], np.ascontiguousarray(to_light[:, active]), t_max=reach)
                    vis[active] = pid < 0
                lit += term * vis
                full += term
            S = (lit.mean(0) / np.maximum(full.mean(0), 1e-6)).reshape(nv, nu)
            if corner_ao:
                edge = np.minimum(np.minimum(U, su - U), np.minimum(V, sv - V))
                S = S * (1 - 0.3 * np.exp(-edge / 0.12))
            S = cv2.GaussianBlur(S.astype(np.float32), (0, 0), 0.8)
            img = self.atlas.image(tex)
            S = cv2.resize(S, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
            img *= np.clip(S, 0, 1)[..., None] ** (1 / 2.2)


def _front_face(normal) -> int:
    axis = int(np.argmax(np.abs(normal)))
    return 2 * axis + int(normal[axis] > 0)


def _wall_box(room: Box, face: int, u: float, v: float, width: float, height: float, depth: float, mats, **kw):
    """A box standing out ``depth`` from a room wall, centred at wall coordinates (u, v)."""
    p, n = room.face_points(face, np.array([u]), np.array([v]))
    centre = p[0] + n * depth / 2
    axis = int(np.argmax(np.abs(n)))
    size = (depth, width, height) if axis == 0 else (width, depth, height)
    return Box(centre, size, mats, **kw), _front_face(n)


def _paint_room_wall(rng, h, w, size, base_recipe, base_args, posters, door):
    """Wall canvas: a base finish, a skirting board, optional door and posters (all painted)."""
    img = base_recipe(rng, h, w, size, *base_args)
    t = (size[0] / h, size[1] / w)
    H = size[0]
    _rect(img, 0, H - 0.09, size[1], H, (0.92, 0.91, 0.88), t)
    if door is not None:
        dh, dw = canvas_dims(2.05, 0.9, t[1])
        _rect(img, door - 0.5, H - 2.12, door + 0.5, H, (0.9, 0.89, 0.86), t)
        panel = cv2.resize(tex_door_panel(rng, dh, dw, (2.05, 0.9), (0.55, 0.36, 0.2)),
                           (int(round(0.9 / t[1])), int(round(2.05 / t[0]))))
        r0, c0 = int(round((H - 2.05) / t[0])), int(round((door - 0.45) / t[1]))
        img[r0:r0 + panel.shape[0], c0:c0 + panel.shape[1]] = panel[:h - r0, :w - c0]
    for (pu, pv, pw, ph) in posters:
        ch, cw = canvas_dims(ph, pw, t[1])
        poster = cv2.resize(tex_poster(rng, ch, cw, (ph, pw)), (max(1, int(round(pw / t[1]))), max(1, int(round(ph / t[0])))),
                            interpolation=cv2.INTER_AREA)
        r0, c0 = int(round((H - pv - ph / 2) / t[0])), int(round((pu - pw / 2) / t[1]))
        img[r0:r0 + poster.shape[0], c0:c0 + poster.shape[1]] = poster
    return img


def _floor_tex(rng, h, w, size, kind, base, rug):
    img = tex_planks(rng, h, w, size, base) if kind == 0 else tex_tiles(rng, h, w, size, base)
    if rug is not None:
        x0, y0, x1, y1 = rug      # metric rectangle, y measured down from the top edge
        t = (size[0] / h, size[1] / w)
        r0, r1, c0, c1 = (int(round(y0 / t[0])), int(round(y1 / t[0])), int(round(x0 / t[1])), int(round(x1 / t[1])))
        X, Y = _grid_coords(r1 - r0, c1 - c0, t)
        c_a, c_b = rng.uniform(0.2, 0.7, 3).astype(np.float32), rng.uniform(0.5, 0.9, 3).astype(np.float32)
        pat = np.abs(np.sin(9 * X + 9 * Y)) * np.abs(np.sin(9 * X - 9 * Y))
        rugimg = _lerp(c_a, c_b, _smoothstep(0.3, 0.5, pat))
        bw = 0.12
        border = (np.minimum(np.minimum(X, X[0, -1] - X), np.minimum(Y, Y[-1, 0] - Y)) < bw)
        rugimg[np.broadcast_to(border, rugimg.shape[:2])] = c_a * 0.6
        rugimg *= (1 + 0.1 * _fbm(rng, r1 - r0, c1 - c0, (y1 - y0, x1 - x0), 30.0, 3))[..., None]
        img[r0:r1, c0:c1] = rugimg
    return img


def build_room(seed: int, texel: float = 0.004) -> Scene:
    """A furnished room ~5 x 4 x 2.6 m (floor z = 0, corner at the origin), 7-Scenes style."""
    b = _Builder(seed, texel)
    rng = b.rng
    X, Y, Z = rng.uniform(4.6, 5.4), rng.uniform(3.6, 4.4), rng.uniform(2.5, 2.8)
    room = b.add(Box((X / 2, Y / 2, Z / 2), (X, Y, Z), 0, inward=True))
    white = b.material(tex_plaster, (1, 1), (0.9, 0.89, 0.86))
    wood_light = b.material(tex_wood, (1, 1), (0.72, 0.55, 0.36))
    wood_dark = b.material(tex_wood, (1, 1), (0.42, 0.27, 0.16))
    metal = b.material(tex_noisy, (1, 1), (0.35, 0.36, 0.38), 0.1, 2.0)

    # table in the middle with a rug under it
    tx, ty, tyaw = X / 2 + rng.uniform(-0.4, 0.4), Y / 2 + rng.uniform(-0.3, 0.3), rng.uniform(-0.35, 0.35)
    rug = (tx - 1.3, Y - ty - 1.0, tx + 1.3, Y - ty + 1.0)
    b.face_material(room, 4, _floor_tex, int(rng.integers(2)),
                    _tint(rng, (0.7, 0.5, 0.32) if rng.random() < 0.6 else (0.75, 0.74, 0.7)), rug, bake=True, corner_ao=True)
    b.face_material(room, 5, tex_plaster, (0.93, 0.93, 0.92), bake=True, corner_ao=True)

    # walls: 0 (x=0), 1 (x=X), 2 (y=0), 3 (y=Y); roles are shuffled per seed
    roles = rng.permutation(["window", "sofa", "door", "shelf"])
    for face, role in zip(range(4), roles):
        su = room.face_size(face)[1]
        if role == "window":
            b.face_material(room, face, _paint_room_wall, tex_bricks,
                            (_tint(rng, (0.55, 0.28, 0.2) if rng.random() < 0.5 else (0.85, 0.84, 0.8)),), [], None,
                            bake=True, corner_ao=True)
            wu = su / 2 + rng.uniform(-0.4, 0.4)
            win_mat = b.material(tex_window_view, (1.1, 1.3), emit=1.5, detail=0.0)
            box, front = _wall_box(room, face, wu, 1.55, 1.3, 1.1, 0.05, white)
            box.mats[front] = win_mat
            box.no_shadow = True
            b.add(box)
            b.add(_wall_box(room, face, wu, 1.0, 1.45, 0.05, 0.16, white)[0])        # sill
            b.add(_wall_box(room, face, wu, 0.45, 0.9, 0.5, 0.08, b.material(tex_wallpaper, (0.5, 0.5), (0.9, 0.9, 0.9), (0.7, 0.7, 0.7)))[0])
        elif role == "sofa":
            b.face_material(room, face, _paint_room_wall, tex_wallpaper,
                            (_tint(rng, (0.75, 0.7, 0.6)), _tint(rng, (0.55, 0.45, 0.4))), [], None, bake=True, corner_ao=True)
            _add_sofa(b, room, face, su / 2 + rng.uniform(-0.3, 0.3))
            for k, du in enumerate((-0.55, 0.55)):
                pic_mat = b.material(tex_painting, (0.5, 0.4), _tint(rng, (0.3, 0.2, 0.12)), detail=0.02)
                box, front = _wall_box(room, face, su / 2 + du, 1.55 + 0.1 * k, 0.4 + 0.1 * k, 0.5, 0.03, wood_dark)
                box.mats[front] = pic_mat
                b.add(box)
        elif role == "door":
            posters = [(su * 0.62 + 0.7 * k, 1.5 + rng.uniform(-0.1, 0.1), 0.6, 0.85) for k in range(2)]
            b.face_material(room, face, _paint_room_wall, tex_plaster, (_tint(rng, (0.8, 0.78, 0.72)),), posters,
                            su * 0.18, bake=True, corner_ao=True)
            box, front = _wall_box(room, face, su * 0.42, 0.95, 0.9, 1.9, 0.45, wood_light)
            box.mats[front] = b.material(tex_door_panel, (1.9, 0.9), (0.72, 0.55, 0.36))
            b.add(box)
            box, front = _wall_box(room, face, su * 0.42, 2.15, 0.6, 0.35, 0.03, wood_dark)
            box.mats[front] = b.material(tex_painting, (0.35, 0.6), (0.15, 0.1, 0.08), detail=0.02)
            b.add(box)
        else:
            posters = [(su * 0.8, 1.6, 0.5, 0.7)]
            b.face_material(room, face, _paint_room_wall, tex_plaster, (_tint(rng, (0.62, 0.72, 0.7)),), posters, None,
                            bake=True, corner_ao=True)
            _add_bookshelf(b, room, face, su * 0.35, wood_light)
            box, front = _wall_box(room, face, su * 0.62, 1.45, 0.7, 0.5, 0.02, wood_light)
            box.mats[front] = b.material(tex_corkboard, (0.5, 0.7), detail=0.03)
            b.add(box)

    _add_table(b, tx, ty, tyaw, Z, wood_dark, white, metal)
    # corner props: floor lamp, plant, stacked boxes, bin
    corners = rng.permutation([(0.35, 0.35), (X - 0.35, 0.35), (0.35, Y - 0.35), (X - 0.35, Y - 0.35)])
    shade = b.material(tex_fabric, (0.5, 0.5), (0.95, 0.88, 0.7), emit=1.1, detail=0.0)
    lx, ly = corners[0]
    b.add(Cylinder((lx, ly), 0.15, 0.0, 0.04, metal))
    b.add(Cylinder((lx, ly), 0.015, 0.04, 1.45, metal))
    lamp = b.add(Cylinder((lx, ly), 0.2, 1.45, 1.75, shade))
    lamp.no_shadow = True
    px, py = corners[1]
    b.add(Cylinder((px, py), 0.18, 0.0, 0.4, b.material(tex_noisy, (0.5, 0.5), (0.6, 0.3, 0.2), 0.1, 4.0), offs=b.offs(3)))
    leaves = b.material(tex_leaves, (1, 1))
    b.add(Sphere((px, py, 0.75), 0.38, leaves, offs=b.offs(1)))
    b.add(Sphere((px + 0.1, py - 0.05, 1.05), 0.25, leaves, offs=b.offs(1)))
    bx, by = corners[2]
    cb = b.material(tex_cardboard, (0.5, 0.5))
    z = 0.0
    for k in range(int(rng.integers(2, 4))):
        sz = rng.uniform(0.3, 0.5, 3) * (1, 1, 0.8)
        b.add(Box((bx + rng.uniform(-0.05, 0.05), by + rng.uniform(-0.05, 0.05), z + sz[2] / 2), sz, cb,
                  yaw=rng.uniform(-0.4, 0.4), offs=b.offs(6)))
        z += sz[2]
    cx, cy = corners[3]
    b.add(Cylinder((cx, cy), 0.16, 0.0, 0.38, b.material(tex_noisy, (0.5, 0.5), (0.25, 0.4, 0.6), 0.06, 3.0), offs=b.offs(3)))

    lights = [PointLight((X / 3, Y / 2, Z - 0.3), (1.0, 0.95, 0.85), 0.8),
              PointLight((2 * X / 3, Y / 2, Z - 0.3), (1.0, 0.95, 0.85), 0.8),
              PointLight((lx, ly, 1.6), (1.0, 0.8, 0.55), 0.35, 1.2)]
    lamp_mat = b.material(tex_plaster, (0.3, 0.3), (1.0, 0.97, 0.9), emit=1.4, detail=0.0)
    for L in lights[:2]:
        fix = b.add(Cylinder(L.pos[:2], 0.22, Z - 0.06, Z, lamp_mat))
        fix.no_shadow = True
    return b.finish("room", lights, (0.33, 0.32, 0.3), bake_step=0.04,
                    cam_region=((0.9, 0.9, 1.2), (X - 0.9, Y - 0.9, 1.75)),
                    view={"pitch": (-0.6, 0.05), "yaw_step": 1.2, "step": (0.5, 1.4), "jitter_t": 0.003},
                    bounds=((0, 0, 0), (X, Y, Z)))


def _add_sofa(b: _Builder, room: Box, face: int, u: float):
    fab = b.material(tex_fabric, (0.6, 0.6), _tint(b.rng, (0.3, 0.38, 0.5), 0.3))
    cushion = b.material(tex_fabric, (0.4, 0.4), _tint(b.rng, (0.7, 0.55, 0.3), 0.3))
    for (du, v, w, h, d, off, m) in ((0, 0.22, 2.0, 0.42, 0.85, 0.0, fab), (0, 0.65, 2.0, 0.45, 0.2, 0.0, fab),
                                      (-0.9, 0.55, 0.2, 0.25, 0.85, 0.0, fab), (0.9, 0.55, 0.2, 0.25, 0.85, 0.0, fab),
                                      (-0.4, 0.6, 0.4, 0.35, 0.12, 0.2, cushion), (0.4, 0.6, 0.4, 0.35, 0.12, 0.2, cushion)):
        box, _ = _wall_box(room, face, u + du, v, w, h, d, m, offs=b.offs(6))
        if off:   # cushions lean on the back rest
            p, n = room.face_points(face, np.array([u + du]), np.array([v]))
            box.c = p[0] + n * (off + d / 2)
        b.add(box)


def _add_bookshelf(b: _Builder, room: Box, face: int, u: float, wood: int):
    W, H, D = 1.0, 1.9, 0.32
    p, n = room.face_points(face, np.array([u]), np.array([0.0]))
    axis = int(np.argmax(np.abs(n)))
    along = np.zeros(3)
    along[1 - axis] = 1.0
    base = p[0]

    def box(du, z, w, h, d, mats, back=0.0):
        c = base + along * du + n * (back + d / 2)
        c[2] = z + h / 2
        size = (d, w, h) if axis == 0 else (w, d, h)
        return b.add(Box(c, size, mats, offs=b.offs(6)))
    box(0, 0, W, H, 0.02, wood)
    for s in (-1, 1):
        box(s * (W / 2 - 0.015), 0, 0.03, H, D, wood)
    shelves = np.linspace(0.05, H - 0.03, 6)
    for z in shelves:
        box(0, z, W - 0.06, 0.025, D, wood)
    books = [b.material(tex_books, (0.3, 0.6), detail=0.03) for _ in range(3)]
    for k, z in enumerate(shelves[:-1]):
        fill = b.rng.uniform(0.5, 0.95)
        hgt = b.rng.uniform(0.2, 0.28)
        bx = box(-(W - 0.06) / 2 + fill * (W - 0.06) / 2, z + 0.025, fill * (W - 0.06), hgt, b.rng.uniform(0.17, 0.24),
                 books[k % 3], back=0.02)
        bx.offs[:, 0] = b.rng.uniform(0, 0.3)


def _add_table(b: _Builder, tx, ty, yaw, Z, wood, white, metal):
    rng = b.rng
    c, s = math.cos(yaw), math.sin(yaw)

    def at(dx, dy):
        return tx + c * dx - s * dy, ty + s * dx + c * dy
    b.add(Box((tx, ty, 0.74), (1.4, 0.8, 0.04), wood, yaw=yaw, offs=b.offs(6)))
    for dx in (-0.64, 0.64):
        for dy in (-0.34, 0.34):
            b.add(Box((*at(dx, dy), 0.36), (0.05, 0.05, 0.72), wood, yaw=yaw, offs=b.offs(6)))
    seat = b.material(tex_noisy, (0.5, 0.5), _tint(rng, (0.2, 0.45, 0.35), 0.3), 0.12, 4.0)
    for side in (-1, 1):   # two chairs facing the table
        cx, cy = at(rng.uniform(-0.3, 0.3), side * 0.65)
        b.add(Box((cx, cy, 0.45), (0.45, 0.45, 0.04), seat, yaw=yaw, offs=b.offs(6)))
        bx, by = at(0, side * 0.86)
        bx, by = bx + (cx - at(0, side * 0.65)[0]), by + (cy - at(0, side * 0.65)[1])
        b.add(Box((bx, by, 0.7), (0.45, 0.03, 0.46), seat, yaw=yaw, offs=b.offs(6)))
        for dx in (-0.2, 0.2):
            for dy in (-0.2, 0.2):
                lx, ly = cx + c * dx - s * dy, cy + s * dx + c * dy
                b.add(Cylinder((lx, ly), 0.018, 0.0, 0.43, metal))
    # things on the table: books, a laptop-like slab, a mug, a vase, a ball
    top = 0.76
    for k in range(int(rng.integers(2, 4))):
        h = rng.uniform(0.03, 0.06)
        cover = b.material(tex_poster, (0.28, 0.2), detail=0.02)
        bx, by = at(rng.uniform(-0.55, -0.15), rng.uniform(-0.2, 0.2))
        bk = b.add(Box((bx, by, top + h / 2), (0.2, 0.28, h), white, yaw=yaw + rng.uniform(-0.5, 0.5)))
        bk.mats[5] = cover
        top_k = top + h
        top = top_k if k == 0 else top
    lx, ly = at(rng.uniform(0.1, 0.4), rng.uniform(-0.15, 0.1))
    b.add(Box((lx, ly, 0.77), (0.34, 0.24, 0.02), metal, yaw=yaw + rng.uniform(-0.3, 0.3)))
    mug = b.material(tex_noisy, (0.3, 0.3), _tint(rng, (0.8, 0.2, 0.15), 0.3), 0.05, 5.0)
    mx, my = at(0.55, rng.uniform(-0.25, 0.25))
    b.add(Cylinder((mx, my), 0.04, 0.76, 0.86, mug, offs=b.offs(3)))
    vx, vy = at(rng.uniform(-0.1, 0.1), rng.uniform(0.15, 0.28))
    b.add(Cylinder((vx, vy), 0.07, 0.76, 1.0, b.material(tex_painting, (0.5, 0.45), (0.2, 0.3, 0.5)), offs=b.offs(3)))
    sx, sy = at(rng.uniform(0.3, 0.55), 0.27)
    b.add(Sphere((sx, sy, 0.87), 0.11, b.material(tex_poster, (0.35, 0.7)), offs=b.offs(1)))


# ---- street -----------------------------------------------------------------------------------
def tex_facade(rng, h, w, size, base_kind, base_col, trim_col, glass_col, shop):
    """A building front: masonry, a grid of windows per storey, cornices, optional shop front + sign."""
    H, Wm = size
    t = (H / h, Wm / w)
    if base_kind == 0:
        img = tex_bricks(rng, h, w, size, base_col)
    elif base_kind == 1:
        img = tex_bricks(rng, h, w, size, base_col, mortar=np.asarray(base_col) * 0.82, brick=(0.6, 0.3), joint=0.012,
                         vary=0.35)
    else:                                           # rendered plaster with ashlar grooves and stains
        img = tex_plaster(rng, h, w, size, base_col)
        X, Y = _grid_coords(h, w, t)
        groove = np.minimum(np.abs(((Y + 0.25) % 0.5) - 0.25), np.abs(((X + (np.floor(Y / 0.5) % 2) * 0.6) % 1.2) - 0.6))
        img *= (1 - 0.18 * _smoothstep(0.012, 0.004, groove))[..., None]
        img *= (1 + 0.1 * _fbm(rng, h, w, size, 0.4, 5))[..., None]
    dirt = _smoothstep(0.0, 3.0, np.linspace(0, H, h, dtype=np.float32))[:, None, None]   # darker near the ground
    img *= 0.85 + 0.15 * dirt[::-1]
    ground = rng.uniform(3.6, 4.3)
    storey = rng.uniform(3.0, 3.4)
    bay = rng.uniform(2.3, 3.1)
    win_w, win_h = min(bay - 0.9, rng.uniform(1.0, 1.4)), rng.uniform(1.5, 1.9)
    n_bays = max(1, int(Wm // bay))
    x_margin = (Wm - n_bays * bay) / 2
    z = ground
    while z + storey < H - 0.6:
        _rect(img, 0, H - z - 0.18, Wm, H - z, trim_col, t)                       # string course
        for j in range(n_bays):
            cx = x_margin + (j + 0.5) * bay
            _window(img, rng, cx - win_w / 2, H - (z + 0.9 + win_h), win_w, win_h, trim_col, glass_col, t)
        z += storey
    _rect(img, 0, 0, Wm, 0.5, trim_col, t)                                         # parapet
    _rect(img, 0, 0.5, Wm, 0.62, np.asarray(trim_col) * 0.7, t)
    if shop:
        _rect(img, 0, H - ground, Wm, H - ground + 0.7, rng.uniform(0.05, 0.6, 3), t)   # sign board
        word = " ".join(_WORDS[i] for i in rng.integers(len(_WORDS), size=rng.integers(1, 3)))
        hp = min(0.42 / t[0], 0.8 * Wm / t[1] / max(_text_width(word, 1.0), 1))
        _put_text(img, word, 0.1 * Wm / t[1], (H - ground + 0.56) / t[0], hp, (0.97, 0.95, 0.85))
        door = rng.uniform(0.15, 0.75) * Wm
        for x0, x1 in ((0.25, door - 0.8), (door + 0.8, Wm - 0.25)):
            if x1 - x0 > 0.6:
                _window(img, rng, x0, H - ground + 0.85, x1 - x0, ground - 1.45, trim_col, glass_col, t, shop=True)
        _rect(img, door - 0.65, H - 2.4, door + 0.65, H, (0.12, 0.1, 0.09), t)
        _rect(img, door - 0.55, H - 2.3, door + 0.55, H, np.asarray(glass_col) * 0.7, t)
    else:
        for j in range(n_bays):
            cx = x_margin + (j + 0.5) * bay
            _window(img, rng, cx - win_w / 2, H - (0.9 + win_h), win_w, win_h, trim_col, glass_col, t)
    return np.clip(img, 0, 1)


def _window(img, rng, x0, y0, ww, wh, trim, glass, t, shop=False):
    """One window (metric rect, y down from the top): frame, reflective glass, mullions, sill, blinds."""
    f = 0.08
    _rect(img, x0 - f, y0 - f, x0 + ww + f, y0 + wh + f, trim, t)
    r0, r1 = int(round(y0 / t[0])), int(round((y0 + wh) / t[0]))
    c0, c1 = int(round(x0 / t[1])), int(round((x0 + ww) / t[1]))
    if r1 <= r0 or c1 <= c0:
        return
    gy = np.linspace(0, 1, r1 - r0, dtype=np.float32)[:, None]
    gx = np.linspace(0, 1, c1 - c0, dtype=np.float32)[None, :]
    refl = 0.75 + 0.5 * np.clip(1 - gy * 1.3 + 0.3 * gx + 0.2 * rng.uniform(-1, 1), 0, 1)
    streak = np.sin((gx * 3 + gy * 2) * 6 + rng.uniform(0, 6)) * 0.08
    g = np.asarray(glass, np.float32) * (refl + streak)[..., None]
    if not shop and rng.random() < 0.35:       # blinds or curtains behind the glass
        cover = rng.uniform(0.2, 0.8)
        g[: int(cover * (r1 - r0))] = rng.uniform(0.5, 0.9, 3) * (0.85 + 0.15 * (np.arange(int(cover * (r1 - r0)))[:, None, None] % 6 < 3))
    if shop:                                   # goods on display shelves behind the glass
        hh, ww_px = r1 - r0, c1 - c0
        for shelf in (0.55, 0.78):
            y = int(shelf * hh)
            g[y:y + max(1, hh // 60)] *= 0.5
            x = 0
            while x < ww_px:
                bw, bh = int(rng.uniform(0.02, 0.07) * ww_px) + 1, int(rng.uniform(0.08, 0.18) * hh) + 1
                g[max(0, y - bh):y, x:x + bw] = _lerp(g[max(0, y - bh):y, x:x + bw], rng.uniform(0.1, 0.95, 3).astype(np.float32), 0.75)
                x += bw + int(rng.uniform(0, 0.03) * ww_px)
    img[r0:r1, c0:c1] = g
    m = 0.05
    _rect(img, x0 + ww / 2 - m / 2, y0, x0 + ww / 2 + m / 2, y0 + wh, trim, t)
    if not shop:
        _rect(img, x0, y0 + wh * 0.35 - m / 2, x0 + ww, y0 + wh * 0.35 + m / 2, trim, t)
    _rect(img, x0 - f - 0.06, y0 + wh + f, x0 + ww + f + 0.06, y0 + wh + f + 0.1, np.asarray(trim) * 0.85, t)


def tex_street_ground(rng, h, w, size, x0, road_half, walk_half, crossings):
    """Road (asphalt, lane markings, zebra crossings) between two paved sidewalks; x along the width
    starts at world x = ``x0``, y across (top row = +y side)."""
    H, Wm = size
    t = (H / h, Wm / w)
    X, Yd = _grid_coords(h, w, t)
    Y = H / 2 - Yd                                   # world y of each row
    road = tex_asphalt(rng, h, w, size)
    walk = tex_paving(rng, h, w, size)
    img = np.where((np.abs(Y) < road_half)[..., None], road, walk)
    xw = X + x0
    paint = np.float32([0.92, 0.92, 0.88])
    dash = (np.abs(Y) < 0.06) & ((xw % 6.0) < 3.0)
    edge = np.abs(np.abs(Y) - (road_half - 0.35)) < 0.06
    zebra = np.zeros((h, w), bool)
    for xc in crossings:
        zebra |= (np.abs(xw - xc) < 2.0) & (np.abs(Y) < road_half - 0.5) & ((Y % 1.0) < 0.5)
    mark = (dash | edge | zebra).astype(np.float32)
    wear = np.clip(0.75 + 0.4 * _fbm(rng, h, w, size, 2.0, 4), 0, 1)
    img = _lerp(img, paint, mark * wear)
    for xc in rng.uniform(0, Wm, 6):                # manhole covers
        yc = rng.uniform(-road_half + 1, road_half - 1)
        r = ((X - xc) ** 2 + (Y - yc) ** 2) ** 0.5
        cover = _smoothstep(0.34, 0.32, r)
        ring = 0.8 + 0.2 * (np.sin(r * 60) > 0)
        img = _lerp(img, np.float32([0.25, 0.24, 0.22]) * ring[..., None], cover)
    return np.clip(img, 0, 1)


def tex_backdrop(rng, h, w, size, horizon):
    """Panorama on the far enclosure: sky with clouds, hazy distant buildings and trees, ground."""
    H, Wm = size
    t = (H / h, Wm / w)
    X, Yd = _grid_coords(h, w, t)
    Z = H - Yd + horizon[0]                       # world height of each row (rows from the top)
    el = np.clip((Z - horizon[1]) / 60.0, 0, 1)
    sky = _lerp(np.float32([0.78, 0.85, 0.92]), np.float32([0.35, 0.55, 0.85]), np.broadcast_to(el ** 0.6, (h, w)))
    clouds = _smoothstep(0.2, 1.2, _fbm(rng, h, w, size, 0.02, 6, stretch=(3.0, 1.0)))
    img = _lerp(sky, np.float32([0.97, 0.97, 0.97]), clouds * (Z > 8))
    haze = np.float32([0.7, 0.76, 0.82])
    xs = 0.0
    skyline = np.zeros(w, np.float32)
    while xs < Wm:                                 # distant building silhouettes
        bw, bh = rng.uniform(8, 30), rng.uniform(6, 35)
        c0, c1 = int(xs / t[1]), int(min(Wm, xs + bw) / t[1])
        skyline[c0:c1] = bh
        xs += bw + rng.uniform(0, 6)
    trees = 4 + 6 * np.clip(0.5 + 0.5 * _fbm(rng, 1, w, (1, Wm), 0.05, 5)[0], 0, 1)
    bld = (Z - horizon[1] < skyline[None, :]) & (Z > horizon[1] - 2)
    bcol = _lerp(np.float32([0.45, 0.47, 0.52]), haze, 0.55)
    winmask = ((X % 3.0) < 1.2) & ((Z % 3.5) < 1.6)
    img = np.where(bld[..., None], bcol * (1 - 0.12 * winmask)[..., None], img)
    tr = (Z - horizon[1] < trees[None, :]) & (Z > horizon[1] - 2)
    tcol = _lerp(np.float32([0.16, 0.26, 0.14]), haze, 0.45) * (1 + 0.25 * _fbm(rng, h, w, size, 0.3, 5))[..., None]
    img = np.where(tr[..., None], tcol, img)
    low = Z < horizon[1] - 2
    img = np.where(low[..., None], np.float32([0.42, 0.43, 0.4]), img)
    return np.clip(img, 0, 1)


def build_street(seed: int, texel: float = 0.02) -> Scene:
    """A ~60 m street along x (y = 0 on its axis, ground z = 0): road, sidewalks, facades on both sides,
    trees, lamp posts, a far backdrop, and moving pedestrians/cars (``Scene.actors``)."""
    b = _Builder(seed, texel)
    rng = b.rng
    L = rng.uniform(50, 70)
    road_half, walk_half, depth = 4.0, 7.5, 12.0
    x_lo, x_hi = -25.0, L + 25.0
    ground = b.add(Box(((x_lo + x_hi) / 2, 0, -0.25), (x_hi - x_lo, 2 * walk_half, 0.5), 0))
    crossings = [x for x in (rng.uniform(5, L / 2), rng.uniform(L / 2, L - 5))]
    b.face_material(ground, 5, tex_street_ground, x_lo, road_half, walk_half, crossings, bake=True)
    far = b.material(tex_noisy, (8, 8), (0.4, 0.42, 0.36), 0.2, 0.5, texel=max(0.05, texel))
    b.add(Box((L / 2, 0, -0.3), (320, 320, 0.59), far, offs=b.offs(6)))
    granite = b.material(tex_noisy, (1, 1), (0.55, 0.55, 0.54), 0.12, 8.0)
    for s in (-1, 1):
        b.add(Box(((x_lo + x_hi) / 2, s * (road_half + 0.1), 0.06), (x_hi - x_lo, 0.2, 0.12), granite, offs=b.offs(6)))

    side_mats = [b.material(tex_bricks, (2, 2), (0.5, 0.3, 0.22)), b.material(tex_plaster, (2, 2), (0.75, 0.7, 0.6)),
                 b.material(tex_bricks, (2, 2), (0.7, 0.66, 0.58), (0.6, 0.58, 0.52), (0.6, 0.3), 0.012)]
    roof = b.material(tex_noisy, (2, 2), (0.3, 0.3, 0.32), 0.2, 2.0)
    for s in (-1, 1):
        x = x_lo
        while x < x_hi:
            bw, bh = rng.uniform(7, 16), rng.uniform(8, 20)
            bw = min(bw, x_hi - x) if x_hi - x > 5 else bw
            box = b.add(Box((x + bw / 2, s * (walk_half + depth / 2), bh / 2), (bw, depth, bh),
                            side_mats[int(rng.integers(3))], offs=b.offs(6)))
            box.mats[5] = roof
            _facade_on(b, box, 2 if s > 0 else 3, rng)
            x += bw + (rng.uniform(1.5, 3.5) if rng.random() < 0.25 else 0.0)
    for xe, face in ((x_lo - 6, 1), (x_hi + 6, 0)):                # buildings closing both ends
        box = b.add(Box((xe, 0, 8), (12, 2 * walk_half + 2 * depth, 16), side_mats[0], offs=b.offs(6)))
        box.mats[5] = roof
        _facade_on(b, box, face, rng)

    bark = b.material(tex_wood, (1, 1), (0.3, 0.22, 0.16))
    leaves = b.material(tex_leaves, (1.5, 1.5))
    metal = b.material(tex_noisy, (1, 1), (0.2, 0.21, 0.22), 0.1, 3.0)
    for s in (-1, 1):
        x = rng.uniform(0, 8)
        while x < L + 10:
            if rng.random() < 0.7:
                r, h = rng.uniform(1.4, 2.1), rng.uniform(2.6, 3.4)
                b.add(Cylinder((x, s * 6.3), rng.uniform(0.12, 0.2), 0, h + r, bark, offs=b.offs(3)))
                b.add(Sphere((x, s * 6.3, h + r), r, leaves, offs=b.offs(1)))
                b.add(Sphere((x + rng.uniform(-0.8, 0.8), s * 6.3 + rng.uniform(-0.5, 0.5), h + r * 1.5), r * 0.7, leaves,
                             offs=b.offs(1)))
            else:
                b.add(Cylinder((x, s * 6.9), 0.07, 0, 5.5, metal))
                b.add(Box((x, s * 6.6, 5.5), (0.3, 0.8, 0.15), metal))
            x += rng.uniform(9, 15)
        for _ in range(3):                                              # benches and bins
            xb = rng.uniform(0, L)
            if rng.random() < 0.5:
                b.add(Box((xb, s * 7.0, 0.45), (1.6, 0.5, 0.08), bark, offs=b.offs(6)))
                b.add(Box((xb, s * 7.0, 0.2), (1.4, 0.4, 0.4), metal))
            else:
                b.add(Cylinder((xb, s * 7.1), 0.25, 0, 0.9, metal))

    R = 90.0                                             # far enclosure: keeps the scene bounded
    horizon = (-10.0, 1.7)
    bd = Cylinder((L / 2, 0), R, horizon[0], 90.0, 0, inward=True)
    bd.mats[0] = b.material(tex_backdrop, (90.0 - horizon[0], 2 * math.pi * R), horizon, emit=1.0, detail=0.0,
                            texel=max(0.25, texel * 10))
    bd.mats[1:] = b.material(tex_noisy, (60, 60), (0.5, 0.68, 0.9), 0.05, 0.02, emit=1.0, detail=0.0,
                             texel=max(0.5, texel * 20))
    bd.no_shadow = True
    b.add(bd)
    b.rng = np.random.default_rng([seed, 7])                             # actors do not shift the layout
    actors = _make_actors(b, L, road_half)
    az, el = rng.uniform(-1.9, -1.2), rng.uniform(0.6, 0.85)
    sun = ((math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)), (1.05, 0.97, 0.86))
    return b.finish("street", [], (0.42, 0.46, 0.55), sun=sun, bake_step=max(0.2, texel * 5),
                    cam_region=((12.0, -4.5, 1.5), (L - 12.0, 4.5, 1.9)),
                    view={"pitch": (-0.08, 0.35), "side_yaw": 1.0, "step": (1.5, 3.5), "jitter_t": 0.01},
                    actors=actors, bounds=((x_lo, -walk_half - depth, 0.0), (x_hi, walk_half + depth, 20.0)))


def _facade_on(b: _Builder, box: Box, face: int, rng):
    kind = int(rng.integers(3))
    base = [(0.55, 0.3, 0.22), (0.78, 0.74, 0.64), (0.86, 0.8, 0.68)][kind]
    b.face_material(box, face, tex_facade, kind, _tint(rng, base, 0.12), _tint(rng, (0.9, 0.88, 0.82), 0.05),
                    _tint(rng, (0.25, 0.3, 0.36), 0.2), bool(rng.random() < 0.6), bake=True)


def _make_actors(b: _Builder, L: float, road_half: float) -> list:
    """Pedestrians (legs, torso, head) on the sidewalks and cars on the two lanes; transient."""
    rng = b.rng
    skin = [b.material(tex_noisy, (0.4, 0.4), c, 0.05, 5.0) for c in ((0.85, 0.68, 0.55), (0.55, 0.38, 0.28), (0.95, 0.8, 0.7))]
    cloth = [b.material(tex_fabric, (0.5, 0.5), rng.uniform(0.05, 0.9, 3)) for _ in range(6)]
    paint = [b.material(tex_noisy, (1, 1), rng.uniform(0.05, 0.9, 3), 0.04, 1.0) for _ in range(4)]
    glass = b.material(tex_noisy, (1, 1), (0.12, 0.14, 0.17), 0.1, 2.0)
    tyre = b.material(tex_noisy, (1, 1), (0.06, 0.06, 0.06), 0.1, 4.0)
    actors = []
    for _ in range(int(rng.integers(10, 16))):
        y = float(rng.choice([-1, 1]) * rng.uniform(road_half + 0.6, 7.0))
        hgt, r = rng.uniform(1.55, 1.9), rng.uniform(0.17, 0.24)
        legs, torso, head = int(rng.integers(6)), int(rng.integers(6)), int(rng.integers(3))

        def make(x, y=y, hgt=hgt, r=r, legs=legs, torso=torso, head=head):
            return [Cylinder((x, y), r * 0.8, 0.0, 0.48 * hgt, cloth[legs], transient=True),
                    Cylinder((x, y), r, 0.48 * hgt, 0.86 * hgt, cloth[torso], transient=True),
                    Sphere((x, y, 0.93 * hgt), 0.075 * hgt, skin[head], transient=True)]
        actors.append({"x0": rng.uniform(-20, L + 20), "y": y, "speed": float(rng.choice([-1, 1]) * rng.uniform(0.9, 1.6)),
                       "radius": r, "x_min": -20.0, "x_max": L + 20.0, "make": make})
    for _ in range(int(rng.integers(3, 6))):
        lane = float(rng.choice([-1, 1]))
        col = int(rng.integers(4))

        def make(x, y=lane * 2.0, col=col):
            body = Box((x, y, 0.6), (4.2, 1.8, 0.7), paint[col], transient=True)
            cabin = Box((x - 0.3, y, 1.22), (2.3, 1.6, 0.55), glass, transient=True)
            cabin.mats[5] = paint[col]
            return [Box((x, y, 0.15), (3.6, 1.7, 0.3), tyre, transient=True), body, cabin]
        actors.append({"x0": rng.uniform(-20, L + 20), "y": lane * 2.0, "speed": lane * rng.uniform(5, 9),
                       "radius": 2.3, "x_min": -20.0, "x_max": L + 20.0, "make": make})
    return actors


def build_scene(kind: str, seed: int, focal: float | None = None) -> Scene:
    """Build the ``kind`` scene for ``seed``. Texel size grows when ``focal`` (px) is below the
    reference camera's, so small test images build quickly; the layout does not depend on it."""
    if kind not in KINDS:
        raise SyntheticError(f"unknown scene kind {kind!r} (choose from {', '.join(KINDS)})")
    f_ref = REF_CAMERA[kind][0]
    coarsen = max(1.0, f_ref / focal) if focal else 1.0
    return build_room(seed, 0.004 * coarsen) if kind == "room" else build_street(seed, 0.02 * coarsen)


# ==============================================================================================
# trajectories and exposure
# ==============================================================================================
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
    direction: B-splines through random yaw/pitch/roll waypoints. Plus small per-frame jitter."""
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


# ==============================================================================================
# writing the on-disk layouts
# ==============================================================================================
@dataclass
class _Job:
    split: str
    seq: int
    frame: int
    name: str            # relative path stem, e.g. seq-03/frame-000012 or seq3_frame00013
    c2w: np.ndarray      # (4, 4) OpenCV camera-to-world
    gain: float
    time_s: float
    noise_seed: tuple


_CTX: dict = {}          # scene / intrinsics / folders for the (forked) render workers


def _pose_text(c2w: np.ndarray, sep: str) -> str:
    return "".join(sep.join(f"{x:.9e}" for x in row) + "\n" for row in np.asarray(c2w, np.float64).reshape(4, 4))


def _write_png(path: Path, img: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    path.write_bytes(buf.tobytes())


def _render_job(job: _Job) -> str:
    scene, intr, data_dir = _CTX["scene"], _CTX["intr"], _CTX["data_dir"]
    trans = scene.transients_at(job.time_s, job.c2w[:3, 3]) if scene.actors else ()
    fr = scene.render(job.c2w, intr, gain=job.gain, transients=trans, noise_seed=job.noise_seed)
    bgr = np.ascontiguousarray(fr.rgb[..., ::-1])
    if scene.kind == "room":
        stem = data_dir / job.name
        _write_png(stem.with_name(stem.name + ".color.png"), bgr)
        _write_png(stem.with_name(stem.name + ".depth.png"), fr.depth_mm)
        stem.with_name(stem.name + ".pose.txt").write_text(_pose_text(job.c2w, "\t"))
    else:
        root = data_dir / job.split
        _write_png(root / "rgb" / f"{job.name}.png", bgr)
        _write_png(root / "semantic" / f"{job.name}.png", fr.mask)
        (root / "poses" / f"{job.name}.txt").write_text(_pose_text(job.c2w, " "))
        (root / "calibration" / f"{job.name}.txt").write_text(f"{intr.focal:.6f}\n")
    return job.name


def _prepare_output(out: Path, overwrite: bool) -> None:
    """Create ``out`` and the in-progress marker; refuse a non-empty folder unless allowed."""
    if out.exists() and not out.is_dir():
        raise SyntheticError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if (out / INCOMPLETE_MARKER).exists():
            _logger.warning("%s: an interrupted earlier run was detected (%s); regenerating", out, INCOMPLETE_MARKER)
        elif not overwrite:
            what = f"already holds a synthetic scene ({INFO_FILE})" if (out / INFO_FILE).exists() else "is not empty"
            raise SyntheticError(f"{out}: folder {what}; pass --overwrite to replace it")
        for child in out.iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / INCOMPLETE_MARKER).write_text("synthetic scene generation in progress; rerun the generator to redo it\n")


def _layout_dirs(kind: str, out: Path, layout: str, scene_name: str | None):
    """-> (data_dir, meta_dir, scene name) for the requested layout."""
    if layout == "single":
        name = scene_name or out.resolve().name
        return out, out, name
    name = scene_name or kind
    if kind == "room":
        return out / "deepslam_data" / "7Scenes" / name, out / "7Scenes" / name, name
    return out / "Cambridge" / name, out / "Cambridge" / name, name


def _plan(scene: Scene, seed: int, kind: str, n_train_seq, frames_per_seq, n_test_seq, test_frames) -> list[_Job]:
    """Sequence ids, trajectories and exposure for every frame (train first, so test sequences can be
    placed inside the region covered by the training cameras)."""
    ids = np.arange(1, n_train_seq + n_test_seq + 1)
    test_ids = set(np.random.default_rng([seed, 5]).choice(ids, n_test_seq, replace=False).tolist())
    jobs: list[_Job] = []
    train_pos = []
    for split in ("train", "test"):
        region = None
        if split == "test":
            p = np.concatenate(train_pos)
            lo, hi = p.min(0), p.max(0)
            region = (lo + 0.1 * (hi - lo), hi - 0.1 * (hi - lo))
        for sid in (int(i) for i in ids if (int(i) in test_ids) == (split == "test")):
            n = frames_per_seq if split == "train" else test_frames
            rng = np.random.default_rng([seed, 1, sid])
            c2w = make_trajectory(scene, rng, n, region)
            gains = exposure_walk(np.random.default_rng([seed, 2, sid]), n)
            if split == "train":
                train_pos.append(c2w[:, :3, 3])
            for i in range(n):
                name = f"seq-{sid:02d}/frame-{i:06d}" if kind == "room" else f"seq{sid}_frame{i + 1:05d}"
                jobs.append(_Job(split, sid, i, name, c2w[i], float(gains[i]), sid * 1000.0 + 0.8 * i, (seed, 4, sid, i)))
    return jobs


def generate(kind: str, out, *, seed: int = 0, width: int | None = None, height: int | None = None,
             n_train_seq: int = 3, frames_per_seq: int = 100, n_test_seq: int = 2, test_frames_per_seq: int = 50,
             layout: str = "single", scene_name: str | None = None, overwrite: bool = False,
             with_meta: bool = False, workers: int | None = None, progress: bool = True) -> dict:
    """Render a synthetic scene into ``out`` in the 7-Scenes (``room``) or Cambridge (``street``) layout.

    Returns the dict written to ``<out>/synthetic_info.json`` (written last: a folder without it, or
    with the ``.synthetic_incomplete`` marker, is incomplete and is regenerated on the next run).
    Raises :class:`SyntheticError` for bad arguments or an occupied output folder.
    """
    from tqdm import tqdm

    if layout not in LAYOUTS:
        raise SyntheticError(f"unknown layout {layout!r} (choose from {', '.join(LAYOUTS)})")
    for key, val, low in (("n_train_seq", n_train_seq, 1), ("frames_per_seq", frames_per_seq, 1),
                          ("n_test_seq", n_test_seq, 1), ("test_frames_per_seq", test_frames_per_seq, 1)):
        if int(val) < low:
            raise SyntheticError(f"{key} must be at least {low}, got {val}")
    if kind == "room" and frames_per_seq > 999999 or kind == "street" and frames_per_seq > 99999:
        raise SyntheticError(f"frames_per_seq={frames_per_seq} does not fit the frame-number width")
    intr = default_intrinsics(kind, width, height)
    out = Path(out)
    _prepare_output(out, overwrite)
    data_dir, meta_dir, name = _layout_dirs(kind, out, layout, scene_name)
    scene = build_scene(kind, seed, intr.focal)
    jobs = _plan(scene, seed, kind, n_train_seq, frames_per_seq, n_test_seq, test_frames_per_seq)
    for job in jobs:
        folder = (data_dir / job.name).parent if kind == "room" else data_dir / job.split
        for sub in ([""] if kind == "room" else ["rgb", "poses", "calibration", "semantic"]):
            (folder / sub).mkdir(parents=True, exist_ok=True)
    meta_dir.mkdir(parents=True, exist_ok=True)
    _render_all(scene, intr, data_dir, jobs, workers, progress, tqdm)
    G = _write_lists(kind, data_dir, name, jobs, intr, seed)
    if with_meta:
        _write_meta(kind, meta_dir, jobs, G)
    info = _info(kind, seed, layout, name, out, data_dir, meta_dir, intr, scene, jobs, G, with_meta)
    tmp = out / (INFO_FILE + ".tmp")
    tmp.write_text(json.dumps(info, indent=1) + "\n")
    os.replace(tmp, out / INFO_FILE)
    (out / INCOMPLETE_MARKER).unlink()
    return info


def _render_all(scene, intr, data_dir, jobs, workers, progress, tqdm) -> None:
    _CTX.update(scene=scene, intr=intr, data_dir=data_dir)
    workers = min(2, os.cpu_count() or 1) if workers is None else max(1, int(workers))
    bar = tqdm(total=len(jobs), desc=f"rendering {scene.kind} {intr.width}x{intr.height}", unit="frame",
               disable=not progress)
    try:
        if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
            # fork: workers inherit the scene (textures) without pickling it
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                for _ in pool.imap_unordered(_render_job, jobs, chunksize=2):
                    bar.update()
        else:
            for job in jobs:
                _render_job(job)
                bar.update()
    finally:
        bar.close()
        _CTX.clear()


def colmap_world_transform(seed: int) -> np.ndarray:
    """(4, 4) fixed random rigid transform G (no scale) of the COLMAP-style list: X_colmap = G · X_world."""
    g = torch.Generator().manual_seed(int(np.random.default_rng([seed, 3]).integers(2**31)))
    G = np.eye(4)
    G[:3, :3] = geometry.random_rotation(1, 180.0, generator=g)[0].numpy()
    G[:3, 3] = np.random.default_rng([seed, 3]).uniform(-3, 3, 3)
    return G


def _write_lists(kind, data_dir: Path, name: str, jobs, intr, seed):
    """Split files and COLMAP-style lists (room); returns G (room) or None."""
    if kind != "room":
        return None
    for split, fname in (("train", "TrainSplit.txt"), ("test", "TestSplit.txt")):
        seqs = sorted({j.seq for j in jobs if j.split == split})
        (data_dir / fname).write_text("".join(f"sequence{s}\n" for s in seqs))
    G = colmap_world_transform(seed)
    for split in ("train", "test"):
        sel = [j for j in jobs if j.split == split]
        c2w_colmap = torch.as_tensor(np.stack([G @ j.c2w for j in sel])[:, :3])
        w2c = geometry.invert_pose(c2w_colmap)
        q = geometry.rotmat_to_quat(w2c[:, :, :3]).numpy()
        t = w2c[:, :, 3].numpy()
        lines = [f"{j.name}.color.png " + " ".join(f"{x:.12g}" for x in (*q[i], *t[i])) + f" {intr.focal:.6f}\n"
                 for i, j in enumerate(sel)]
        (data_dir / f"{name}_{split}.txt").write_text("".join(lines))
    return G


def _write_meta(kind, meta_dir: Path, jobs, G) -> None:
    """Optional world_setup.json / pose_avg_stats*.txt with sensible values (loaders compute their own)."""
    from dataset_loaders import poses as P

    c2w = np.stack([j.c2w[:3] for j in jobs if j.split == "train"])
    P.save_pose_avg_stats(meta_dir / "pose_avg_stats.txt", P.average_poses(c2w))
    if kind == "room":
        w2c = np.linalg.inv(np.stack([G @ j.c2w for j in jobs if j.split == "train"]))[:, :3]
        P.save_pose_avg_stats(meta_dir / "pose_avg_stats_colmap.txt", P.average_poses(w2c))   # as the original: raw w2c
        ws = P.WorldSetup(near=0.0, far=3.0, pose_scale=0.5, pose_scale2=1.0, move_all_cam_vec=[0.0, 0.0, 1.0])
    else:
        ws = P.WorldSetup(near=0.0, far=10.0, pose_scale=0.25, pose_scale2=0.2, move_all_cam_vec=[0.0, 0.0, 0.0])
    ws.to_json(meta_dir / "world_setup.json")


def _info(kind, seed, layout, name, out, data_dir, meta_dir, intr, scene, jobs, G, with_meta) -> dict:
    def rel(p):
        return str(Path(os.path.relpath(p, out)))
    splits = {s: sorted({j.seq for j in jobs if j.split == s}) for s in ("train", "test")}
    info = {
        "generator": "nefes dataset_loaders.synthetic", "version": GENERATOR_VERSION, "kind": kind, "seed": seed,
        "layout": layout, "scene_name": name, "data_dir": rel(data_dir), "meta_dir": rel(meta_dir),
        "dataset_type": "7Scenes / 7Scenes_colmap" if kind == "room" else "Cambridge",
        "image_size": {"width": intr.width, "height": intr.height},
        "intrinsics": {"focal_px": intr.focal, "cx": intr.width / 2, "cy": intr.height / 2,
                       "pixel_rays": "pixel (u, v) looks along ((u - cx)/f, (v - cy)/f, 1) in OpenCV camera axes"},
        "sequences": splits,
        "frames": {s: sum(j.split == s for j in jobs) for s in ("train", "test")},
        "world_frame": "metres, z up; pose files hold camera-to-world 4x4 with OpenCV camera axes",
        "scene_bounds_m": [list(map(float, scene.bounds[0])), list(map(float, scene.bounds[1]))],
        "camera_region_m": [list(map(float, scene.cam_region[0])), list(map(float, scene.cam_region[1]))],
        "exposure": {"range": list(EXPOSURE_RANGE), "model": "8bit = 255 * clip(gain * vignette * radiance)^(1/2.2) + noise",
                     "gains": {j.name: round(j.gain, 6) for j in jobs}},
        "with_meta": with_meta,
    }
    if kind == "room":
        info["depth"] = {"file": "frame-NNNNNN.depth.png", "dtype": "uint16", "units": "mm", "kind": "z-depth",
                         "invalid": 65535}
        info["colmap_list"] = {
            "files": [f"{name}_train.txt", f"{name}_test.txt"],
            "line": "<image> qw qx qy qz tx ty tz f : world-to-camera (x_cam = R x_colmap + t), Hamilton, OpenCV axes",
            "world_transform": np.round(G, 12).tolist(),
            "meaning": "X_colmap = G · X_world, so c2w_colmap = G · c2w (rigid, no scale)"}
    else:
        info["semantic"] = {"static": 255, "transient": 0, "transient_objects": "pedestrians and cars (move per frame)"}
        info["calibration"] = "one number per image: focal in pixels"
    return info
