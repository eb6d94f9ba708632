"""The ``room`` scene (7-Scenes style): a ~5 x 4 x 2.6 m furnished room, floor at z = 0, one corner at
the origin; cameras at 1.2-1.75 m, at least 0.9 m from the walls."""
from __future__ import annotations

import math

import cv2
import numpy as np

from data.synthetic import materials as M
from data.synthetic.atlas import canvas_dims
from data.synthetic.builder import SceneBuilder
from data.synthetic.patterns import fbm, fill_rect, grid_coords, lerp, smoothstep, tint
from data.synthetic.raycast import Box, Cylinder, Sphere
from data.synthetic.render import PointLight, Scene


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
    fill_rect(img, 0, H - 0.09, size[1], H, (0.92, 0.91, 0.88), t)
    if door is not None:
        dh, dw = canvas_dims(2.05, 0.9, t[1])
        fill_rect(img, door - 0.5, H - 2.12, door + 0.5, H, (0.9, 0.89, 0.86), t)
        panel = cv2.resize(M.tex_door_panel(rng, dh, dw, (2.05, 0.9), (0.55, 0.36, 0.2)),
                           (int(round(0.9 / t[1])), int(round(2.05 / t[0]))))
        r0, c0 = int(round((H - 2.05) / t[0])), int(round((door - 0.45) / t[1]))
        img[r0:r0 + panel.shape[0], c0:c0 + panel.shape[1]] = panel[:h - r0, :w - c0]
    for (pu, pv, pw, ph) in posters:
        ch, cw = canvas_dims(ph, pw, t[1])
        poster = cv2.resize(M.tex_poster(rng, ch, cw, (ph, pw)), (max(1, int(round(pw / t[1]))), max(1, int(round(ph / t[0])))),
                            interpolation=cv2.INTER_AREA)
        r0, c0 = int(round((H - pv - ph / 2) / t[0])), int(round((pu - pw / 2) / t[1]))
        img[r0:r0 + poster.shape[0], c0:c0 + poster.shape[1]] = poster
    return img


def _floor_tex(rng, h, w, size, kind, base, rug):
    img = M.tex_planks(rng, h, w, size, base) if kind == 0 else M.tex_tiles(rng, h, w, size, base)
    if rug is not None:
        x0, y0, x1, y1 = rug      # metric rectangle, y measured down from the top edge
        t = (size[0] / h, size[1] / w)
        r0, r1, c0, c1 = (int(round(y0 / t[0])), int(round(y1 / t[0])), int(round(x0 / t[1])), int(round(x1 / t[1])))
        X, Y = grid_coords(r1 - r0, c1 - c0, t)
        c_a, c_b = rng.uniform(0.2, 0.7, 3).astype(np.float32), rng.uniform(0.5, 0.9, 3).astype(np.float32)
        pat = np.abs(np.sin(9 * X + 9 * Y)) * np.abs(np.sin(9 * X - 9 * Y))
        rugimg = lerp(c_a, c_b, smoothstep(0.3, 0.5, pat))
        bw = 0.12
        border = (np.minimum(np.minimum(X, X[0, -1] - X), np.minimum(Y, Y[-1, 0] - Y)) < bw)
        rugimg[np.broadcast_to(border, rugimg.shape[:2])] = c_a * 0.6
        rugimg *= (1 + 0.1 * fbm(rng, r1 - r0, c1 - c0, (y1 - y0, x1 - x0), 30.0, 3))[..., None]
        img[r0:r1, c0:c1] = rugimg
    return img


def build_room(seed: int, texel: float = 0.004) -> Scene:
    """A furnished room ~5 x 4 x 2.6 m (floor z = 0, corner at the origin), 7-Scenes style."""
    b = SceneBuilder(seed, texel)
    rng = b.rng
    X, Y, Z = rng.uniform(4.6, 5.4), rng.uniform(3.6, 4.4), rng.uniform(2.5, 2.8)
    room = b.add(Box((X / 2, Y / 2, Z / 2), (X, Y, Z), 0, inward=True))
    white = b.material(M.tex_plaster, (1, 1), (0.9, 0.89, 0.86))
    wood_light = b.material(M.tex_wood, (1, 1), (0.72, 0.55, 0.36))
    wood_dark = b.material(M.tex_wood, (1, 1), (0.42, 0.27, 0.16))
    metal = b.material(M.tex_noisy, (1, 1), (0.35, 0.36, 0.38), 0.1, 2.0)

    # table in the middle with a rug under it
    tx, ty, tyaw = X / 2 + rng.uniform(-0.4, 0.4), Y / 2 + rng.uniform(-0.3, 0.3), rng.uniform(-0.35, 0.35)
    rug = (tx - 1.3, Y - ty - 1.0, tx + 1.3, Y - ty + 1.0)
    b.face_material(room, 4, _floor_tex, int(rng.integers(2)),
                    tint(rng, (0.7, 0.5, 0.32) if rng.random() < 0.6 else (0.75, 0.74, 0.7)), rug, bake=True, corner_ao=True)
    b.face_material(room, 5, M.tex_plaster, (0.93, 0.93, 0.92), bake=True, corner_ao=True)

    # walls: 0 (x=0), 1 (x=X), 2 (y=0), 3 (y=Y); roles are shuffled per seed
    roles = rng.permutation(["window", "sofa", "door", "shelf"])
    for face, role in zip(range(4), roles):
        su = room.face_size(face)[1]
        if role == "window":
            b.face_material(room, face, _paint_room_wall, M.tex_bricks,
                            (tint(rng, (0.55, 0.28, 0.2) if rng.random() < 0.5 else (0.85, 0.84, 0.8)),), [], None,
                            bake=True, corner_ao=True)
            wu = su / 2 + rng.uniform(-0.4, 0.4)
            win_mat = b.material(M.tex_window_view, (1.1, 1.3), emit=1.5, detail=0.0)
            box, front = _wall_box(room, face, wu, 1.55, 1.3, 1.1, 0.05, white)
            box.mats[front] = win_mat
            box.no_shadow = True
            b.add(box)
            b.add(_wall_box(room, face, wu, 1.0, 1.45, 0.05, 0.16, white)[0])        # sill
            b.add(_wall_box(room, face, wu, 0.45, 0.9, 0.5, 0.08, b.material(M.tex_wallpaper, (0.5, 0.5), (0.9, 0.9, 0.9), (0.7, 0.7, 0.7)))[0])
        elif role == "sofa":
            b.face_material(room, face, _paint_room_wall, M.tex_wallpaper,
                            (tint(rng, (0.75, 0.7, 0.6)), tint(rng, (0.55, 0.45, 0.4))), [], None, bake=True, corner_ao=True)
            _add_sofa(b, room, face, su / 2 + rng.uniform(-0.3, 0.3))
            for k, du in enumerate((-0.55, 0.55)):
                pic_mat = b.material(M.tex_painting, (0.5, 0.4), tint(rng, (0.3, 0.2, 0.12)), detail=0.02)
                box, front = _wall_box(room, face, su / 2 + du, 1.55 + 0.1 * k, 0.4 + 0.1 * k, 0.5, 0.03, wood_dark)
                box.mats[front] = pic_mat
                b.add(box)
        elif role == "door":
            posters = [(su * 0.62 + 0.7 * k, 1.5 + rng.uniform(-0.1, 0.1), 0.6, 0.85) for k in range(2)]
            b.face_material(room, face, _paint_room_wall, M.tex_plaster, (tint(rng, (0.8, 0.78, 0.72)),), posters,
                            su * 0.18, bake=True, corner_ao=True)
            box, front = _wall_box(room, face, su * 0.42, 0.95, 0.9, 1.9, 0.45, wood_light)
            box.mats[front] = b.material(M.tex_door_panel, (1.9, 0.9), (0.72, 0.55, 0.36))
            b.add(box)
            box, front = _wall_box(room, face, su * 0.42, 2.15, 0.6, 0.35, 0.03, wood_dark)
            box.mats[front] = b.material(M.tex_painting, (0.35, 0.6), (0.15, 0.1, 0.08), detail=0.02)
            b.add(box)
        else:
            posters = [(su * 0.8, 1.6, 0.5, 0.7)]
            b.face_material(room, face, _paint_room_wall, M.tex_plaster, (tint(rng, (0.62, 0.72, 0.7)),), posters, None,
                            bake=True, corner_ao=True)
            _add_bookshelf(b, room, face, su * 0.35, wood_light)
            box, front = _wall_box(room, face, su * 0.62, 1.45, 0.7, 0.5, 0.02, wood_light)
            box.mats[front] = b.material(M.tex_corkboard, (0.5, 0.7), detail=0.03)
            b.add(box)

    _add_table(b, tx, ty, tyaw, Z, wood_dark, white, metal)
    # corner props: floor lamp, plant, stacked boxes, bin
    corners = rng.permutation([(0.35, 0.35), (X - 0.35, 0.35), (0.35, Y - 0.35), (X - 0.35, Y - 0.35)])
    shade = b.material(M.tex_fabric, (0.5, 0.5), (0.95, 0.88, 0.7), emit=1.1, detail=0.0)
    lx, ly = corners[0]
    b.add(Cylinder((lx, ly), 0.15, 0.0, 0.04, metal))
    b.add(Cylinder((lx, ly), 0.015, 0.04, 1.45, metal))
    lamp = b.add(Cylinder((lx, ly), 0.2, 1.45, 1.75, shade))
    lamp.no_shadow = True
    px, py = corners[1]
    b.add(Cylinder((px, py), 0.18, 0.0, 0.4, b.material(M.tex_noisy, (0.5, 0.5), (0.6, 0.3, 0.2), 0.1, 4.0), offs=b.offs(3)))
    leaves = b.material(M.tex_leaves, (1, 1))
    b.add(Sphere((px, py, 0.75), 0.38, leaves, offs=b.offs(1)))
    b.add(Sphere((px + 0.1, py - 0.05, 1.05), 0.25, leaves, offs=b.offs(1)))
    bx, by = corners[2]
    cb = b.material(M.tex_cardboard, (0.5, 0.5))
    z = 0.0
    for k in range(int(rng.integers(2, 4))):
        sz = rng.uniform(0.3, 0.5, 3) * (1, 1, 0.8)
        b.add(Box((bx + rng.uniform(-0.05, 0.05), by + rng.uniform(-0.05, 0.05), z + sz[2] / 2), sz, cb,
                  yaw=rng.uniform(-0.4, 0.4), offs=b.offs(6)))
        z += sz[2]
    cx, cy = corners[3]
    b.add(Cylinder((cx, cy), 0.16, 0.0, 0.38, b.material(M.tex_noisy, (0.5, 0.5), (0.25, 0.4, 0.6), 0.06, 3.0), offs=b.offs(3)))

    lights = [PointLight((X / 3, Y / 2, Z - 0.3), (1.0, 0.95, 0.85), 0.8),
              PointLight((2 * X / 3, Y / 2, Z - 0.3), (1.0, 0.95, 0.85), 0.8),
              PointLight((lx, ly, 1.6), (1.0, 0.8, 0.55), 0.35, 1.2)]
    lamp_mat = b.material(M.tex_plaster, (0.3, 0.3), (1.0, 0.97, 0.9), emit=1.4, detail=0.0)
    for L in lights[:2]:
        fix = b.add(Cylinder(L.pos[:2], 0.22, Z - 0.06, Z, lamp_mat))
        fix.no_shadow = True
    return b.finish("room", lights, (0.33, 0.32, 0.3), bake_step=0.04,
                    # a 7-Scenes-like capture: walking along one side of the room, looking across it
                    # at the table, the far wall and the corners (every surface seen from many views)
                    cam_region=((0.9, 0.6, 1.2), (X - 0.9, min(2.0, ty - 0.6), 1.75)),
                    view={"pitch": (-0.6, 0.05), "yaw_step": 1.2, "step": (0.4, 1.0), "jitter_t": 0.003,
                          "look_at": ((0.8, ty - 0.3, 0.4), (X - 0.8, Y - 0.2, 1.5))},
                    bounds=((0, 0, 0), (X, Y, Z)))


def _add_sofa(b: SceneBuilder, room: Box, face: int, u: float):
    fab = b.material(M.tex_fabric, (0.6, 0.6), tint(b.rng, (0.3, 0.38, 0.5), 0.3))
    cushion = b.material(M.tex_fabric, (0.4, 0.4), tint(b.rng, (0.7, 0.55, 0.3), 0.3))
    for (du, v, w, h, d, off, m) in ((0, 0.22, 2.0, 0.42, 0.85, 0.0, fab), (0, 0.65, 2.0, 0.45, 0.2, 0.0, fab),
                                      (-0.9, 0.55, 0.2, 0.25, 0.85, 0.0, fab), (0.9, 0.55, 0.2, 0.25, 0.85, 0.0, fab),
                                      (-0.4, 0.6, 0.4, 0.35, 0.12, 0.2, cushion), (0.4, 0.6, 0.4, 0.35, 0.12, 0.2, cushion)):
        box, _ = _wall_box(room, face, u + du, v, w, h, d, m, offs=b.offs(6))
        if off:   # cushions lean on the back rest
            p, n = room.face_points(face, np.array([u + du]), np.array([v]))
            box.c = p[0] + n * (off + d / 2)
        b.add(box)


def _add_bookshelf(b: SceneBuilder, room: Box, face: int, u: float, wood: int):
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
    books = [b.material(M.tex_books, (0.3, 0.6), detail=0.03) for _ in range(3)]
    for k, z in enumerate(shelves[:-1]):
        fill = b.rng.uniform(0.5, 0.95)
        hgt = b.rng.uniform(0.2, 0.28)
        bx = box(-(W - 0.06) / 2 + fill * (W - 0.06) / 2, z + 0.025, fill * (W - 0.06), hgt, b.rng.uniform(0.17, 0.24),
                 books[k % 3], back=0.02)
        bx.offs[:, 0] = b.rng.uniform(0, 0.3)


def _add_table(b: SceneBuilder, tx, ty, yaw, Z, wood, white, metal):
    rng = b.rng
    c, s = math.cos(yaw), math.sin(yaw)

    def at(dx, dy):
        return tx + c * dx - s * dy, ty + s * dx + c * dy
    b.add(Box((tx, ty, 0.74), (1.4, 0.8, 0.04), wood, yaw=yaw, offs=b.offs(6)))
    for dx in (-0.64, 0.64):
        for dy in (-0.34, 0.34):
            b.add(Box((*at(dx, dy), 0.36), (0.05, 0.05, 0.72), wood, yaw=yaw, offs=b.offs(6)))
    seat = b.material(M.tex_noisy, (0.5, 0.5), tint(rng, (0.2, 0.45, 0.35), 0.3), 0.12, 4.0)
    for side in (-1, 1):   # two chairs facing the table: seat, back rest away from the table, legs
        along = rng.uniform(-0.3, 0.3)
        cx, cy = at(along, side * 0.65)
        b.add(Box((cx, cy, 0.45), (0.45, 0.45, 0.04), seat, yaw=yaw, offs=b.offs(6)))
        b.add(Box((*at(along, side * 0.86), 0.7), (0.45, 0.03, 0.46), seat, yaw=yaw, offs=b.offs(6)))
        for dx in (-0.2, 0.2):
            for dy in (-0.2, 0.2):
                b.add(Cylinder(at(along + dx, side * 0.65 + dy), 0.018, 0.0, 0.43, metal))
    # things on the table: a stack of books, a laptop-like slab, a mug, a vase, a ball
    bx, by = at(rng.uniform(-0.5, -0.2), rng.uniform(-0.15, 0.15))
    top = 0.76
    for _ in range(int(rng.integers(2, 4))):
        h = rng.uniform(0.03, 0.06)
        book = b.add(Box((bx, by, top + h / 2), (0.2, 0.28, h), white, yaw=yaw + rng.uniform(-0.3, 0.3)))
        book.mats[5] = b.material(M.tex_poster, (0.28, 0.2), detail=0.02)
        top += h
    lx, ly = at(rng.uniform(0.1, 0.4), rng.uniform(-0.15, 0.1))
    b.add(Box((lx, ly, 0.77), (0.34, 0.24, 0.02), metal, yaw=yaw + rng.uniform(-0.3, 0.3)))
    mug = b.material(M.tex_noisy, (0.3, 0.3), tint(rng, (0.8, 0.2, 0.15), 0.3), 0.05, 5.0)
    mx, my = at(0.55, rng.uniform(-0.25, 0.25))
    b.add(Cylinder((mx, my), 0.04, 0.76, 0.86, mug, offs=b.offs(3)))
    vx, vy = at(rng.uniform(-0.1, 0.1), rng.uniform(0.15, 0.28))
    b.add(Cylinder((vx, vy), 0.07, 0.76, 1.0, b.material(M.tex_painting, (0.5, 0.45), (0.2, 0.3, 0.5)), offs=b.offs(3)))
    sx, sy = at(rng.uniform(0.3, 0.55), 0.27)
    b.add(Sphere((sx, sy, 0.87), 0.11, b.material(M.tex_poster, (0.35, 0.7)), offs=b.offs(1)))
