"""``pose_only=4``: direct 6-DoF pose refinement by Levenberg-Marquardt on the paper's loss.

This mode is not in the original. It minimises the same objective as APR + NeFeS (``pose_only=2``):
the per-channel cosine between the fused NeFeS features, bicubically upsampled and cropped, and the
query's DFNet features at the working size (:class:`dm.refine_loss.FeatureResidual` writes it as a
least-squares residual at the render size). Instead of moving the pose through 50 Adam steps on the
APR's weights, it moves the pose itself with damped Gauss-Newton steps:

* pose update on the right, in the camera frame: ``T <- T · exp(δ)``, ``δ = (ρ, ω)`` (metres, radians);
* Jacobian of the fused render w.r.t. the six pose directions, either (``jacobian="fd"``) by forward
  differences (6 extra forward renders of the same rays, no backward pass; the translation step is
  scaled by the median rendered depth, so nothing depends on the scene's units), or (``"flow"``) from
  the render itself, as direct image alignment does: a small camera move shifts every pixel by the
  optical flow of its rendered 3-D point (rendered depth), so ``d map / dδ = -∇map · d flow / dδ``,
  with no extra render (occlusion and view-dependent changes are ignored; the step is only kept if
  the rendered loss drops, so an inexact Jacobian can slow the descent but never raise the loss);
* Marquardt damping ``(JᵀJ + λ diag(JᵀJ)) δ = -Jᵀr``: a step is kept only if it lowers the loss,
  otherwise λ grows and the step shrinks, so the loss never increases;
* coarse-to-fine: the first stages smooth both feature maps with a Gaussian (``lm_blur``, working
  pixels), which widens the basin; the last stage is the paper's loss itself;
* optionally (``lm_color`` > 0) a photometric residual, rendered colour against the query
  (:class:`dm.refine_loss.ColorResidual`), weighted against the feature loss (``lm_feature``).

All B queries of a batch are rendered together (each fused with its own statistics) but keep their own
pose, damping and stopping state. ``info`` reports per query the loss curve, the steps taken and how
well the final pose is determined (``cond``: condition number of the scaled JᵀJ; a large value means
some direction, e.g. a yaw against a sideways shift in front of a plain wall, is barely observable).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from dm.refine_loss import ColorResidual, FeatureResidual, check_crop
from core import geometry
from models.rays import camera_dirs, pixel_grid, project_jacobian
from models.renderer import pixel_center

JACOBIANS = ("fd", "flow")


@dataclass
class LMSettings:
    opt_iter: int = 12                   # LM iterations per stage's share (total over all stages)
    crop: int = 10                       # working-size border crop, as pose_only=2
    blur: tuple = field(default_factory=lambda: (0.0,))   # Gaussian sigmas of the stages (working px)
    lambda_init: float = 1e-2            # initial Marquardt damping
    fd_step: float = 1e-3                # forward-difference step: radians; x median depth for metres
    min_step: float = 1e-5               # stop when |δ| (rad, and metres / depth) falls below this
    feature: float = 1.0                 # weight of the paper's feature loss
    color: float = 0.0                   # weight of the photometric term (0: the paper's loss alone)
    jacobian: str = "fd"                 # "fd": 6 forward-difference renders; "flow": image gradient x pose flow


def _right_update(T: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """(N, 3, 4) poses, (N, 6) camera-frame tangents (ρ, ω) -> T · exp(δ)."""
    E = geometry.se3_exp(delta)
    R, t = T[..., :3], T[..., 3:]
    return torch.cat([R @ E[..., :3], R @ E[..., 3:] + t], dim=-1)


class _Renderer:
    """Fused maps and colour of many poses at once (float32 renders, float64 poses), no autograd.
    ``features=False`` (a colour-only objective): colour and depth only, about half the cost."""

    def __init__(self, nefes, cam, hists, features: bool = True):
        self.nefes, self.cam, self.hists, self.features = nefes, cam, hists, features

    @torch.no_grad()
    def __call__(self, T: torch.Tensor, q: torch.Tensor) -> tuple[tuple, torch.Tensor, torch.Tensor | None]:
        """-> (fused (N, C, h, w) or None, rgb (N, 3, h, w) or None), median depth per render (N,) and
        the depth map (N, h, w) (NaN where the render is mostly empty; None if the renderer gives no
        depth), both in APR units."""
        hist = None if self.hists is None else self.hists[q]
        out = self.cam.render(self.nefes, T.float(), hist) if self.features else \
            self.cam.render(self.nefes, T.float(), hist, features=False)
        scale = getattr(getattr(self.cam, "world_setup", None), "scale", 1.0)
        if "depth" not in out:
            return (out.get("fused"), out.get("rgb")), torch.ones(len(q), dtype=torch.float64), None
        dmap = out["depth"].double() / scale
        if "acc" in out:   # expected depth of the surface, not pulled towards 0 by empty space
            acc = out["acc"].double()
            dmap = torch.where(acc > 0.5, dmap / acc.clamp_min(1e-6), torch.full_like(dmap, math.nan))
        return (out.get("fused"), out.get("rgb")), out["depth"].flatten(1).median(1).values.double() / scale, dmap


def pose_flow(depth: torch.Tensor, focal: float, center: float = 0.0) -> torch.Tensor:
    """(N, h, w) z-depth maps (APR units; NaN: no surface) -> (N, 6, 2, h, w) optical flow (pixels per
    unit δ) of each pixel's 3-D point under the camera move ``T <- T · exp(δ)``, δ = (ρ, ω); 0 where
    there is no surface. First order: the point's camera coordinates move by ``-ρ - ω × X``. ``center``:
    the rendering field's ``pixel_center`` (where each pixel's ray, and so its point, lies)."""
    N, h, w = depth.shape
    uv = pixel_grid(h, w, device=depth.device, dtype=depth.dtype)
    X = depth.reshape(N, -1, 1) * camera_dirs(uv, h, w, focal, center)           # (N, hw, 3), OpenGL axes
    valid = torch.isfinite(X).all(-1) & (X[..., 2] < 0)
    X = torch.where(valid[..., None], X, torch.tensor([0.0, 0.0, -1.0], dtype=X.dtype, device=X.device))
    P = project_jacobian(X, focal)                                               # (N, hw, 2, 3)
    eye = torch.eye(3, dtype=X.dtype, device=X.device)
    dX = torch.cat([-eye.expand(N, X.shape[1], 3, 3),                            # d X / d ρ
                    geometry.skew(X)], dim=-1)                                   # d X / d ω = [X]x
    flow = (P @ dX) * valid[..., None, None]                                     # (N, hw, 2, 6)
    return flow.permute(0, 3, 2, 1).reshape(N, 6, 2, h, w)


def flow_jacobian(m: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) maps, (N, 6, 2, h, w) pose flow -> (N, 6, C, h, w) d map / d δ: the map at the
    moved pose is the current map shifted by the flow, ``m'(u) ≈ m(u) - ∇m(u) · flow(u)``."""
    gy, gx = torch.gradient(m, dim=(-2, -1))
    f = flow.to(m.dtype)
    return -(gx[:, None] * f[:, :, None, 0] + gy[:, None] * f[:, :, None, 1])


class _Objective:
    """One coarse-to-fine stage's least-squares objective: ``feature`` x the paper's feature loss plus
    ``color`` x the photometric one (either weight may be 0). Maps are (fused, rgb)."""

    def __init__(self, targets, images, hw, crop: int, sigma: float, feature: float, color: float):
        self.wf = feature
        self.feat = FeatureResidual(targets, hw, crop, sigma=sigma) if feature > 0 else None
        self.col = ColorResidual(images, hw, crop, sigma, color) if color > 0 else None

    def residual(self, maps: tuple, q: torch.Tensor) -> tuple:
        r, n = self.feat.residual(maps[0], q) if self.feat is not None else (None, None)
        return r, n, (self.col.residual(maps[1], q) if self.col is not None else None)

    def loss(self, res: tuple, q: torch.Tensor) -> torch.Tensor:
        loss = torch.zeros(len(q), dtype=torch.float64, device=q.device)
        if self.feat is not None:
            loss = loss + self.wf * self.feat.loss(res[0], q).double()
        if self.col is not None:
            loss = loss + self.col.loss(res[2]).double()
        return loss

    def _feature_scale(self, res: tuple) -> float:
        return math.sqrt(self.wf / res[0].shape[1])   # FeatureResidual.loss is a mean over channels

    def jacobian(self, dmaps: tuple, res: tuple, q: torch.Tensor) -> torch.Tensor:
        """(N, 6, M) Jacobian of the stacked residual (scaled so ½|r|² is the loss up to a constant)."""
        parts = []
        if self.feat is not None:
            parts.append(self.feat.jacobian(dmaps[0], res[0], res[1], q).flatten(2).double() * self._feature_scale(res))
        if self.col is not None:
            parts.append(self.col.jacobian(dmaps[1]).flatten(2).double())
        return torch.cat(parts, dim=2)

    def stacked(self, res: tuple) -> torch.Tensor:
        parts = []
        if self.feat is not None:
            parts.append(res[0].flatten(1).double() * self._feature_scale(res))
        if self.col is not None:
            parts.append(res[2].flatten(1).double())
        return torch.cat(parts, dim=1)


def refine_pose_lm_batch(c2w_init: torch.Tensor, nefes, hists: torch.Tensor | None, targets: torch.Tensor, cam,
                         s: LMSettings, images: torch.Tensor | None = None) -> list[tuple[torch.Tensor, dict]]:
    """Refine B APR-frame poses (B, 3, 4) from their initial values.

    Args:
        targets: (B, 128, H, W) DFNet level-0 features of the queries at the working size.
        hists: (B, 10) their histograms. cam: :class:`dm.refine_apr.RenderCamera` (or a stand-in with
            ``render(nefes, c2w (N,3,4), hist (N,10)) -> {"fused": (N,C,h,w), ["rgb": (N,3,h,w)], ["depth": (N,h,w)]}``).
        images: (B, 3, H, W) the queries in [0, 1]; needed when ``s.color > 0``.
    Returns:
        per query ((3, 4) refined pose, info: ``losses`` (loss after every iteration, the first entry at
        the start), ``steps`` (accepted), ``cond``, ``stopped`` (iteration at which it stopped)).
    """
    H, W = targets.shape[-2:]
    check_crop(s.crop, H, W)
    if s.color > 0 and images is None:
        raise ValueError("lm_color > 0 needs the query images")
    if s.color <= 0 and s.feature <= 0:
        raise ValueError("lm_feature and lm_color are both 0: nothing to minimise")
    if s.jacobian not in JACOBIANS:
        raise ValueError(f"lm_jacobian must be one of {JACOBIANS}, not {s.jacobian!r}")
    if s.jacobian == "flow" and getattr(cam, "focal", None) is None:
        raise ValueError('lm_jacobian "flow" needs a camera with a focal length (cam.focal)')
    B, dev = c2w_init.shape[0], c2w_init.device
    T = c2w_init.detach().double().clone()
    q_all = torch.arange(B, device=dev)
    render = _Renderer(nefes, cam, hists, features=s.feature > 0)
    x, depth, dmap = render(T, q_all)                            # (fused, rgb) at the current poses
    if s.jacobian == "flow" and dmap is None:
        raise ValueError('lm_jacobian "flow" needs a renderer that returns depth')
    if s.color > 0 and x[1] is None:
        raise ValueError("lm_color > 0 needs a renderer that returns colour")
    used = [k for k, w in enumerate((s.feature, s.color)) if w > 0]   # maps the objective uses: 0 fused, 1 rgb
    x = tuple(m if k in used else None for k, m in enumerate(x))
    hw = tuple(x[used[0]].shape[-2:])
    stages = [float(b) for b in (s.blur or (0.0,))]
    iters = [s.opt_iter // len(stages) + (i < s.opt_iter % len(stages)) for i in range(len(stages))]
    lam = torch.full((B,), s.lambda_init, dtype=torch.float64, device=dev)
    Jx = None                                                    # per map (B, 6, ...) d map / d δ
    stale = torch.ones(B, dtype=torch.bool, device=dev)          # Jacobian must be (re)computed
    losses = [[] for _ in range(B)]
    steps = [0] * B
    stopped = [None] * B
    it_global = 0
    eye6 = torch.eye(6, dtype=torch.float64, device=dev)
    for sigma, n_it in zip(stages, iters):
        obj = _Objective(targets, images, hw, s.crop, sigma, s.feature, s.color)
        r = obj.residual(x, q_all)
        loss = obj.loss(r, q_all)
        if it_global == 0:
            for b in range(B):
                losses[b].append(float(loss[b]))
        active = torch.ones(B, dtype=torch.bool, device=dev)
        lam.fill_(s.lambda_init)
        for _ in range(n_it):
            it_global += 1
            if not bool(active.any()):
                break
            # 1. Jacobians where the pose moved
            need = torch.nonzero(stale & active).flatten()
            if need.numel():
                if Jx is None:
                    Jx = tuple(None if m is None else torch.zeros(B, 6, *m.shape[1:], dtype=m.dtype, device=dev) for m in x)
                if s.jacobian == "flow":
                    flow = pose_flow(dmap[need], float(cam.focal), pixel_center(nefes))
                    for k in used:
                        Jx[k][need] = flow_jacobian(x[k][need], flow)
                else:
                    eps = torch.tensor([s.fd_step] * 6, dtype=torch.float64, device=dev).expand(need.numel(), 6).clone()
                    eps[:, :3] *= depth[need, None].clamp_min(1e-6)
                    deltas = torch.diag_embed(eps).reshape(-1, 6)                   # (n*6, 6)
                    xp, _, _ = render(_right_update(T[need].repeat_interleave(6, 0), deltas), need.repeat_interleave(6))
                    for k in used:
                        m = x[k]
                        Jx[k][need] = (xp[k].view(need.numel(), 6, *m.shape[1:]) - m[need, None]) \
                            / eps[..., None, None, None].to(m.dtype)
                stale[need] = False
            # 2. damped Gauss-Newton step for every active query
            idx = torch.nonzero(active).flatten()
            r_idx = tuple(None if v is None else v[idx] for v in r)
            J = obj.jacobian(tuple(None if j is None else j[idx] for j in Jx), r_idx, idx)            # (n, 6, M)
            rr = obj.stacked(r_idx)
            Hm = J @ J.transpose(1, 2)                                          # (n, 6, 6)
            g = (J @ rr[..., None])[..., 0]
            D = torch.diagonal(Hm, dim1=1, dim2=2)
            A = Hm + lam[idx, None, None] * torch.diag_embed(D) + 1e-12 * D.amax(1)[:, None, None] * eye6
            delta = -torch.linalg.solve(A, g)
            # 3. try the steps; keep the ones that lower the loss
            Tc = _right_update(T[idx], delta)
            xc, dc, dmc = render(Tc, idx)
            rc = obj.residual(xc, idx)
            lc = obj.loss(rc, idx)
            better = lc < loss[idx]
            acc = idx[better]
            T[acc], depth[acc], loss[acc] = Tc[better], dc[better], lc[better]
            if dmap is not None:
                dmap[acc] = dmc[better]
            for k in used:
                x[k][acc] = xc[k][better]
            for v, vc in zip(r, rc):
                if v is not None:
                    v[acc] = vc[better]
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
    obj = _Objective(targets, images, hw, s.crop, stages[-1], s.feature, s.color)
    r = obj.residual(x, q_all)
    results = []
    for b in range(B):
        info = {"losses": losses[b], "steps": steps[b], "stopped": stopped[b] or it_global, "reverted": False}
        if Jx is not None:
            qb = q_all[b:b + 1]
            J = obj.jacobian(tuple(None if j is None else j[b:b + 1] for j in Jx), tuple(None if v is None else v[b:b + 1] for v in r), qb)[0]
            Hm = J @ J.t()
            d = torch.diagonal(Hm).clamp_min(1e-30).rsqrt()
            ev = torch.linalg.eigvalsh(d[:, None] * Hm * d[None, :])
            info["cond"] = float(ev[-1] / ev[0].clamp_min(1e-30)) if math.isfinite(float(ev[0])) else float("inf")
        results.append((T[b].to(c2w_init.dtype), info))
    return results
