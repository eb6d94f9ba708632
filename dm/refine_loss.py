"""The paper's refinement loss (spec §5.1) and its least-squares form, evaluated at the render size.

The paper upsamples the fused render-size map ``x`` (C, h, w) bicubically to the working size
(H, W), crops ``crop`` pixels on every border of it and of the query's features ``t``, and takes
``1 - mean_c cos(U x_c, t_c)`` per channel. Bicubic upsampling and cropping are linear and
separable, ``U x = M_h x M_wᵀ``, so everything can be computed at the render size:

* :class:`UpsampledCosineLoss` (APR fine-tuning, one query): the dot product against the target
  pulled back once, the norm through the QR factors ``M = Q R``.
* :class:`FeatureResidual` (pose_only=4, many queries): with ``y_c = R_h x_c R_wᵀ`` (orthonormal
  coordinates of ``U x_c``) and ``s_c = Q_hᵀ t̂_c Q_w``, ``1 - cos_c = ½ |y_c/|y_c| - s_c|² + ½ (1 - |s_c|²)``.
  So ``r_c = y_c/|y_c| - s_c`` is a residual whose squared norm is the paper's loss up to a constant:
  Gauss-Newton / Levenberg-Marquardt on it minimises exactly the paper's objective. An optional
  Gaussian blur ``sigma`` (working pixels, applied to both maps before the crop) gives the same loss
  on smoothed features, for a coarse-to-fine start.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from models.losses import feature_cosine_loss


@functools.lru_cache(maxsize=8)
def _bicubic_matrix(n: int, N: int, device_type: str) -> torch.Tensor:
    """(N, n) matrix of 1-D bicubic resampling n -> N (align_corners=False), built by resampling an identity
    (in float64, so the weights are exact for any input dtype)."""
    eye = torch.eye(n, dtype=torch.float64, device=device_type)[None, None]
    return F.interpolate(eye, size=(N, n), mode="bicubic", align_corners=False)[0, 0]


@functools.lru_cache(maxsize=16)
def _gaussian_matrix(n: int, sigma: float, device_type: str) -> torch.Tensor:
    """(n, n) Gaussian smoothing of a 1-D signal (std ``sigma`` samples, ±3 sigma, rows renormalised at the
    borders so a constant stays constant); the identity for ``sigma <= 0``."""
    if sigma <= 0:
        return torch.eye(n, dtype=torch.float64, device=device_type)
    i = torch.arange(n, dtype=torch.float64, device=device_type)
    d = i[:, None] - i[None, :]
    G = torch.exp(-0.5 * (d / sigma) ** 2) * (d.abs() <= math.ceil(3 * sigma))
    return G / G.sum(1, keepdim=True)


def bicubic_resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``F.interpolate(x, size, mode='bicubic', align_corners=False)`` as two small matmuls.

    Bicubic resampling is separable and linear, so it equals ``M_h · x · M_wᵀ`` (to float rounding);
    forward + backward are ~4x faster on CPU than the generic kernel for 128-channel maps.
    """
    Mh = _bicubic_matrix(x.shape[-2], size[0], x.device.type).to(x.dtype)
    Mw = _bicubic_matrix(x.shape[-1], size[1], x.device.type).to(x.dtype)
    return torch.matmul(torch.matmul(Mh, x), Mw.t())


def crop_border(x: torch.Tensor, c: int) -> torch.Tensor:
    """Drop ``c`` pixels on every border of the last two dimensions."""
    return x[..., c:x.shape[-2] - c, c:x.shape[-1] - c] if c > 0 else x


def check_crop(crop: int, H: int, W: int) -> None:
    if crop < 0 or 2 * crop >= min(H, W):
        raise ValueError(f"refine_crop={crop} leaves no pixels of the {W}x{H} working image "
                         f"(needs 0 <= refine_crop <= {(min(H, W) - 1) // 2})")


class UpsampledCosineLoss:
    """The paper's per-channel refinement loss on upsampled features, evaluated at the render size.

    Equals ``feature_cosine_loss(crop(bicubic(x, (H, W))), crop(target))`` (per channel, spec §5.1) up to
    float rounding, without building the (C, H, W) map: the cropped upsampling is ``U = M_h x M_wᵀ``
    (rows ``crop..H-crop`` of the bicubic matrices), so per channel

        <U, t / |t|> = <x, M_hᵀ (t / |t|) M_w>     (the right factor is fixed per query: built once)
        |U|^2 = |R_h x R_wᵀ|^2                      (M = Q R, Q with orthonormal columns)

    Both are contractions at the render size (4x fewer values at tinyscale 2, 16x at 4), and the norms
    are clamped at ``eps`` as ``torch.nn.functional.cosine_similarity`` does.
    """

    def __init__(self, target: torch.Tensor, in_hw: tuple[int, int], crop: int, eps: float = 1e-6):
        """target: (1, C, H, W) query features at the working size; in_hw: render size (h, w)."""
        H, W = target.shape[-2:]
        dev, dt = target.device, target.dtype
        Mh = _bicubic_matrix(in_hw[0], H, dev.type)[crop:H - crop]          # (H - 2c, h), float64
        Mw = _bicubic_matrix(in_hw[1], W, dev.type)[crop:W - crop]
        t = crop_border(target[0], crop).double()                             # (C, H - 2c, W - 2c)
        t_unit = t / torch.linalg.vector_norm(t, dim=(1, 2), keepdim=True).clamp_min(eps)
        self.proj = (Mh.t() @ t_unit @ Mw).to(dt)                             # (C, h, w)
        self.Rh = torch.linalg.qr(Mh, mode="r")[1].to(dt)                     # (k, h)
        self.RwT = torch.linalg.qr(Mw, mode="r")[1].t().contiguous().to(dt)   # (w, k')
        self.eps = eps

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x: (1, C, h, w) fused features at the render size -> scalar loss."""
        C, h, w = x.shape[-3:]
        dot = (x[0] * self.proj).sum(dim=(1, 2))                             # (C,)
        # R_h x R_wᵀ as two plain matmuls: rows first (channels folded into columns), then columns
        xr = (self.Rh @ x[0].transpose(0, 1).reshape(h, C * w)).view(-1, C, w)
        y = xr.reshape(-1, w) @ self.RwT
        norm = y.view(-1, C, y.shape[-1]).square().sum(dim=(0, 2)).sqrt().clone()
        with torch.no_grad():   # as cosine_similarity: the clamp changes the value, not the gradient
            norm.clamp_min_(self.eps)
        return 1.0 - (dot / norm).mean()


def refinement_loss(target_feat: torch.Tensor, render_hw: tuple[int, int], crop: int, per_pixel: bool):
    """fused (1, C, h, w) -> loss against one query's features (1, C, H, W): upsample, crop, cosine.
    Per channel (the paper) in the folded form; per pixel explicitly."""
    if not per_pixel:
        return UpsampledCosineLoss(target_feat, render_hw, crop)
    size, target = tuple(target_feat.shape[-2:]), crop_border(target_feat, crop)[0]
    return lambda fused: feature_cosine_loss(crop_border(bicubic_resize(fused, size), crop)[0], target, per_pixel=True)


class FeatureResidual:
    """The paper's loss of B queries as a least-squares residual at the render size (module docstring).

    ``residual(x, q)`` maps fused maps ``x (N, C, h, w)`` of queries ``q (N,)`` to ``r (N, C, k_h, k_w)``
    with ``loss = 1 - mean_c cos_c = mean_c ½ |r_c|² + const_q``; ``jacobian`` pushes render-space
    derivatives ``dx (N, K, C, h, w)`` through it (the normalisation linearised), ``(N, K, C, k_h, k_w)``.
    """

    def __init__(self, targets: torch.Tensor, in_hw: tuple[int, int], crop: int, sigma: float = 0.0,
                 eps: float = 1e-6):
        """targets: (B, C, H, W) query features at the working size; sigma: blur std in working pixels."""
        B, C, H, W = targets.shape
        dev, dt = targets.device, targets.dtype
        Gh, Gw = _gaussian_matrix(H, sigma, dev.type), _gaussian_matrix(W, sigma, dev.type)
        Mh = (Gh @ _bicubic_matrix(in_hw[0], H, dev.type))[crop:H - crop]     # (H - 2c, h), float64
        Mw = (Gw @ _bicubic_matrix(in_hw[1], W, dev.type))[crop:W - crop]
        Qh, Rh = torch.linalg.qr(Mh)
        Qw, Rw = torch.linalg.qr(Mw)
        t = crop_border(Gh @ targets.double() @ Gw.t(), crop)                  # (B, C, H - 2c, W - 2c)
        t_unit = t / torch.linalg.vector_norm(t, dim=(-2, -1), keepdim=True).clamp_min(eps)
        self.s = (Qh.t() @ t_unit @ Qw).to(dt)                                 # (B, C, k_h, k_w)
        self.const = 0.5 * (1.0 - self.s.double().square().sum((-2, -1))).to(dt)   # (B, C)
        self.Rh, self.RwT = Rh.to(dt), Rw.t().contiguous().to(dt)
        self.eps = eps

    def _y(self, x: torch.Tensor) -> torch.Tensor:
        return self.Rh @ x @ self.RwT

    def residual(self, x: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (r (N, C, k_h, k_w), |y| (N, C))."""
        y = self._y(x)
        n = torch.linalg.vector_norm(y, dim=(-2, -1)).clamp_min(self.eps)
        return y / n[..., None, None] - self.s[q], n

    def loss(self, r: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """(N,) paper loss values of residuals ``r`` of queries ``q``."""
        return (0.5 * r.square().sum((-2, -1)) + self.const[q]).mean(-1)

    def jacobian(self, dx: torch.Tensor, r: torch.Tensor, n: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """d r for render-space directions dx (N, K, C, h, w) at a point with residual r and norms n."""
        dy = self._y(dx)                                                       # (N, K, C, k_h, k_w)
        y_unit = (r + self.s[q])[:, None]                                      # y / |y|
        radial = (dy * y_unit).sum((-2, -1), keepdim=True)
        return (dy - radial * y_unit) / n[:, None, :, None, None]



class ColorResidual:
    """Photometric residual of B queries at the render size, for ``pose_only=4`` (``lm_color``).

    The rendered colour ``c (N, 3, h, w)`` is compared with the query image area-averaged to the
    render size, both smoothed with the stage's Gaussian (``sigma`` in working pixels, rescaled) and
    cropped by the working crop rescaled. With ``r = sqrt(weight / P) (G c Gᵀ - G I Gᵀ)`` over the P
    kept values, ``½ |r|² = weight · ½ MSE``: added to :class:`FeatureResidual`'s loss it weighs
    the photometric error by ``weight``. Linear in ``c``, so its Jacobian is the same map applied to
    render-space derivatives.
    """

    def __init__(self, images: torch.Tensor, in_hw: tuple[int, int], crop: int, sigma: float, weight: float):
        """images: (B, 3, H, W) queries at the working size in [0, 1]; in_hw: render size (h, w)."""
        H, W = images.shape[-2:]
        h, w = in_hw
        dev, dt = images.device, images.dtype
        small = F.interpolate(images, size=in_hw, mode="area") if H % h == 0 and W % w == 0 else \
            F.interpolate(images, size=in_hw, mode="bilinear", align_corners=False, antialias=True)
        scale = h / H
        self.Gh = _gaussian_matrix(h, sigma * scale, dev.type).to(dt)
        self.Gw = _gaussian_matrix(w, sigma * scale, dev.type).to(dt)
        self.crop = int(round(crop * scale))
        self.target = self._map(small)
        self.factor = math.sqrt(weight / self.target[0].numel())

    def _map(self, c: torch.Tensor) -> torch.Tensor:
        return crop_border(self.Gh @ c @ self.Gw.t(), self.crop)

    def residual(self, rgb: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """(N, 3, h, w) rendered colour of queries q -> (N, 3, k_h, k_w)."""
        return self.factor * (self._map(rgb) - self.target[q])

    def loss(self, r: torch.Tensor) -> torch.Tensor:
        return 0.5 * r.square().flatten(1).sum(1)

    @staticmethod
    def psnr(loss: float, weight: float = 1.0) -> float:
        """PSNR (dB) of the render against the query that a loss of this residual means (loss = weight · ½ MSE)."""
        return -10.0 * math.log10(max(2.0 * loss / weight, 1e-12))

    def jacobian(self, drgb: torch.Tensor) -> torch.Tensor:
        """(N, K, 3, h, w) render-space derivatives -> (N, K, 3, k_h, k_w)."""
        return self.factor * self._map(drgb)
