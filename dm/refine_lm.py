"""``pose_only=4``: direct 6-DoF pose refinement by Levenberg-Marquardt on the paper's loss.

This mode is not in the original. It minimises the same objective as APR + NeFeS (``pose_only=2``):
the per-channel cosine between the fused NeFeS features, bicubically upsampled and cropped, and the
query's DFNet features at the working size (:class:`dm.refine_loss.FeatureResidual` writes it as a
least-squares residual at the render size). Instead of moving the pose through 50 Adam steps on the
APR's weights, it moves the pose itself with damped Gauss-Newton steps:

* pose update on the right, in the camera frame: ``T <- T · exp(δ)``, ``δ = (ρ, ω)`` (metres, radians);
* Jacobian of the fused render w.r.t. the six pose directions by forward differences
  (6 extra forward renders of the same rays, no backward pass; the translation step is scaled by the
  median rendered depth, so nothing depends on the scene's units);
* Marquardt damping ``(JᵀJ + λ diag(JᵀJ)) δ = -Jᵀr``: a step is kept only if it lowers the loss,
  otherwise λ grows and the step shrinks, so the loss never increases;
* coarse-to-fine: the first stages smooth both feature maps with a Gaussian (``lm_blur``, working
  pixels), which widens the basin; the last stage is the paper's loss itself.

All B queries of a batch are rendered together (each fused with its own statistics) but keep their own
pose, damping and stopping state. ``info`` reports per query the loss curve, the steps taken and how
well the final pose is determined (``cond``: condition number of the scaled JᵀJ; a large value means
some direction, e.g. a yaw against a sideways shift in front of a plain wall, is barely observable).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from dm.refine_loss import FeatureResidual, check_crop
from core import geometry


@dataclass
class LMSettings:
    opt_iter: int = 12                   # LM iterations per stage's share (total over all stages)
    crop: int = 10                       # working-size border crop, as pose_only=2
    blur: tuple = field(default_factory=lambda: (0.0,))   # Gaussian sigmas of the stages (working px)
    lambda_init: float = 1e-2            # initial Marquardt damping
    fd_step: float = 1e-3                # forward-difference step: radians; x median depth for metres
    min_step: float = 1e-5               # stop when |δ| (rad, and metres / depth) falls below this


def _right_update(T: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """(N, 3, 4) poses, (N, 6) camera-frame tangents (ρ, ω) -> T · exp(δ)."""
    E = geometry.se3_exp(delta)
    R, t = T[..., :3], T[..., 3:]
    return torch.cat([R @ E[..., :3], R @ E[..., 3:] + t], dim=-1)


class _Renderer:
    """Fused maps of many poses at once (float32 renders, float64 poses), no autograd."""

    def __init__(self, nefes, cam, hists):
        self.nefes, self.cam, self.hists = nefes, cam, hists

    @torch.no_grad()
    def __call__(self, T: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> fused (N, C, h, w), median depth per render (N,) in APR units."""
        hist = None if self.hists is None else self.hists[q]
        out = self.cam.render(self.nefes, T.float(), hist)
        scale = getattr(getattr(self.cam, "world_setup", None), "scale", 1.0)
        depth = out["depth"].flatten(1).median(1).values / scale if "depth" in out else torch.ones(len(q))
        return out["fused"], depth.double()


def refine_pose_lm_batch(c2w_init: torch.Tensor, nefes, hists: torch.Tensor | None, targets: torch.Tensor, cam,
                         s: LMSettings) -> list[tuple[torch.Tensor, dict]]:
    """Refine B APR-frame poses (B, 3, 4) from their initial values.

    Args:
        targets: (B, 128, H, W) DFNet level-0 features of the queries at the working size.
        hists: (B, 10) their histograms. cam: :class:`dm.refine_apr.RenderCamera` (or a stand-in with
            ``render(nefes, c2w (N,3,4), hist (N,10)) -> {"fused": (N,C,h,w), ["depth": (N,h,w)]}``).
    Returns:
        per query ((3, 4) refined pose, info: ``losses`` (paper loss after every iteration, the first
        entry at the start), ``steps`` (accepted), ``cond``, ``stopped`` (iteration at which it stopped)).
    """
    H, W = targets.shape[-2:]
    check_crop(s.crop, H, W)
    B, dev = c2w_init.shape[0], c2w_init.device
    T = c2w_init.detach().double().clone()
    q_all = torch.arange(B, device=dev)
    render = _Renderer(nefes, cam, hists)
    x, depth = render(T, q_all)                                  # fused maps at the current poses
    hw = tuple(x.shape[-2:])
    stages = [float(b) for b in (s.blur or (0.0,))]
    iters = [s.opt_iter // len(stages) + (i < s.opt_iter % len(stages)) for i in range(len(stages))]
    lam = torch.full((B,), s.lambda_init, dtype=torch.float64, device=dev)
    Jx = None                                                    # (B, 6, C, h, w) d fused / d δ
    stale = torch.ones(B, dtype=torch.bool, device=dev)          # Jacobian must be (re)computed
    losses = [[] for _ in range(B)]
    steps = [0] * B
    stopped = [None] * B
    it_global = 0
    eye6 = torch.eye(6, dtype=torch.float64, device=dev)
    for sigma, n_it in zip(stages, iters):
        res = FeatureResidual(targets, hw, s.crop, sigma=sigma)
        r, n = res.residual(x, q_all)
        loss = res.loss(r, q_all).double()
        if it_global == 0:
            for b in range(B):
                losses[b].append(float(loss[b]))
        active = torch.ones(B, dtype=torch.bool, device=dev)
        lam.fill_(s.lambda_init)
        for _ in range(n_it):
            it_global += 1
            if not bool(active.any()):
                break
            # 1. forward-difference Jacobians where the pose moved
            need = torch.nonzero(stale & active).flatten()
            if need.numel():
                eps = torch.tensor([s.fd_step] * 3 + [s.fd_step] * 3, dtype=torch.float64, device=dev)
                eps = eps.expand(need.numel(), 6).clone()
                eps[:, :3] *= depth[need, None].clamp_min(1e-6)
                deltas = torch.diag_embed(eps).reshape(-1, 6)                   # (n*6, 6)
                Tp = _right_update(T[need].repeat_interleave(6, 0), deltas)
                xp, _ = render(Tp, need.repeat_interleave(6))
                dx = (xp.view(need.numel(), 6, *x.shape[1:]) - x[need, None]) / eps[..., None, None, None].float()
                if Jx is None:
                    Jx = torch.zeros(B, 6, *x.shape[1:], dtype=x.dtype, device=dev)
                Jx[need] = dx
                stale[need] = False
            # 2. damped Gauss-Newton step for every active query
            idx = torch.nonzero(active).flatten()
            J = res.jacobian(Jx[idx], r[idx], n[idx], idx).flatten(2).double()  # (n, 6, M)
            rr = r[idx].flatten(1).double()
            Hm = J @ J.transpose(1, 2)                                          # (n, 6, 6)
            g = (J @ rr[..., None])[..., 0]
            D = torch.diagonal(Hm, dim1=1, dim2=2)
            A = Hm + lam[idx, None, None] * torch.diag_embed(D) + 1e-12 * D.amax(1)[:, None, None] * eye6
            delta = -torch.linalg.solve(A, g)
            # 3. try the steps; keep the ones that lower the loss
            Tc = _right_update(T[idx], delta)
            xc, dc = render(Tc, idx)
            rc, nc = res.residual(xc, idx)
            lc = res.loss(rc, idx).double()
            better = lc < loss[idx]
            acc = idx[better]
            T[acc], x[acc], depth[acc], r[acc], n[acc], loss[acc] = Tc[better], xc[better], dc[better], rc[better], nc[better], lc[better]
            stale[acc] = True
            lam[acc] = (lam[acc] / 10).clamp_min(1e-6)
            rej = idx[~better]
            lam[rej] = lam[rej] * 10
            for b in idx.tolist():
                losses[b].append(float(loss[b]))
            for j, b in enumerate(idx.tolist()):
                steps[b] += int(better[j])
                size = max(delta[j, 3:].norm().item(), delta[j, :3].norm().item() / max(depth[b].item(), 1e-6))
                if (bool(better[j]) and size < s.min_step) or lam[b] > 1e6:
                    active[b] = False
                    stopped[b] = it_global
    # how well each final pose is determined: condition number of the scaled normal matrix (the
    # Jacobian of the last accepted step's start is close enough for this diagnostic)
    res = FeatureResidual(targets, hw, s.crop, sigma=stages[-1])
    r, n = res.residual(x, q_all)
    results = []
    for b in range(B):
        info = {"losses": losses[b], "steps": steps[b], "stopped": stopped[b] or it_global, "reverted": False}
        if Jx is not None:
            J = res.jacobian(Jx[b:b + 1], r[b:b + 1], n[b:b + 1], q_all[b:b + 1]).flatten(2).double()[0]
            Hm = J @ J.t()
            d = torch.diagonal(Hm).clamp_min(1e-30).rsqrt()
            ev = torch.linalg.eigvalsh(d[:, None] * Hm * d[None, :])
            info["cond"] = float(ev[-1] / ev[0].clamp_min(1e-30)) if math.isfinite(float(ev[0])) else float("inf")
        results.append((T[b].to(c2w_init.dtype), info))
    return results
