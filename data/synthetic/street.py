"""The ``street`` scene (Cambridge style): a ~60 m street along x (axis y = 0, ground z = 0) with road,
sidewalks, facades on both sides, trees, lamp posts, a far backdrop enclosure, and moving pedestrians
and cars (transients, ``Scene.actors``)."""
from __future__ import annotations

import math

import numpy as np

from data.synthetic import materials as M
from data.synthetic.builder import SceneBuilder
from data.synthetic.patterns import tint
from data.synthetic.raycast import Box, Cylinder, Sphere
from data.synthetic.render import Scene


def build_street(seed: int, texel: float = 0.02) -> Scene:
    """A ~60 m street along x (y = 0 on its axis, ground z = 0): road, sidewalks, facades on both sides,
    trees, lamp posts, a far backdrop, and moving pedestrians/cars (``Scene.actors``)."""
    b = SceneBuilder(seed, texel)
    rng = b.rng
    L = rng.uniform(50, 70)
    road_half, walk_half, depth = 4.0, 7.5, 12.0
    x_lo, x_hi = -25.0, L + 25.0
    ground = b.add(Box(((x_lo + x_hi) / 2, 0, -0.25), (x_hi - x_lo, 2 * walk_half, 0.5), 0))
    crossings = [x for x in (rng.uniform(5, L / 2), rng.uniform(L / 2, L - 5))]
    b.face_material(ground, 5, M.tex_street_ground, x_lo, road_half, walk_half, crossings, bake=True)
    far = b.material(M.tex_noisy, (8, 8), (0.4, 0.42, 0.36), 0.2, 0.5, texel=max(0.05, texel))
    b.add(Box((L / 2, 0, -0.3), (320, 320, 0.59), far, offs=b.offs(6)))
    granite = b.material(M.tex_noisy, (1, 1), (0.55, 0.55, 0.54), 0.12, 8.0)
    for s in (-1, 1):
        b.add(Box(((x_lo + x_hi) / 2, s * (road_half + 0.1), 0.06), (x_hi - x_lo, 0.2, 0.12), granite, offs=b.offs(6)))

    side_mats = [b.material(M.tex_bricks, (2, 2), (0.5, 0.3, 0.22)), b.material(M.tex_plaster, (2, 2), (0.75, 0.7, 0.6)),
                 b.material(M.tex_bricks, (2, 2), (0.7, 0.66, 0.58), (0.6, 0.58, 0.52), (0.6, 0.3), 0.012)]
    roof = b.material(M.tex_noisy, (2, 2), (0.3, 0.3, 0.32), 0.2, 2.0)
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

    bark = b.material(M.tex_wood, (1, 1), (0.3, 0.22, 0.16))
    leaves = b.material(M.tex_leaves, (1.5, 1.5))
    metal = b.material(M.tex_noisy, (1, 1), (0.2, 0.21, 0.22), 0.1, 3.0)
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
    bd.mats[0] = b.material(M.tex_backdrop, (90.0 - horizon[0], 2 * math.pi * R), horizon, emit=1.0, detail=0.0,
                            texel=max(0.25, texel * 10))
    bd.mats[1:] = b.material(M.tex_noisy, (60, 60), (0.5, 0.68, 0.9), 0.05, 0.02, emit=1.0, detail=0.0,
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


def _facade_on(b: SceneBuilder, box: Box, face: int, rng):
    kind = int(rng.integers(3))
    base = [(0.55, 0.3, 0.22), (0.78, 0.74, 0.64), (0.86, 0.8, 0.68)][kind]
    b.face_material(box, face, M.tex_facade, kind, tint(rng, base, 0.12), tint(rng, (0.9, 0.88, 0.82), 0.05),
                    tint(rng, (0.25, 0.3, 0.36), 0.2), bool(rng.random() < 0.6), bake=True)


def _make_actors(b: SceneBuilder, L: float, road_half: float) -> list:
    """Pedestrians (legs, torso, head) on the sidewalks and cars on the two lanes; transient."""
    rng = b.rng
    skin = [b.material(M.tex_noisy, (0.4, 0.4), c, 0.05, 5.0) for c in ((0.85, 0.68, 0.55), (0.55, 0.38, 0.28), (0.95, 0.8, 0.7))]
    cloth = [b.material(M.tex_fabric, (0.5, 0.5), rng.uniform(0.05, 0.9, 3)) for _ in range(6)]
    paint = [b.material(M.tex_noisy, (1, 1), rng.uniform(0.05, 0.9, 3), 0.04, 1.0) for _ in range(4)]
    glass = b.material(M.tex_noisy, (1, 1), (0.12, 0.14, 0.17), 0.1, 2.0)
    tyre = b.material(M.tex_noisy, (1, 1), (0.06, 0.06, 0.06), 0.1, 4.0)
    actors = []
    for _ in range(int(rng.integers(18, 27))):
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
