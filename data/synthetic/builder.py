"""SceneBuilder: collects materials (baked textures), primitives and lights, bakes static shadows into
the textures of large faces, and returns a :class:`Scene`."""
from __future__ import annotations

import math

import cv2
import numpy as np

from data.synthetic.atlas import TextureAtlas, canvas_dims
from data.synthetic.patterns import fbm
from data.synthetic.raycast import cast
from data.synthetic.render import Scene


class SceneBuilder:
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
        grain = 1 + 0.35 * fbm(np.random.default_rng([self.seed, 100, self._n_tex]), n, n, (period, period), 12.0, 6)
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
