"""``pose_only=3``: direct SE(3) pose refinement (spec §5.2), without lietorch.

Per query, a tangent update ``xi = (t, r)`` (translation first) starting at zero is optimised with
Adam (``lr_t`` for t, ``lr_r`` for r). The pose is ``R = R_E · R_init``, ``t = t_E + t_init`` with
``E = exp(xi) = [exp(r) | V(r) t]`` — the translation semantics of the original's lietorch path.
The loss compares fused NeFeS features with the query's DFNet features at the render size
(no upsampling, no border crop), as the original.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from core import geometry
from models.losses import feature_cosine_loss


@dataclass
class PoseRefineSettings:
    opt_iter: int = 50
    lr_r: float = 0.01
    lr_t: float = 0.1
    per_pixel: bool = False


def apply_update(xi: torch.Tensor, c2w_init: torch.Tensor) -> torch.Tensor:
    """(6,) tangent (t, r) and (3, 4) initial APR-frame pose -> (3, 4) updated pose."""
    E = geometry.se3_exp(xi)
    return torch.cat([E[:, :3] @ c2w_init[:, :3], (E[:, 3] + c2w_init[:, 3])[:, None]], dim=1)


def refine_pose_batch(c2w_init: torch.Tensor, nefes, hists: torch.Tensor, targets: torch.Tensor, cam,
                      s: PoseRefineSettings) -> list[tuple[torch.Tensor, dict]]:
    """Refine B APR-frame poses (B, 3, 4); ``targets``: (B, 128, h, w) query features at the render size.

    Each query has its own tangent (rows of ``t``, ``r``): one Adam over the (B, 3) tensors is B
    independent Adams (elementwise), the loss is the sum of the per-query losses and every image is
    fused with its own statistics. Returns per query ((3, 4) refined pose, info with the loss curve).
    """
    c2w_init = c2w_init.detach()
    B = c2w_init.shape[0]
    t = torch.zeros(B, 3, dtype=c2w_init.dtype, device=c2w_init.device, requires_grad=True)
    r = torch.zeros(B, 3, dtype=c2w_init.dtype, device=c2w_init.device, requires_grad=True)
    opt = torch.optim.Adam([{"params": [r], "lr": s.lr_r}, {"params": [t], "lr": s.lr_t}])
    losses = [[] for _ in range(B)]
    for _ in range(s.opt_iter):
        pose = torch.stack([apply_update(torch.cat([t[b], r[b]]), c2w_init[b]) for b in range(B)])
        out = cam.render(nefes, pose, hists)
        loss = torch.stack([feature_cosine_loss(out["fused"][b], targets[b], per_pixel=s.per_pixel) for b in range(B)])
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
        for b, v in enumerate(loss.tolist()):
            losses[b].append(v)
    with torch.no_grad():
        return [(apply_update(torch.cat([t[b], r[b]]), c2w_init[b]), {"losses": losses[b]}) for b in range(B)]


def refine_pose(c2w_init: torch.Tensor, nefes, hist: torch.Tensor, target_feat: torch.Tensor, cam,
                s: PoseRefineSettings) -> tuple[torch.Tensor, dict]:
    """Refine one APR-frame pose (3, 4). ``target_feat``: (1, 128, h, w) query features at the render size."""
    return refine_pose_batch(c2w_init[None], nefes, None if hist is None else hist.reshape(1, -1), target_feat, cam, s)[0]
