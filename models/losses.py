"""Losses and image metrics of NeFeS (spec §3, §5): pure functions on tensors.

* :func:`nerfw_color_loss` -- NeRF-W colour loss of NeFeS training (coarse raw MSE, beta-weighted
  fine ACT colour, log beta, transient density sparsity);
* :func:`l1_feature_loss` -- L1 feature / fusion loss (optionally restricted to static pixels);
* :func:`feature_cosine_loss` -- the refinement loss (the original's ``FeatureLoss``), 1 - mean cosine
  similarity per channel (over pixels) or per pixel (over channels);
* :func:`psnr`, :func:`ssim` -- the verification metrics (SSIM: 7x7 box filter, reflection padding).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def nerfw_color_loss(rgb: torch.Tensor, target: torch.Tensor, beta: torch.Tensor,
                     transient_sigmas: torch.Tensor, rgb0: torch.Tensor | None = None,
                     lambda_u: float = 0.01) -> dict:
    """NeRF-W colour loss over R rays.

    Args:
        rgb: ``(R, 3)`` fine colour AFTER the ACT.
        target: ``(R, 3)`` target colour in [0, 1].
        beta: ``(R,)`` composited uncertainty (already + 0.1).
        transient_sigmas: ``(R, S)`` fine transient densities.
        rgb0: ``(R, 3)`` raw coarse colour (no ACT) or ``None``.
        lambda_u: weight of the transient-density term.
    Returns:
        dict of scalar terms ``coarse`` (0.5 MSE), ``fine`` (mean ||c'-c||^2 / (2 beta^2) over R x 3),
        ``beta`` (3 + mean log beta), ``sigma_t`` (lambda_u mean sigma_t) and their sum ``total``.
    """
    terms = {}
    if rgb0 is not None:
        terms["coarse"] = 0.5 * ((rgb0 - target) ** 2).mean()
    terms["fine"] = (((rgb - target) ** 2) / (2 * beta[:, None] ** 2)).mean()
    terms["beta"] = 3.0 + torch.log(beta).mean()          # +3 only keeps the value positive
    terms["sigma_t"] = lambda_u * transient_sigmas.mean()
    terms["total"] = sum(terms.values())
    return terms


def l1_feature_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute difference, optionally over the pixels where ``mask`` is true.

    Shapes: ``(R, C)`` with mask ``(R,)``, or ``(B, C, h, w)`` with mask ``(B, h, w)`` / ``(B, 1, h, w)``.
    """
    diff = (pred - target).abs()
    if mask is None:
        return diff.mean()
    if diff.dim() == 4:
        m = mask.reshape(mask.shape[0], 1, *diff.shape[-2:]).to(diff.dtype)
        return (diff * m).sum() / (m.sum() * diff.shape[1]).clamp(min=1.0)
    m = mask.reshape(-1, 1).to(diff.dtype)
    return (diff * m).sum() / (m.sum() * diff.shape[1]).clamp(min=1.0)


def feature_cosine_loss(pred: torch.Tensor, target: torch.Tensor, per_pixel: bool = False,
                        eps: float = 1e-6) -> torch.Tensor:
    """``1 - mean cosine similarity`` of feature maps ``(C, H, W)`` or ``(B, C, H, W)``.

    ``per_pixel=False`` (paper): one cosine per channel, taken over the H*W pixels, averaged over
    channels (and images). ``per_pixel=True``: one cosine per pixel over the C channels.
    """
    if pred.dim() == 3:
        pred, target = pred.unsqueeze(0), target.unsqueeze(0)
    a = pred.flatten(2)                                      # (B, C, HW)
    b = target.flatten(2)
    cos = F.cosine_similarity(a, b, dim=1 if per_pixel else 2, eps=eps)
    return 1.0 - cos.mean()


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``-10 log10(MSE)`` (no clamping, as the original)."""
    return -10.0 * torch.log10(((pred - target) ** 2).mean())


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 7) -> torch.Tensor:
    """Mean SSIM of ``(B, C, H, W)`` images in [0, 1] (the original's verification SSIM).

    Local means/variances over a ``window x window`` box after reflection padding,
    ``C1 = 0.01^2``, ``C2 = 0.03^2``; the SSIM map is clamped to [0, 1] and averaged.
    """
    pad = window // 2
    x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    y = F.pad(y, (pad, pad, pad, pad), mode="reflect")
    box = lambda t: F.avg_pool2d(t, window, stride=1)      # noqa: E731
    mu_x, mu_y = box(x), box(y)
    var_x = box(x * x) - mu_x ** 2
    var_y = box(y * y) - mu_y ** 2
    cov = box(x * y) - mu_x * mu_y
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2)
    return (num / den).clamp(0.0, 1.0).mean()
