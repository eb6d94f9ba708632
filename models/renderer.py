"""Volume rendering of NeFeS (spec §2.4): hierarchical sampling, NeRF-W compositing, chunking.

Compositing (fine field with its transient branch, used in training and, with
``transient_at_test=True``, at test time):

    delta_i = z_{i+1} - z_i, delta_last = 100 (not scaled by |d|)
    alpha_i = 1 - exp(-delta_i (sigma_i + sigma_t_i)),  T_i = prod_{j<i} (1 - alpha_j)
    w_s_i = (1 - exp(-delta_i sigma_i)) T_i,  w_t_i = (1 - exp(-delta_i sigma_t_i)) T_i,  w_i = alpha_i T_i
    rgb = sum w_s c_s + sum w_t c_t           (raw, unbounded; the ACT is applied by the caller)
    feat = sum stopgrad(w_s) f                 (feature losses never shape density)
    beta = sum w_t beta_t + 0.1, depth = sum w z, acc = sum w

Without the transient branch (``transient=False``) the static-only transmittance is used.
Coarse compositing is static only (``alpha = 1 - exp(-delta sigma)``).

Because the static colour/feature head is linear in the field's last hidden vector ``h``, this module
composites ``h`` and applies the head per ray: ``sum w (W h + b) = W (sum w h) + b sum w`` (exact;
``linear_heads=False`` applies it per sample, for tests).

Shapes: R rays, S samples per ray, H hidden width. Chunking by ``chunk`` rays and ``netchunk`` points
changes memory only, never results.
"""
from __future__ import annotations

import logging

import torch

from core.defaults import CHUNK, NETCHUNK
from models.rays import get_rays, patch_pixels, pixel_grid, view_dirs
from models.samplers import coarse_depths, sample_pdf

_logger = logging.getLogger(__name__)

BETA_MIN = 0.1
LAST_DELTA = 100.0


# ----------------------------------------------------------------------------------------------
# compositing
# ----------------------------------------------------------------------------------------------
def _deltas(z: torch.Tensor) -> torch.Tensor:
    """``(R, S)`` sample spacings, the last one 100."""
    return torch.cat([z[:, 1:] - z[:, :-1], torch.full_like(z[:, :1], LAST_DELTA)], dim=-1)


def _transmittance(alpha: torch.Tensor) -> torch.Tensor:
    """``T_i = prod_{j<i} (1 - alpha_j)`` along dim 1 (exclusive cumulative product)."""
    return torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha[:, :-1]], dim=-1), dim=-1)


def static_weights(sigma: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """NeRF weights ``alpha_i T_i`` of a static density ``(R, S)``."""
    alpha = 1.0 - torch.exp(-_deltas(z) * sigma)
    return alpha * _transmittance(alpha)


def nerfw_weights(sigma: torch.Tensor, sigma_t: torch.Tensor, z: torch.Tensor):
    """NeRF-W weights ``(w_s, w_t, w)``, each ``(R, S)``, with the joint transmittance."""
    dl = _deltas(z)
    alpha = 1.0 - torch.exp(-dl * (sigma + sigma_t))
    T = _transmittance(alpha)
    return (1.0 - torch.exp(-dl * sigma)) * T, (1.0 - torch.exp(-dl * sigma_t)) * T, alpha * T


def distortion(w: torch.Tensor, z: torch.Tensor, near: float, far: float) -> torch.Tensor:
    """Per-ray distortion ``(R,)`` of weights ``w`` at sorted depths ``z`` (mip-NeRF 360's regulariser, in
    depth normalised to [0, 1] by near/far, each sample standing for the interval between its neighbours'
    midpoints): small when a ray's weight sits in one compact interval, large for weight spread along
    the ray, e.g. semi-transparent floaters in front of the surface. O(S) with cumulative sums."""
    s = (z - near) / (far - near)
    edges = torch.cat([s[:, :1], 0.5 * (s[:, 1:] + s[:, :-1]), s[:, -1:]], dim=-1)
    ws = w * s
    pairs = 2.0 * (w * (s * (torch.cumsum(w, -1) - w) - (torch.cumsum(ws, -1) - ws))).sum(-1)  # sum_ij w_i w_j |s_i - s_j|
    return pairs + (w * w * (edges[:, 1:] - edges[:, :-1])).sum(-1) / 3.0


def _weighted_sum(w: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``(R, S) x (R, S, C) -> (R, C)``."""
    return torch.bmm(w.unsqueeze(1), v).squeeze(1)


def _static_maps(field, h: torch.Tensor, w_s: torch.Tensor, with_feat: bool, linear_heads: bool):
    """Static colour ``(R, 3)`` (weights with grad) and feature ``(R, 128)`` (detached weights)."""
    lin = field.static_head
    if not linear_heads:
        cf = lin(h)                                                            # (R, S, 3+C)
        rgb = _weighted_sum(w_s, cf[..., :3].contiguous())
        feat = _weighted_sum(w_s.detach(), cf[..., 3:].contiguous()) if with_feat else None
        return rgb, feat
    W, b = lin.weight, lin.bias
    rgb = _weighted_sum(w_s, h) @ W[:3].t() + w_s.sum(1, keepdim=True) * b[:3]
    feat = None
    if with_feat:
        w_ng = w_s.detach()
        feat = _weighted_sum(w_ng, h) @ W[3:].t() + w_ng.sum(1, keepdim=True) * b[3:]
    return rgb, feat


# ----------------------------------------------------------------------------------------------
# field evaluation in point chunks
# ----------------------------------------------------------------------------------------------
def _run_hidden(field, pts: torch.Tensor, vdirs: torch.Tensor, transient: bool, netchunk: int) -> dict:
    """``field.hidden`` on ``(R, S, 3)`` points in chunks of ``netchunk`` points -> dict of ``(R, S, ...)``."""
    R, S, _ = pts.shape
    x = pts.reshape(-1, 3)
    d = vdirs[:, None, :].expand(R, S, 3).reshape(-1, 3)
    parts = [field.hidden(x[i:i + netchunk], d[i:i + netchunk], transient=transient)
             for i in range(0, x.shape[0], netchunk)]
    out = parts[0] if len(parts) == 1 else {k: torch.cat([p[k] for p in parts], 0) for k in parts[0]}
    return {k: v.reshape(R, S, *v.shape[1:]) for k, v in out.items()}


def _run_density(field, pts: torch.Tensor, netchunk: int) -> torch.Tensor:
    R, S, _ = pts.shape
    x = pts.reshape(-1, 3)
    parts = [field.density(x[i:i + netchunk]) for i in range(0, x.shape[0], netchunk)]
    return (parts[0] if len(parts) == 1 else torch.cat(parts, 0)).reshape(R, S)


# ----------------------------------------------------------------------------------------------
# rays -> outputs
# ----------------------------------------------------------------------------------------------
def _coarse_only(model, pts_c, vd, z_c, with_feat, netchunk, linear_heads, with_distortion, near, far) -> dict:
    """The original's ``N_importance = 0`` path: the coarse field alone, static compositing."""
    hid = _run_hidden(model.coarse, pts_c, vd, False, netchunk)
    w = static_weights(hid["sigma"], z_c)
    rgb, feat = _static_maps(model.coarse, hid["h"], w, with_feat, linear_heads)
    out = {"rgb": rgb, "depth": (w * z_c).sum(1), "acc": w.sum(1)}
    if with_distortion:
        out["distortion"] = distortion(w, z_c, near, far)
    if with_feat:
        out["feat"] = feat
    return out


def _coarse_weights(model, pts_c, vd, z_c, need_coarse, raw_noise_std, generator, netchunk, linear_heads):
    """Coarse weights ``(R, Sc)`` for the fine sampling, and (training) the raw coarse colour."""
    if not need_coarse:
        # the fine samples are detached, so the coarse pass needs no graph (exact, and cheaper)
        with torch.no_grad():
            return static_weights(_run_density(model.coarse, pts_c, netchunk), z_c), {}
    hid = _run_hidden(model.coarse, pts_c, vd, False, netchunk)
    sigma = hid["sigma"]
    if raw_noise_std > 0:                                  # NeRF's density noise (training regulariser)
        sigma = sigma + _noise(sigma, raw_noise_std, generator)
    w_c = static_weights(sigma, z_c)
    rgb0, _ = _static_maps(model.coarse, hid["h"], w_c, False, linear_heads)
    return w_c, {"rgb0": rgb0, "acc0": w_c.sum(1)}


def _render_chunk(model, rays_o, rays_d, near, far, N_samples, N_importance, perturb, transient, with_feat,
                  need_coarse, netchunk, generator, raw_noise_std, lindisp, linear_heads, fine_only,
                  with_distortion) -> dict:
    R = rays_o.shape[0]
    vd = view_dirs(rays_d)
    z_c = coarse_depths(R, N_samples, near, far, perturb=perturb, lindisp=lindisp, generator=generator,
                        device=rays_o.device, dtype=rays_o.dtype)
    pts_c = rays_o[:, None, :] + rays_d[:, None, :] * z_c[..., None]           # (R, Sc, 3)
    if N_importance <= 0:
        return _coarse_only(model, pts_c, vd, z_c, with_feat, netchunk, linear_heads, with_distortion, near, far)
    w_c, out = _coarse_weights(model, pts_c, vd, z_c, need_coarse, raw_noise_std, generator, netchunk,
                               linear_heads)

    mids = 0.5 * (z_c[:, 1:] + z_c[:, :-1])
    z_f = sample_pdf(mids, w_c[:, 1:-1], N_importance, det=not perturb, generator=generator,
                     det_midpoints=fine_only)
    z, _ = torch.sort(z_f if fine_only else torch.cat([z_c, z_f], dim=-1), dim=-1)
    z = z.detach()                                                             # (R, S)
    pts = rays_o[:, None, :] + rays_d[:, None, :] * z[..., None]               # (R, S, 3)

    use_t = transient and model.fine.has_transient
    hid = _run_hidden(model.fine, pts, vd, use_t, netchunk)
    if use_t:
        w_s, w_t, w = nerfw_weights(hid["sigma"], hid["sigma_t"], z)
    else:
        w_s = w = static_weights(hid["sigma"], z)
    rgb, feat = _static_maps(model.fine, hid["h"], w_s, with_feat, linear_heads)
    if use_t:
        rgb = rgb + _weighted_sum(w_t, hid["rgb_t"])
        out["beta"] = (w_t * hid["beta_t"]).sum(1) + BETA_MIN
        out["transient_sigmas"] = hid["sigma_t"]
    out["rgb"], out["depth"], out["acc"] = rgb, (w * z).sum(1), w.sum(1)
    if with_distortion:   # training with distortion_loss_w: both fields' distortion
        out["distortion"] = distortion(w, z, near, far) + distortion(w_c, z_c, near, far)
    if with_feat:
        out["feat"] = feat
    return out


def _noise(like: torch.Tensor, std: float, generator) -> torch.Tensor:
    if generator is not None and generator.device.type != like.device.type:
        return torch.randn(like.shape, generator=generator, dtype=like.dtype).to(like.device) * std
    return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype) * std


def render_rays(model, rays_o: torch.Tensor, rays_d: torch.Tensor, near: float, far: float,
                N_samples: int = 64, N_importance: int = 64, perturb: bool = False, transient: bool = True,
                with_feat: bool = True, need_coarse: bool = False, chunk: int = CHUNK,
                netchunk: int = NETCHUNK, generator: torch.Generator | None = None,
                raw_noise_std: float = 0.0, lindisp: bool = False, linear_heads: bool = True,
                fine_only: bool | None = None, with_distortion: bool = False) -> dict:
    """Render a batch of rays with a :class:`models.nefes.NeFeS`.

    Args:
        rays_o, rays_d: ``(R, 3)`` NeRF-frame origins and (unnormalised) directions.
        near, far: depth bounds along the optical axis.
        N_samples, N_importance: coarse samples, extra inverse-CDF fine samples (fine field on the
            sorted union); ``N_importance = 0`` renders with the coarse field alone.
        perturb: stratified coarse samples and random fine samples (training); else deterministic.
        transient: composite with the fine field's transient branch (training; ``transient_at_test``).
        with_feat: also composite the 128-d features.
        need_coarse: evaluate the coarse field with gradients and return its raw colour ``rgb0``
            (training); otherwise only its density is evaluated, under ``no_grad``.
        chunk, netchunk: rays / points per chunk (memory only).
        generator: RNG for perturbation (and ``raw_noise_std``).
        raw_noise_std: std of Gaussian noise added to the coarse density when ``need_coarse``.
        lindisp: coarse samples linear in inverse depth.
        linear_heads: composite the hidden vector, then apply the linear colour/feature head (exact).
        fine_only: evaluate the fine field on the N_importance samples only instead of the sorted
            union with the coarse samples (faster; ``None``: the model's ``fine_only`` attribute,
            stored in its hparams; always False for the paper field). Deterministic fine samples then
            use the pdf's quantile midpoints ``(i + 0.5) / n`` instead of ``linspace(0, 1, n)``.
        with_distortion: also return ``distortion (R,)``, :func:`distortion` of the fine plus the coarse
            weights (training with ``distortion_loss_w``; the coarse part has gradients with ``need_coarse``).
    Returns:
        dict: ``rgb (R,3)`` raw fine colour (before ACT), ``feat (R,128)``, ``depth (R,)``, ``acc (R,)``;
        with the transient branch also ``beta (R,)`` and ``transient_sigmas (R,S)``; with
        ``need_coarse`` also ``rgb0 (R,3)`` (raw coarse colour) and ``acc0 (R,)``; with
        ``with_distortion`` also ``distortion (R,)``.
    """
    if fine_only is None:
        fine_only = bool(getattr(model, "fine_only", False))
    kw = dict(near=near, far=far, N_samples=N_samples, N_importance=N_importance, perturb=bool(perturb),
              transient=transient, with_feat=with_feat, need_coarse=need_coarse, netchunk=int(netchunk),
              generator=generator, raw_noise_std=raw_noise_std, lindisp=lindisp, linear_heads=linear_heads,
              fine_only=fine_only, with_distortion=with_distortion)
    parts = [_render_chunk(model, rays_o[i:i + chunk], rays_d[i:i + chunk], **kw)
             for i in range(0, rays_o.shape[0], int(chunk))]
    if len(parts) == 1:
        return parts[0]
    return {k: torch.cat([p[k] for p in parts], 0) for k in parts[0]}


# ----------------------------------------------------------------------------------------------
# images, pixel batches, patches (ACT applied per image)
# ----------------------------------------------------------------------------------------------
def pixel_center(model) -> float:
    """Where the model's rays pass through a pixel (``hparams['pixel_center']``; 0, the original's
    convention, for models without it): see ``models/rays.py``."""
    return float(getattr(model, "pixel_center", 0.0))


def render_pixels(model, c2w_nerf: torch.Tensor, uv: torch.Tensor, h: int, w: int, focal: float, near: float,
                  far: float, hist: torch.Tensor, **kw) -> dict:
    """Render chosen pixels of B images (random-ray training), rays through the model's :func:`pixel_center`.

    Args:
        c2w_nerf: ``(B, 3, 4)`` NeRF-frame poses.
        uv: ``(R, 2)`` pixel ``(u, v)`` coordinates shared by all images, or ``(B, R, 2)``.
        hist: ``(B, 10)`` histograms.
        **kw: :func:`render_rays` options (``perturb``, ``need_coarse``, ``N_samples``, ...).
    Returns:
        :func:`render_rays` outputs flattened image by image (``B*R`` rays), with ``rgb`` the ACT
        colour in (0, 1) and ``rgb_raw`` the raw fine colour.
    """
    rays_o, rays_d = get_rays(c2w_nerf, h, w, focal, uv, pixel_center(model))  # (B, R, 3)
    B, R = rays_o.shape[:2]
    out = render_rays(model, rays_o.reshape(-1, 3), rays_d.reshape(-1, 3), near, far, **kw)
    out["rgb_raw"] = out["rgb"]
    out["rgb"] = model.apply_act(out["rgb"].reshape(B, R, 3), hist.reshape(B, -1)).reshape(B * R, 3)
    return out


def render_image(model, c2w_nerf: torch.Tensor, h: int, w: int, focal: float, near: float, far: float,
                 hist: torch.Tensor, fuse: bool = True, N_samples: int = 64, N_importance: int = 64,
                 transient: bool = True, per_image_stats: bool = False, with_feat: bool = True, **kw) -> dict:
    """Render full image(s) deterministically, differentiable w.r.t. ``c2w_nerf``.

    Args:
        c2w_nerf: ``(3, 4)`` (or ``(B, 3, 4)``) NeRF-frame camera-to-world pose.
        h, w, focal: render size and focal (pixels at that size).
        hist: ``(10,)`` (or ``(B, 10)``) histogram of the query image.
        fuse: also run the fusion CNN (BN on the statistics of this map).
        transient: ``transient_at_test``.
        per_image_stats: with B poses, each fused map is normalised with its own statistics, exactly as
            if it were rendered alone (batched refinement); else the B maps share them (training).
        with_feat: False renders colour (and depth) only: no features, no fusion (photometric refinement).
        **kw: other :func:`render_rays` options (``chunk``, ``netchunk``, ``lindisp``, ...).
    Returns:
        dict: ``rgb (B,3,h,w)`` after ACT, ``feat (B,128,h,w)``, ``fused (B,128,h,w)`` (if ``fuse``),
        ``depth (B,h,w)``, ``acc (B,h,w)``.
    """
    c2w_b = c2w_nerf.unsqueeze(0) if c2w_nerf.dim() == 2 else c2w_nerf
    hist_b = hist.reshape(c2w_b.shape[0], -1)
    kw.setdefault("perturb", False)
    out = render_pixels(model, c2w_b, _full_grid(h, w, c2w_b), h, w, focal, near, far, hist_b,
                        N_samples=N_samples, N_importance=N_importance, transient=transient, with_feat=with_feat, **kw)
    B = c2w_b.shape[0]
    res = {"rgb": out["rgb"].reshape(B, h, w, 3).permute(0, 3, 1, 2),
           "depth": out["depth"].reshape(B, h, w), "acc": out["acc"].reshape(B, h, w)}
    if with_feat:
        res["feat"] = out["feat"].reshape(B, h, w, -1).permute(0, 3, 1, 2)
    if fuse and with_feat:
        res["fused"] = model.fuse(res["rgb"], res["feat"], per_image_stats)
    return res


def _full_grid(h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    return pixel_grid(h, w, device=like.device, dtype=like.dtype)


def render_patches(model, c2w_nerf: torch.Tensor, h: int, w: int, focal: float, near: float, far: float,
                   hist: torch.Tensor, corners: torch.Tensor, size: int = 16, fuse: bool = True, **kw) -> dict:
    """Render the same P square patches in each of B images (stage-3 training, spec §4.3).

    Args:
        c2w_nerf: ``(B, 3, 4)`` poses; hist: ``(B, 10)``.
        corners: ``(P, 2)`` top-left corners ``[row, col]`` shared by all images.
        size: patch side (16).
        **kw: :func:`render_rays` options (training: ``perturb=True, need_coarse=True``).
    Returns:
        dict: ``rgb (B*P,3,s,s)`` after ACT, ``feat (B*P,128,s,s)``, ``fused (B*P,128,s,s)``
        (fusion CNN with zero padding at patch borders, BN over the B*P patches), and ``rays``:
        the per-ray outputs of :func:`render_pixels`, rays ordered image -> patch -> row -> column.
    """
    uv = patch_pixels(corners, size).to(c2w_nerf.device)
    rays = render_pixels(model, c2w_nerf, uv, h, w, focal, near, far, hist, with_feat=True, **kw)
    B, P = c2w_nerf.shape[0], uv.shape[0] // (size * size)

    def to_patches(v):                                                       # (B*P*s*s, C) -> (B*P, C, s, s)
        return v.reshape(B * P, size, size, -1).permute(0, 3, 1, 2)

    res = {"rgb": to_patches(rays["rgb"]), "feat": to_patches(rays["feat"]), "rays": rays}
    if fuse:
        res["fused"] = model.fuse(res["rgb"], res["feat"])
    return res
