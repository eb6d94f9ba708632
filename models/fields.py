"""NeFeS radiance-and-feature fields: the paper's MLP field and a hash-grid field.

Both fields share one interface (used by ``models/renderer.py``):

* ``density(x (N,3)) -> sigma (N,)``: static density only (coarse pass at test time);
* ``hidden(x (N,3), d (N,3) unit, transient=True) -> dict``: ``sigma (N,)``, ``h (N,H)`` the last
  hidden vector of the static colour/feature branch and, for a field with a transient branch and
  ``transient=True``, ``sigma_t (N,)``, ``rgb_t (N,3)`` in [0,1], ``beta_t (N,)``;
* ``static_head``: the ``nn.Linear(H, 3 + 128)`` that maps ``h`` to the static colour (3, linear,
  unbounded) and feature (128). Because it is linear, the renderer may composite ``h`` first and
  apply the head per ray (exactly equal, much cheaper than 131 outputs per sample);
* ``forward(x, d, transient=True) -> dict``: ``sigma, rgb (N,3), feat (N,128)`` (+ transient keys):
  the contract of docs/architecture.md.

Positions are NeRF-frame points, directions unit vectors in the same frame.
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from core.defaults import HASHGRID
from models.encodings import get_encoder

_logger = logging.getLogger(__name__)

FEAT_DIM = 128


class _FieldBase(nn.Module):
    """Shared ``forward`` built from ``hidden`` + ``static_head``."""

    has_transient: bool = False
    feat_dim: int = FEAT_DIM

    def forward(self, x: torch.Tensor, d: torch.Tensor, transient: bool = True) -> dict:
        out = self.hidden(x, d, transient=transient)
        cf = self.static_head(out.pop("h"))
        out["rgb"], out["feat"] = cf[:, :3], cf[:, 3:]
        return out


# ==============================================================================================
# The released architecture (spec §2.3, §7.1): parameter names exactly as the original checkpoints.
# ==============================================================================================
class NeFeSMLPField(_FieldBase):
    """The paper's NeRF-W-like field: frequency PE + 8x128 MLP with a skip at layer 5.

    Args:
        transient: build the fine-only transient branch (``transient_encoding``, ``transient_sigma``,
            ``transient_rgb``, ``transient_beta``).
        netdepth, netwidth: trunk layers / width (8, 128).
        multires, multires_views: PE octaves for positions / view directions (10 -> 63-d, 4 -> 27-d).
        skips: trunk layers (0-based) whose input is ``cat(PE(x), previous)`` ((4,): ``xyz_encoding_5``).
        feat_dim: feature width (128).
    """

    def __init__(self, transient: bool, netdepth: int = 8, netwidth: int = 128, multires: int = 10,
                 multires_views: int = 4, skips=(4,), feat_dim: int = FEAT_DIM):
        super().__init__()
        self.has_transient, self.feat_dim = bool(transient), int(feat_dim)
        self.netdepth, self.netwidth, self.skips = int(netdepth), int(netwidth), tuple(skips)
        self.embed_xyz, cx = get_encoder("frequency", n_freqs=multires)
        self.embed_dir, cd = get_encoder("frequency", n_freqs=multires_views)
        W = self.netwidth
        for i in range(self.netdepth):
            n_in = cx if i == 0 else (W + cx if i in self.skips else W)
            setattr(self, f"xyz_encoding_{i + 1}", nn.Sequential(nn.Linear(n_in, W), nn.ReLU()))
        self.xyz_encoding_final = nn.Linear(W, W)
        self.dir_encoding = nn.Sequential(nn.Linear(W + cd, W // 2), nn.ReLU())
        self.static_sigma = nn.Sequential(nn.Linear(W, 1), nn.Softplus())
        self.static_rgb = nn.Sequential(nn.Linear(W // 2, 3 + self.feat_dim))      # linear: colour + feature
        if self.has_transient:
            self.transient_encoding = nn.Sequential(
                nn.Linear(W + cd, W // 2), nn.ReLU(), nn.Linear(W // 2, W // 2), nn.ReLU(),
                nn.Linear(W // 2, W // 2), nn.ReLU())
            self.transient_sigma = nn.Sequential(nn.Linear(W // 2, 1), nn.Softplus())
            self.transient_rgb = nn.Sequential(nn.Linear(W // 2, 3), nn.Sigmoid())
            self.transient_beta = nn.Sequential(nn.Linear(W // 2, 1), nn.Softplus())

    @property
    def static_head(self) -> nn.Linear:
        return self.static_rgb[0]

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        ex = self.embed_xyz(x)
        h = ex
        for i in range(self.netdepth):
            if i in self.skips:
                h = torch.cat([ex, h], dim=-1)
            h = getattr(self, f"xyz_encoding_{i + 1}")(h)
        return h

    def density(self, x: torch.Tensor) -> torch.Tensor:
        return self.static_sigma(self._trunk(x)).squeeze(-1)

    def hidden(self, x: torch.Tensor, d: torch.Tensor, transient: bool = True) -> dict:
        t = self._trunk(x)
        out = {"sigma": self.static_sigma(t).squeeze(-1)}
        geo = torch.cat([self.xyz_encoding_final(t), self.embed_dir(d)], dim=-1)
        out["h"] = self.dir_encoding(geo)
        if self.has_transient and transient:
            tr = self.transient_encoding(geo)
            out["sigma_t"] = self.transient_sigma(tr).squeeze(-1)
            out["rgb_t"] = self.transient_rgb(tr)
            out["beta_t"] = self.transient_beta(tr).squeeze(-1)
        return out


# ==============================================================================================
# Hash-grid field (default for training new scenes).
# ==============================================================================================
class _TruncExp(torch.autograd.Function):
    """exp(x) whose gradient uses exp(clamp(x, max=15)) (instant-ngp's density activation: large
    densities cannot produce huge gradients)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.exp(x.clamp(max=80.0))         # finite in float32 (exp(89) overflows)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * torch.exp(x.clamp(max=15.0))


def trunc_exp(x: torch.Tensor) -> torch.Tensor:
    return _TruncExp.apply(x)


class HashGridField(_FieldBase):
    """Multiresolution hash encoding + small MLP heads, same outputs as the paper field.

    Positions are mapped to [0, 1]^3 per axis by the scene box ``(2, 3)`` (min, max corner, NeRF frame);
    density is zero outside the box. View directions use real spherical harmonics of degree 4 (16 values,
    cheaper than the 27-d PE). Layout: ``sigma_net`` (grid -> hidden -> 1 + geo_dim), density
    ``trunc_exp(raw + density_bias)`` (instant-ngp's activation: converges much faster than the paper
    field's Softplus on a hash grid); ``color_net`` ([geo, SH] -> hidden -> hidden) gives ``h`` and the
    linear ``static_rgb`` head (3 colour + 128 feature, unbounded as in the paper); the fine field's
    ``transient_net`` ([geo, SH] -> hidden/2 -> hidden/2) feeds ``transient_out``: Softplus density
    (shifted by -2 so it starts small), Sigmoid colour, Softplus beta.

    Args:
        scene_box: ``(2, 3)`` tensor, NeRF-frame axis-aligned bounds of the sampled space.
        transient: build the transient branch (fine field).
        hash_level, hash_features, log2_hashmap_size, base_resolution, finest_resolution: grid config.
        hidden: width of the density and colour MLPs (``hg_hidden``).
        geo_dim: width of the geometry feature passed from the density MLP to the colour branches.
        use_tcnn: forwarded to :class:`models.hashgrid.HashGridEncoding`.
        density_bias: added to the raw density before ``exp`` (negative: start nearly empty).
    """

    def __init__(self, scene_box: torch.Tensor, transient: bool, hash_level: int = HASHGRID["hash_level"],
                 hash_features: int = HASHGRID["hash_features"], log2_hashmap_size: int = HASHGRID["log2_hashmap_size"],
                 base_resolution: int = HASHGRID["base_resolution"],
                 finest_resolution: int = HASHGRID["finest_resolution"], hidden: int = HASHGRID["hg_hidden"],
                 geo_dim: int = HASHGRID["hg_geo_dim"], feat_dim: int = FEAT_DIM, use_tcnn: str = "auto",
                 density_bias: float = -1.0):
        super().__init__()
        self.has_transient, self.feat_dim = bool(transient), int(feat_dim)
        self.density_bias = float(density_bias)
        box = torch.as_tensor(scene_box, dtype=torch.float32).reshape(2, 3)
        if not bool((box[1] > box[0]).all()):
            raise ValueError(f"HashGridField: scene_box max must exceed min on every axis, got {box.tolist()}")
        self.register_buffer("scene_box", box)
        self.encoding, n_enc = get_encoder("hashgrid", n_levels=hash_level, n_features_per_level=hash_features,
                                           log2_hashmap_size=log2_hashmap_size, base_resolution=base_resolution,
                                           finest_resolution=finest_resolution, use_tcnn=use_tcnn)
        self.dir_enc, n_dir = get_encoder("sh", degree=4)
        self.geo_dim = int(geo_dim)
        self.sigma_net = nn.Sequential(nn.Linear(n_enc, hidden), nn.ReLU(), nn.Linear(hidden, 1 + self.geo_dim))
        self.color_net = nn.Sequential(nn.Linear(self.geo_dim + n_dir, hidden), nn.ReLU(),
                                       nn.Linear(hidden, hidden), nn.ReLU())
        self.static_rgb = nn.Linear(hidden, 3 + self.feat_dim)
        if self.has_transient:
            th = max(hidden // 2, 16)
            self.transient_net = nn.Sequential(nn.Linear(self.geo_dim + n_dir, th), nn.ReLU(),
                                               nn.Linear(th, th), nn.ReLU())
            self.transient_out = nn.Linear(th, 5)       # sigma_t, rgb_t (3), beta_t

    @property
    def static_head(self) -> nn.Linear:
        return self.static_rgb

    def _to_unit(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = self.scene_box[0], self.scene_box[1]
        u = (x - lo) / (hi - lo)
        inside = ((u >= 0) & (u <= 1)).all(dim=-1)
        return u.clamp(0.0, 1.0), inside

    def _geometry(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u, inside = self._to_unit(x)
        raw = self.sigma_net(self.encoding(u))
        sigma = torch.where(inside, trunc_exp(raw[:, 0] + self.density_bias), torch.zeros_like(raw[:, 0]))
        return sigma, raw[:, 1:]

    def density(self, x: torch.Tensor) -> torch.Tensor:
        """sigma only (the coarse pass): the last layer's density row alone, the ReLU in place."""
        u, inside = self._to_unit(x)
        first, last = self.sigma_net[0], self.sigma_net[2]
        h = torch.relu_(F.linear(self.encoding(u), first.weight, first.bias))
        raw = F.linear(h, last.weight[:1], last.bias[:1])[:, 0]
        return torch.where(inside, trunc_exp(raw + self.density_bias), torch.zeros_like(raw))

    def hidden(self, x: torch.Tensor, d: torch.Tensor, transient: bool = True) -> dict:
        sigma, geo = self._geometry(x)
        gd = torch.cat([geo, self.dir_enc(d)], dim=-1)
        out = {"sigma": sigma, "h": self.color_net(gd)}
        if self.has_transient and transient:
            t = self.transient_out(self.transient_net(gd))
            out["sigma_t"] = F.softplus(t[:, 0] - 2.0)          # start with little transient density
            out["rgb_t"] = torch.sigmoid(t[:, 1:4])
            out["beta_t"] = F.softplus(t[:, 4])
        return out
