"""Depths along rays: uniform/stratified coarse samples and inverse-CDF fine samples (spec §2.4).

Samplers only produce depths ``z`` (distance along the optical axis, because ray directions are not
normalised); the renderer turns them into points ``o + z d``.
"""
from __future__ import annotations

import torch


def coarse_depths(n_rays: int, n_samples: int, near: float, far: float, perturb: bool = False,
                  lindisp: bool = False, generator: torch.Generator | None = None, device=None,
                  dtype=torch.float32) -> torch.Tensor:
    """``(n_rays, n_samples)`` depths from near to far inclusive.

    ``perturb``: stratified sampling, each depth drawn uniformly between the midpoints around it (the
    first/last interval ends at near/far). ``lindisp``: linear in inverse depth (needs near > 0).
    """
    t = torch.linspace(0.0, 1.0, n_samples, device=device, dtype=dtype)
    if lindisp:
        z = 1.0 / (1.0 / near * (1.0 - t) + 1.0 / far * t)
    else:
        z = near * (1.0 - t) + far * t
    z = z.expand(n_rays, n_samples)
    if perturb:
        mids = 0.5 * (z[:, 1:] + z[:, :-1])
        upper = torch.cat([mids, z[:, -1:]], dim=-1)
        lower = torch.cat([z[:, :1], mids], dim=-1)
        u = _uniform(z.shape, generator, z.device, dtype)
        z = lower + (upper - lower) * u
    return z.contiguous()


def _uniform(shape, generator, device, dtype):
    """U(0,1) on ``device``; a CPU generator works for CUDA tensors too (draw on CPU, then move)."""
    device = torch.device("cpu") if device is None else torch.device(device)
    if generator is not None and generator.device.type != device.type:
        return torch.rand(shape, generator=generator, dtype=dtype).to(device)
    return torch.rand(shape, generator=generator, device=device, dtype=dtype)


def sample_pdf(bins: torch.Tensor, weights: torch.Tensor, n_samples: int, det: bool = False,
               generator: torch.Generator | None = None, det_midpoints: bool = False) -> torch.Tensor:
    """Inverse-CDF sampling of a piecewise-constant pdf (NeRF's hierarchical sampling).

    Args:
        bins: ``(R, M+1)`` bin edges (the renderer passes the midpoints of the coarse depths).
        weights: ``(R, M)`` non-negative bin weights (the renderer passes coarse weights 1..S-2).
        n_samples: samples per ray.
        det: ``u = linspace(0, 1, n)`` (test time, as the original) instead of ``u ~ U(0, 1)``.
        det_midpoints: with ``det``, use ``u = (i + 0.5) / n`` instead: no sample is spent on the
            ends of the pdf's support (used when the fine field sees the fine samples only).
    Returns:
        ``(R, n_samples)`` depths, **detached** (gradients never flow through the sample positions).
    """
    bins, weights = bins.detach(), weights.detach()
    w = weights + 1e-5                                                     # no empty pdf
    pdf = w / w.sum(dim=-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, dim=-1)], dim=-1)   # (R, M+1)
    R = cdf.shape[0]
    if det and det_midpoints:
        u = ((torch.arange(n_samples, device=cdf.device, dtype=cdf.dtype) + 0.5) / n_samples).expand(R, n_samples)
    elif det:
        u = torch.linspace(0.0, 1.0, n_samples, device=cdf.device, dtype=cdf.dtype).expand(R, n_samples)
    else:
        u = _uniform((R, n_samples), generator, cdf.device, cdf.dtype)
    u = u.contiguous()
    idx = torch.searchsorted(cdf, u, right=True)
    below = (idx - 1).clamp(min=0)
    above = idx.clamp(max=cdf.shape[-1] - 1)
    cdf_lo, cdf_hi = cdf.gather(1, below), cdf.gather(1, above)
    bin_lo, bin_hi = bins.gather(1, below), bins.gather(1, above)
    denom = cdf_hi - cdf_lo
    denom = torch.where(denom < 1e-5, torch.ones_like(denom), denom)
    t = (u - cdf_lo) / denom
    return bin_lo + t * (bin_hi - bin_lo)
