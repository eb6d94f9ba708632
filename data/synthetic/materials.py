"""Material recipes: ``recipe(rng, h, w, size, *args) -> (h, w, 3)`` sRGB canvas in [0, 1] (row 0 = top)
covering ``size`` = (height_m, width_m). Generic surfaces tile with that period; the facade, street
ground and backdrop recipes paint one whole surface."""
from __future__ import annotations

import cv2
import numpy as np

from data.synthetic.patterns import (WORDS, fbm, fill_rect, grid_coords, lerp, paint, put_text,
                                                 smoothstep, text_width)


def tex_plaster(rng, h, w, size, color):
    n = fbm(rng, h, w, size, 1.5, 6) * 0.06 + fbm(rng, h, w, size, 0.3, 2) * 0.05
    return np.clip(np.asarray(color, np.float32) * (1 + n)[..., None], 0, 1)


def tex_wallpaper(rng, h, w, size, c1, c2):
    X, Y = grid_coords(h, w, (size[0] / h, size[1] / w))
    period = rng.uniform(0.12, 0.2)
    stripes = smoothstep(0.2, 0.35, np.abs(np.sin(np.pi * X / period)))
    mx, my = X / period * 2, Y / period * 2
    motif = np.clip(np.abs(np.sin(np.pi * (mx + my) / 2) * np.sin(np.pi * (mx - my) / 2)) * 1.4 - 0.5, 0, 1)
    img = lerp(np.asarray(c1, np.float32), np.asarray(c2, np.float32), np.broadcast_to(0.6 * stripes * motif, (h, w)))
    seam = smoothstep(0.004, 0.0, np.abs((X % 0.53) - 0.265) - 0.263)
    img *= (1 - 0.12 * seam)[..., None]
    return np.clip(img * (1 + 0.04 * fbm(rng, h, w, size, 2.0, 4))[..., None], 0, 1)


def tex_bricks(rng, h, w, size, base, mortar=(0.72, 0.7, 0.66), brick=(0.215, 0.065), joint=0.01, vary=1.0):
    X, Y = grid_coords(h, w, (size[0] / h, size[1] / w))
    ph, pl = brick[1] + joint, brick[0] + joint
    row = np.floor(Y / ph)
    xs = X + (row % 2) * pl / 2
    col = np.floor(xs / pl)
    fx, fy = xs - col * pl, Y - row * ph
    edge = np.minimum(np.minimum(fx, pl - fx - joint), np.minimum(fy, ph - fy - joint))
    is_brick = smoothstep(-0.001, 0.0015, edge)
    n_rows, n_cols = int(np.ceil(size[0] / ph)) + 1, int(np.ceil(size[1] / pl)) + 2
    tints = (1 + vary * rng.uniform(-0.25, 0.18, (n_rows, n_cols, 1))) * (1 + vary * rng.uniform(-0.07, 0.07, (n_rows, n_cols, 3)))
    tints = tints.astype(np.float32)
    rid = np.broadcast_to(row, (h, w)).astype(np.int64) % n_rows
    cid = col.astype(np.int64) % n_cols
    bcol = np.asarray(base, np.float32) * tints[rid, cid]
    bcol *= (1 + 0.08 * fbm(rng, h, w, size, 6.0, 4))[..., None]
    mcol = np.asarray(mortar, np.float32) * (1 + 0.1 * fbm(rng, h, w, size, 20.0, 2))[..., None]
    return np.clip(lerp(mcol, bcol, is_brick), 0, 1)


def tex_planks(rng, h, w, size, base, plank_w=0.17):
    """Wood planks running along x (canvas width)."""
    X, Y = grid_coords(h, w, (size[0] / h, size[1] / w))
    row = np.floor(Y / plank_w)
    n_rows = int(np.ceil(size[0] / plank_w)) + 1
    shift = rng.uniform(0, 2.0, n_rows).astype(np.float32)
    length = rng.uniform(1.1, 1.9, n_rows).astype(np.float32)
    ri = np.broadcast_to(row, (h, w)).astype(np.int64)
    xs = X + shift[ri]
    seg = np.floor(xs / length[ri])
    key = (ri * 131 + seg.astype(np.int64) * 17) % 257
    tint = rng.uniform(0.78, 1.15, 257).astype(np.float32)[key]
    grain = fbm(rng, h, w, size, 3.0, 5, stretch=(8.0, 0.25))
    rings = 0.5 + 0.5 * np.sin(40 * (Y + 0.03 * grain) + 3 * np.sin(2.1 * X + ri))
    img = np.asarray(base, np.float32) * (tint * (1 + 0.12 * grain) * (0.9 + 0.12 * rings))[..., None]
    fy = Y - row * plank_w
    fx = xs - seg * length[ri]
    gap = np.minimum(np.minimum(fy, plank_w - fy), np.minimum(fx, length[ri] - fx))
    return np.clip(img * (0.45 + 0.55 * smoothstep(0.0, 0.003, gap))[..., None], 0, 1)


def tex_tiles(rng, h, w, size, base, tile=0.45):
    X, Y = grid_coords(h, w, (size[0] / h, size[1] / w))
    fx, fy = X % tile, Y % tile
    key = ((np.floor(X / tile) * 37 + np.floor(Y / tile) * 11) % 199).astype(np.int64)
    tint = rng.uniform(0.85, 1.1, 199).astype(np.float32)[key]
    vein = np.abs(np.sin(6 * X + 4 * Y + 4 * fbm(rng, h, w, size, 1.5, 4)))
    img = np.asarray(base, np.float32) * (tint * (1 - 0.15 * smoothstep(0.15, 0.0, vein)))[..., None]
    img *= (1 + 0.05 * fbm(rng, h, w, size, 30.0, 2))[..., None]
    grout = np.minimum(np.minimum(fx, tile - fx), np.minimum(fy, tile - fy))
    return np.clip(lerp(np.float32([0.5, 0.48, 0.45]), img, smoothstep(0.002, 0.004, grout)), 0, 1)


def tex_wood(rng, h, w, size, base):
    grain = fbm(rng, h, w, size, 4.0, 5, stretch=(0.2, 6.0))
    X, Y = grid_coords(h, w, (size[0] / h, size[1] / w))
    rings = 0.5 + 0.5 * np.sin(55 * X + 6 * grain)
    return np.clip(np.asarray(base, np.float32) * (1 + 0.12 * grain + 0.1 * rings)[..., None], 0, 1)


def tex_fabric(rng, h, w, size, base):
    n = fbm(rng, h, w, size, 3.0, 5)
    X, Y = grid_coords(h, w, (size[0] / h, size[1] / w))
    weave = 0.5 + 0.25 * (np.sin(2 * np.pi * X / 0.012) + np.sin(2 * np.pi * Y / 0.012))
    return np.clip(np.asarray(base, np.float32) * (1 + 0.08 * n + 0.06 * weave)[..., None], 0, 1)


def tex_noisy(rng, h, w, size, base, amount=0.15, freq=3.0):
    return np.clip(np.asarray(base, np.float32) * (1 + amount * fbm(rng, h, w, size, freq, 6))[..., None], 0, 1)


def tex_cardboard(rng, h, w, size):
    img = tex_noisy(rng, h, w, size, (0.62, 0.47, 0.3), 0.1, 4.0)
    tex_h = (size[0] / h, size[1] / w)
    fill_rect(img, 0, size[0] * 0.42, size[1], size[0] * 0.55, (0.8, 0.72, 0.55), tex_h)   # tape
    word = WORDS[rng.integers(len(WORDS))]
    hp = 0.12 * size[0] / tex_h[0]
    put_text(img, word, 0.1 * size[1] / tex_h[1], 0.35 * size[0] / tex_h[0], hp, (0.15, 0.12, 0.1))
    return img


def tex_poster(rng, h, w, size):
    """Printed-looking poster: gradient, shapes, a title and lines of small text, white border."""
    c1, c2 = rng.uniform(0.05, 0.95, 3), rng.uniform(0.05, 0.95, 3)
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    img = np.broadcast_to(lerp(c1.astype(np.float32), c2.astype(np.float32), t), (h, w, 3)).copy()
    for _ in range(rng.integers(2, 6)):
        col = rng.uniform(0, 1, 3)
        cx, cy, r = int(rng.uniform(0.1, 0.9) * w), int(rng.uniform(0.25, 0.75) * h), int(rng.uniform(0.08, 0.3) * w)
        if rng.random() < 0.5:
            paint(img, lambda m: cv2.circle(m, (cx, cy), r, 255, -1, cv2.LINE_AA), col)
        else:
            pts = (np.array([cx, cy]) + rng.uniform(-r, r, (3 + rng.integers(2), 2))).astype(np.int32)
            paint(img, lambda m: cv2.fillPoly(m, [pts], 255, cv2.LINE_AA), col)
    ink = (0.05, 0.05, 0.05) if img.mean() > 0.5 else (0.97, 0.97, 0.95)
    title = " ".join(WORDS[i] for i in rng.integers(len(WORDS), size=rng.integers(1, 3)))
    hp = min(0.09 * h, 0.8 * w / max(text_width(title, 1.0), 1))
    put_text(img, title, 0.08 * w, 0.16 * h, hp, ink)
    for k in range(rng.integers(2, 5)):
        line = " ".join(WORDS[i].lower() for i in rng.integers(len(WORDS), size=4))
        hl = min(0.025 * h, 0.84 * w / max(text_width(line, 1.0), 1))
        put_text(img, line, 0.08 * w, (0.82 + 0.045 * k) * h, hl, ink, thick=1)
    b = max(1, int(0.04 * w))
    img[:b], img[-b:], img[:, :b], img[:, -b:] = 0.95, 0.95, 0.95, 0.95
    return np.clip(img, 0, 1)


def tex_painting(rng, h, w, size, frame_col):
    """Framed landscape/abstract painting (frame and mat included)."""
    X, Y = grid_coords(h, w, (1.0 / h, 1.0 / w))
    sky = lerp(np.float32([0.35, 0.55, 0.85]), np.float32([0.9, 0.8, 0.6]), Y * 1.6)
    ridge = 0.45 + 0.12 * fbm(rng, 1, w, (0.1, 1.0), 3.0, 4)[0][None, :]
    hill_col = rng.uniform(0.15, 0.6, 3).astype(np.float32)
    hills = hill_col * (1 + 0.25 * fbm(rng, h, w, (1, 1), 6.0, 4))[..., None]
    img = lerp(sky, hills, smoothstep(-0.005, 0.005, Y - ridge))
    cx, cy = rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.3)
    sun = smoothstep(0.07, 0.06, np.sqrt((X - cx) ** 2 + (Y - cy) ** 2))
    img = lerp(img, np.float32([1.0, 0.9, 0.6]), sun)
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
    fill_rect(img, size[1] / 2 - 0.025, 0, size[1] / 2 + 0.025, size[0], (0.85, 0.85, 0.82), t)
    fill_rect(img, 0, size[0] * 0.4 - 0.025, size[1], size[0] * 0.4 + 0.025, (0.85, 0.85, 0.82), t)
    return np.clip(img, 0, 1)


def tex_door_panel(rng, h, w, size, base):
    img = tex_wood(rng, h, w, size, base)
    t = (size[0] / h, size[1] / w)
    for (y0, y1) in ((0.12, 0.45), (0.55, 0.9)):
        for (x0, x1) in ((0.12, 0.45), (0.55, 0.88)):
            sl = (slice(int(y0 * h), int(y1 * h)), slice(int(x0 * w), int(x1 * w)))
            img[sl] *= 0.82
    fill_rect(img, size[1] * 0.82, size[0] * 0.48, size[1] * 0.9, size[0] * 0.52, (0.75, 0.72, 0.65), t)
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
        fill_rect(img, x0, y0, x0 + nw, y0 + nh, rng.uniform(0.75, 1.0, 3), t)
        for k in range(int(nh / 0.025) - 1):
            fill_rect(img, x0 + 0.015, y0 + 0.02 + k * 0.025, x0 + nw * rng.uniform(0.5, 0.9), y0 + 0.026 + k * 0.025, (0.2, 0.2, 0.3), t)
        fill_rect(img, x0 + nw / 2 - 0.006, y0 + 0.006, x0 + nw / 2 + 0.006, y0 + 0.018, rng.uniform(0, 1, 3), t)
    f = 0.03
    for r in ((0, 0, size[1], f), (0, size[0] - f, size[1], size[0]), (0, 0, f, size[0]), (size[1] - f, 0, size[1], size[0])):
        fill_rect(img, *r, (0.45, 0.3, 0.18), t)
    return img


def tex_leaves(rng, h, w, size):
    n = fbm(rng, h, w, size, 4.0, 6)
    base = lerp(np.float32([0.08, 0.2, 0.05]), np.float32([0.35, 0.5, 0.15]), smoothstep(-0.8, 1.2, n))
    return np.clip(base, 0, 1)


def tex_asphalt(rng, h, w, size):
    n = fbm(rng, h, w, size, 0.4, 3) * 0.08 + fbm(rng, h, w, size, 40.0, 3) * 0.12
    img = np.float32([0.3, 0.3, 0.31]) * (1 + n)[..., None]
    cracks = smoothstep(0.035, 0.0, np.abs(fbm(rng, h, w, size, 1.2, 4)))
    return np.clip(img * (1 - 0.35 * cracks)[..., None], 0, 1)


def tex_paving(rng, h, w, size, slab=0.6):
    img = tex_tiles(rng, h, w, size, (0.62, 0.6, 0.56), slab)
    return np.clip(img * (1 + 0.06 * fbm(rng, h, w, size, 0.8, 3))[..., None], 0, 1)


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
        X, Y = grid_coords(h, w, t)
        groove = np.minimum(np.abs(((Y + 0.25) % 0.5) - 0.25), np.abs(((X + (np.floor(Y / 0.5) % 2) * 0.6) % 1.2) - 0.6))
        img *= (1 - 0.18 * smoothstep(0.012, 0.004, groove))[..., None]
        img *= (1 + 0.1 * fbm(rng, h, w, size, 0.4, 5))[..., None]
    dirt = smoothstep(0.0, 3.0, np.linspace(0, H, h, dtype=np.float32))[:, None, None]   # darker near the ground
    img *= 0.85 + 0.15 * dirt[::-1]
    ground = rng.uniform(3.6, 4.3)
    storey = rng.uniform(3.0, 3.4)
    bay = rng.uniform(2.3, 3.1)
    win_w, win_h = min(bay - 0.9, rng.uniform(1.0, 1.4)), rng.uniform(1.5, 1.9)
    n_bays = max(1, int(Wm // bay))
    x_margin = (Wm - n_bays * bay) / 2
    z = ground
    while z + storey < H - 0.6:
        fill_rect(img, 0, H - z - 0.18, Wm, H - z, trim_col, t)                       # string course
        for j in range(n_bays):
            cx = x_margin + (j + 0.5) * bay
            paint_window(img, rng, cx - win_w / 2, H - (z + 0.9 + win_h), win_w, win_h, trim_col, glass_col, t)
        z += storey
    fill_rect(img, 0, 0, Wm, 0.5, trim_col, t)                                         # parapet
    fill_rect(img, 0, 0.5, Wm, 0.62, np.asarray(trim_col) * 0.7, t)
    if shop:
        fill_rect(img, 0, H - ground, Wm, H - ground + 0.7, rng.uniform(0.05, 0.6, 3), t)   # sign board
        word = " ".join(WORDS[i] for i in rng.integers(len(WORDS), size=rng.integers(1, 3)))
        hp = min(0.42 / t[0], 0.8 * Wm / t[1] / max(text_width(word, 1.0), 1))
        put_text(img, word, 0.1 * Wm / t[1], (H - ground + 0.56) / t[0], hp, (0.97, 0.95, 0.85))
        door = rng.uniform(0.15, 0.75) * Wm
        for x0, x1 in ((0.25, door - 0.8), (door + 0.8, Wm - 0.25)):
            if x1 - x0 > 0.6:
                paint_window(img, rng, x0, H - ground + 0.85, x1 - x0, ground - 1.45, trim_col, glass_col, t, shop=True)
        fill_rect(img, door - 0.65, H - 2.4, door + 0.65, H, (0.12, 0.1, 0.09), t)
        fill_rect(img, door - 0.55, H - 2.3, door + 0.55, H, np.asarray(glass_col) * 0.7, t)
    else:
        for j in range(n_bays):
            cx = x_margin + (j + 0.5) * bay
            paint_window(img, rng, cx - win_w / 2, H - (0.9 + win_h), win_w, win_h, trim_col, glass_col, t)
    return np.clip(img, 0, 1)


def paint_window(img, rng, x0, y0, ww, wh, trim, glass, t, shop=False):
    """One window (metric rect, y down from the top): frame, reflective glass, mullions, sill, blinds."""
    f = 0.08
    fill_rect(img, x0 - f, y0 - f, x0 + ww + f, y0 + wh + f, trim, t)
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
                g[max(0, y - bh):y, x:x + bw] = lerp(g[max(0, y - bh):y, x:x + bw], rng.uniform(0.1, 0.95, 3).astype(np.float32), 0.75)
                x += bw + int(rng.uniform(0, 0.03) * ww_px)
    img[r0:r1, c0:c1] = g
    m = 0.05
    fill_rect(img, x0 + ww / 2 - m / 2, y0, x0 + ww / 2 + m / 2, y0 + wh, trim, t)
    if not shop:
        fill_rect(img, x0, y0 + wh * 0.35 - m / 2, x0 + ww, y0 + wh * 0.35 + m / 2, trim, t)
    fill_rect(img, x0 - f - 0.06, y0 + wh + f, x0 + ww + f + 0.06, y0 + wh + f + 0.1, np.asarray(trim) * 0.85, t)


def tex_street_ground(rng, h, w, size, x0, road_half, walk_half, crossings):
    """Road (asphalt, lane markings, zebra crossings) between two paved sidewalks; x along the width
    starts at world x = ``x0``, y across (top row = +y side)."""
    H, Wm = size
    t = (H / h, Wm / w)
    X, Yd = grid_coords(h, w, t)
    Y = H / 2 - Yd                                   # world y of each row
    road = tex_asphalt(rng, h, w, size)
    walk = tex_paving(rng, h, w, size)
    img = np.where((np.abs(Y) < road_half)[..., None], road, walk)
    xw = X + x0
    paint_col = np.float32([0.92, 0.92, 0.88])
    dash = (np.abs(Y) < 0.06) & ((xw % 6.0) < 3.0)
    edge = np.abs(np.abs(Y) - (road_half - 0.35)) < 0.06
    zebra = np.zeros((h, w), bool)
    for xc in crossings:
        zebra |= (np.abs(xw - xc) < 2.0) & (np.abs(Y) < road_half - 0.5) & ((Y % 1.0) < 0.5)
    mark = (dash | edge | zebra).astype(np.float32)
    wear = np.clip(0.75 + 0.4 * fbm(rng, h, w, size, 2.0, 4), 0, 1)
    img = lerp(img, paint_col, mark * wear)
    for xc in rng.uniform(0, Wm, 6):                # manhole covers (painted in a local window)
        yc = rng.uniform(-road_half + 1, road_half - 1)
        c0, c1 = max(0, int((xc - 0.4) / t[1])), min(w, int((xc + 0.4) / t[1]) + 1)
        r0, r1 = max(0, int((H / 2 - yc - 0.4) / t[0])), min(h, int((H / 2 - yc + 0.4) / t[0]) + 1)
        r = np.hypot(X[:, c0:c1] - xc, Y[r0:r1] - yc)
        ring = 0.8 + 0.2 * (np.sin(r * 60) > 0)
        img[r0:r1, c0:c1] = lerp(img[r0:r1, c0:c1], np.float32([0.25, 0.24, 0.22]) * ring[..., None],
                                  smoothstep(0.34, 0.32, r))
    return np.clip(img, 0, 1)


def tex_backdrop(rng, h, w, size, horizon):
    """Panorama on the far enclosure: sky with clouds, hazy distant buildings and trees, ground."""
    H, Wm = size
    t = (H / h, Wm / w)
    X, Yd = grid_coords(h, w, t)
    Z = H - Yd + horizon[0]                       # world height of each row (rows from the top)
    el = np.clip((Z - horizon[1]) / 60.0, 0, 1)
    sky = lerp(np.float32([0.78, 0.85, 0.92]), np.float32([0.35, 0.55, 0.85]), np.broadcast_to(el ** 0.6, (h, w)))
    clouds = smoothstep(0.2, 1.2, fbm(rng, h, w, size, 0.02, 6, stretch=(3.0, 1.0)))
    img = lerp(sky, np.float32([0.97, 0.97, 0.97]), clouds * (Z > 8))
    haze = np.float32([0.7, 0.76, 0.82])
    xs = 0.0
    skyline = np.zeros(w, np.float32)
    while xs < Wm:                                 # distant building silhouettes
        bw, bh = rng.uniform(8, 30), rng.uniform(6, 35)
        c0, c1 = int(xs / t[1]), int(min(Wm, xs + bw) / t[1])
        skyline[c0:c1] = bh
        xs += bw + rng.uniform(0, 6)
    trees = 4 + 6 * np.clip(0.5 + 0.5 * fbm(rng, 1, w, (1, Wm), 0.05, 5)[0], 0, 1)
    bld = (Z - horizon[1] < skyline[None, :]) & (Z > horizon[1] - 2)
    bcol = lerp(np.float32([0.45, 0.47, 0.52]), haze, 0.55)
    winmask = ((X % 3.0) < 1.2) & ((Z % 3.5) < 1.6)
    img = np.where(bld[..., None], bcol * (1 - 0.12 * winmask)[..., None], img)
    tr = (Z - horizon[1] < trees[None, :]) & (Z > horizon[1] - 2)
    tcol = lerp(np.float32([0.16, 0.26, 0.14]), haze, 0.45) * (1 + 0.25 * fbm(rng, h, w, size, 0.3, 5))[..., None]
    img = np.where(tr[..., None], tcol, img)
    low = Z < horizon[1] - 2
    img = np.where(low[..., None], np.float32([0.42, 0.43, 0.4]), img)
    return np.clip(img, 0, 1)
