"""``pose_only=2``: APR + NeFeS (spec §5.1), the paper's "DFNet + NeFeS50".

For each query independently: copy the original APR, run ``opt_iter`` Adam steps on the copy's
weights minimising the cosine feature loss between the query's DFNet features and NeFeS features
rendered at the copy's predicted pose, then predict again. A PSNR/SSIM verification step (7-Scenes)
keeps the APR's own prediction when the rendered image did not get closer to the query.
The paper's per-channel loss on the upsampled, cropped features is evaluated at the render size
(:class:`UpsampledCosineLoss`, the same value without building the upsampled map).
"""
from __future__ import annotations

import copy
import functools
import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from core import defaults, frames, geometry
from models.losses import feature_cosine_loss, psnr, ssim
from models.renderer import render_image

_logger = logging.getLogger(__name__)


@dataclass
class RenderCamera:
    """Where and how NeFeS renders for refinement (NeRF frame)."""
    h: int                  # render size = working size // tinyscale
    w: int
    focal: float            # at the render size
    near: float
    far: float
    world_setup: frames.WorldSetup
    N_samples: int = 64
    N_importance: int = 64
    transient: bool = True  # transient_at_test
    chunk: int = defaults.CHUNK
    netchunk: int = defaults.NETCHUNK

    def render(self, nefes, c2w_apr: torch.Tensor, hist: torch.Tensor) -> dict:
        """Render colour, features and fused features at an APR-frame pose (differentiable)."""
        c2w_nerf = frames.apr_to_nerf(c2w_apr, self.world_setup)
        return render_image(nefes, c2w_nerf, self.h, self.w, self.focal, self.near, self.far, hist, fuse=True,
                            N_samples=self.N_samples, N_importance=self.N_importance, transient=self.transient,
                            chunk=self.chunk, netchunk=self.netchunk)


@dataclass
class APRRefineSettings:
    opt_iter: int = 50
    learning_rate: float = 1e-5
    svd_reg: bool = defaults.SVD_REG
    per_pixel: bool = False
    crop: int = 10                  # pixels dropped on every border (working resolution)
    verification: bool = True       # not no_verification_step


def predict(apr, img: torch.Tensor, svd_reg: bool) -> torch.Tensor:
    """(1, 3, H, W) -> (3, 4) APR-frame pose, SVD-orthonormalised (differentiably) when ``svd_reg``."""
    pose = apr(img)[0]
    return geometry.orthonormalize_pose(pose) if svd_reg else pose


@functools.lru_cache(maxsize=8)
def _bicubic_matrix(n: int, N: int, device_type: str) -> torch.Tensor:
    """(N, n) matrix of 1-D bicubic resampling n -> N (align_corners=False), built by resampling an identity
    (in float64, so the weights are exact for any input dtype)."""
    eye = torch.eye(n, dtype=torch.float64, device=device_type)[None, None]
    return F.interpolate(eye, size=(N, n), mode="bicubic", align_corners=False)[0, 0]


def bicubic_resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``F.interpolate(x, size, mode='bicubic', align_corners=False)`` as two small matmuls.

    Bicubic resampling is separable and linear, so it equals ``M_h · x · M_wᵀ`` (to float rounding);
    forward + backward are ~4x faster on CPU than the generic kernel for 128-channel maps.
    """
    Mh = _bicubic_matrix(x.shape[-2], size[0], x.device.type).to(x.dtype)
    Mw = _bicubic_matrix(x.shape[-1], size[1], x.device.type).to(x.dtype)
    return torch.matmul(torch.matmul(Mh, x), Mw.t())


def _crop(x: torch.Tensor, c: int) -> torch.Tensor:
    return x[..., c:x.shape[-2] - c, c:x.shape[-1] - c] if c > 0 else x


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
        t = _crop(target[0], crop).double()                                   # (C, H - 2c, W - 2c)
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


def _refinement_loss(target_feat: torch.Tensor, render_hw: tuple[int, int], s: APRRefineSettings):
    """fused (1, C, h, w) -> loss against the query's features (1, C, H, W): upsample, crop, cosine.
    Per channel (the paper) in the folded form; per pixel explicitly."""
    if not s.per_pixel:
        return UpsampledCosineLoss(target_feat, render_hw, s.crop)
    size, target = tuple(target_feat.shape[-2:]), _crop(target_feat, s.crop)[0]
    return lambda fused: feature_cosine_loss(_crop(bicubic_resize(fused, size), s.crop)[0], target, per_pixel=True)


def refine_with_apr(apr, nefes, img: torch.Tensor, hist: torch.Tensor, target_feat: torch.Tensor,
                    cam: RenderCamera, s: APRRefineSettings) -> tuple[torch.Tensor, dict]:
    """Refine one query by fine-tuning a fresh copy of ``apr``.

    Args:
        img: (1, 3, H, W) query at the working size, in [0, 1]. hist: (10,) its histogram.
        target_feat: (1, 128, H, W) DFNet level-0 features of the query (computed once, no grad).
    Returns:
        ((3, 4) refined APR-frame pose, info dict: losses, psnr/ssim at the first and last checked
        iterations, whether the verification step reverted to the APR prediction).
    """
    H, W = img.shape[-2:]
    if s.crop < 0 or 2 * s.crop >= min(H, W):
        raise ValueError(f"refine_crop={s.crop} leaves no pixels of the {W}x{H} working image "
                         f"(needs 0 <= refine_crop <= {(min(H, W) - 1) // 2})")
    model = copy.deepcopy(apr)
    model.train()   # as the original (no effect on DFNet's pose path; BN-based APRs use batch stats)
    if img.device.type == "cpu":   # NHWC convolutions are faster on CPU (same numbers)
        model = model.to(memory_format=torch.channels_last)
        img = img.contiguous(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        opt = torch.optim.Adam(params, lr=s.learning_rate, fused=True)
    except (RuntimeError, TypeError):   # fused Adam needs a recent torch and float tensors
        opt = torch.optim.Adam(params, lr=s.learning_rate)
    img_c = _crop(img, s.crop)
    loss_fn = None   # built at the first render, which gives the render size
    losses, checks = [], {}
    # iteration i renders the pose after i updates: compare 0 with opt_iter-1 (49 of 50, as the original)
    check_at = {0, s.opt_iter - 1} if s.verification else set()
    for it in range(s.opt_iter):
        pose = predict(model, img, s.svd_reg)
        out = cam.render(nefes, pose, hist)
        if loss_fn is None:
            loss_fn = _refinement_loss(target_feat, tuple(out["fused"].shape[-2:]), s)
        loss = loss_fn(out["fused"])
        if it in check_at:
            with torch.no_grad():
                rgb = _crop(bicubic_resize(out["rgb"], (H, W)), s.crop)
                checks[it] = (psnr(rgb, img_c).item(), ssim(rgb, img_c).item())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        refined = predict(model, img, True)
        initial = predict(apr, img, True)
    info = {"losses": losses, "reverted": False}
    if s.verification and len(checks) == 2:
        (p0, s0), (p1, s1) = checks[0], checks[max(checks)]
        info.update(psnr0=p0, ssim0=s0, psnr1=p1, ssim1=s1)
        if p1 < p0 or s1 < s0:   # the render did not get closer to the query: keep the APR pose
            refined, info["reverted"] = initial, True
    return refined.detach(), info
