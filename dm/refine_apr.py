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
import logging
from dataclasses import dataclass

import torch

from core import defaults, frames, geometry
from dm.refine_loss import (UpsampledCosineLoss, bicubic_resize, check_crop, crop_border,  # noqa: F401
                            refinement_loss)
from models.losses import psnr, ssim
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

    @classmethod
    def for_scene(cls, args, scene) -> "RenderCamera":
        """The refinement camera of a loaded scene under a run's settings (tinyscale, samples, chunks)."""
        h, w, f = scene.render_size(args.tinyscale)
        return cls(h, w, f, scene.near, scene.far, scene.world_setup, args.N_samples, args.N_importance,
                   args.transient_at_test, args.chunk, args.netchunk)

    def render(self, nefes, c2w_apr: torch.Tensor, hist: torch.Tensor, features: bool = True) -> dict:
        """Render colour, features and fused features at APR-frame pose(s) (3, 4) or (B, 3, 4) with
        histogram(s) (10,) or (B, 10), differentiably; every image is fused with its own statistics.
        ``features=False``: colour and depth only (no feature compositing, no fusion CNN)."""
        c2w_nerf = frames.apr_to_nerf(c2w_apr, self.world_setup)
        return render_image(nefes, c2w_nerf, self.h, self.w, self.focal, self.near, self.far, hist, fuse=features,
                            with_feat=features,
                            N_samples=self.N_samples, N_importance=self.N_importance, transient=self.transient,
                            per_image_stats=True, chunk=self.chunk, netchunk=self.netchunk)


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


class APRCopies:
    """Fresh copies of an APR for refinement, made once and reset from the original for every batch
    (the same weights as a deep copy per query, without re-allocating the network)."""

    def __init__(self, apr):
        self.apr = apr
        self._copies: list = []

    def take(self, n: int, channels_last: bool) -> list:
        while len(self._copies) < n:
            m = copy.deepcopy(self.apr)
            self._copies.append(m.to(memory_format=torch.channels_last) if channels_last else m)
        out = self._copies[:n]
        with torch.no_grad():
            for m in out:
                for dst, src in zip(m.state_dict(keep_vars=True).values(), self.apr.state_dict(keep_vars=True).values()):
                    dst.copy_(src)
                m.zero_grad(set_to_none=True)
                m.train()   # as the original (no effect on DFNet's pose path; BN-based APRs use batch stats)
        return out


def _adam(params: list, lr: float) -> torch.optim.Optimizer:
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):   # fused Adam needs a recent torch and float tensors
        return torch.optim.Adam(params, lr=lr)


def refine_with_apr_batch(apr, nefes, imgs: torch.Tensor, hists: torch.Tensor, targets: torch.Tensor,
                          cam: RenderCamera, s: APRRefineSettings) -> list[tuple[torch.Tensor, dict]]:
    """Refine B queries, each by fine-tuning its own fresh copy of the APR.

    Args:
        apr: the original APR (never modified), or an :class:`APRCopies` holding it (reused copies).
        imgs: (B, 3, H, W) queries at the working size, in [0, 1]. hists: (B, 10) their histograms.
        targets: (B, 128, H, W) DFNet level-0 features of the queries (computed once, no grad).
    Returns:
        per query ((3, 4) refined APR-frame pose, info dict: losses, psnr/ssim at the first and last
        checked iterations, whether the verification step reverted to the APR prediction).
    """
    pool = apr if isinstance(apr, APRCopies) else APRCopies(apr)
    B, (H, W) = imgs.shape[0], imgs.shape[-2:]
    check_crop(s.crop, H, W)
    on_cpu = imgs.device.type == "cpu"
    if on_cpu:   # NHWC convolutions are faster on CPU (same numbers)
        imgs = imgs.contiguous(memory_format=torch.channels_last)
    models = pool.take(B, channels_last=on_cpu)
    opt = _adam([p for m in models for p in m.parameters() if p.requires_grad], s.learning_rate)
    imgs_c = crop_border(imgs, s.crop)
    loss_fns = None   # built at the first render, which gives the render size
    losses, checks = [[] for _ in range(B)], [{} for _ in range(B)]
    # iteration i renders the pose after i updates: compare 0 with opt_iter-1 (49 of 50, as the original)
    check_at = {0, s.opt_iter - 1} if s.verification else set()
    for it in range(s.opt_iter):
        pose = torch.stack([predict(m, imgs[b:b + 1], s.svd_reg) for b, m in enumerate(models)])
        out = cam.render(nefes, pose, hists)
        if loss_fns is None:
            loss_fns = [refinement_loss(targets[b:b + 1], tuple(out["fused"].shape[-2:]), s.crop, s.per_pixel)
                        for b in range(B)]
        loss = torch.stack([loss_fns[b](out["fused"][b:b + 1]) for b in range(B)])
        if it in check_at:
            with torch.no_grad():
                rgb = crop_border(bicubic_resize(out["rgb"], (H, W)), s.crop)
                for b in range(B):
                    checks[b][it] = (psnr(rgb[b:b + 1], imgs_c[b:b + 1]).item(), ssim(rgb[b:b + 1], imgs_c[b:b + 1]).item())
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
        for b, v in enumerate(loss.tolist()):
            losses[b].append(v)
    results = []
    with torch.no_grad():
        for b, m in enumerate(models):
            refined = predict(m, imgs[b:b + 1], True)
            info = {"losses": losses[b], "reverted": False}
            if s.verification and len(checks[b]) == 2:
                (p0, s0), (p1, s1) = checks[b][0], checks[b][max(checks[b])]
                info.update(psnr0=p0, ssim0=s0, psnr1=p1, ssim1=s1)
                if p1 < p0 or s1 < s0:   # the render did not get closer to the query: keep the APR pose
                    refined, info["reverted"] = predict(pool.apr, imgs[b:b + 1], True), True
            results.append((refined.detach(), info))
    return results


def refine_with_apr(apr, nefes, img: torch.Tensor, hist: torch.Tensor, target_feat: torch.Tensor,
                    cam: RenderCamera, s: APRRefineSettings) -> tuple[torch.Tensor, dict]:
    """One query: (1, 3, H, W) image, (10,) histogram, (1, 128, H, W) features -> ((3, 4) pose, info)."""
    return refine_with_apr_batch(apr, nefes, img, None if hist is None else hist.reshape(1, -1), target_feat, cam, s)[0]
