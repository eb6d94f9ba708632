"""Fusion CNN (spec §2.6): [ACT colour, rendered features] -> 128-d features comparable with DFNet's.

Layer indices match the original (``fusion_net.net.{0,2,4,6,7}``) so checkpoints load unchanged:
Conv3x3(3+C -> 64) ReLU Conv3x3(64 -> 64) ReLU Conv3x3(64 -> 64) ReLU Conv5x5(64 -> C) BatchNorm(C).

The final BatchNorm **always normalises with the statistics of the current batch**, also in
``eval()`` mode: the original never put NeFeS in eval mode, so at refinement the BN used the statistics
of the single rendered map. Running statistics are updated only in training mode (they are never used).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BatchStatBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` that uses batch statistics in train AND eval mode (same state-dict keys)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.num_batches_tracked.add_(1)
            rm, rv = self.running_mean, self.running_var
        else:
            rm = rv = None                                  # eval: do not touch the running stats
        return F.batch_norm(x, rm, rv, self.weight, self.bias, True, self.momentum, self.eps)


def _batch_norm_per_image(y: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    """Batch-statistics BN of each image of ``y (B, C, h, w)`` on its own: the B images are folded into
    B*C channels of one image. The fold is made in NCHW memory: the CPU batch-norm backward of torch 2.13
    returns wrong gradients for a channels-last fold (tests/test_refinement_batch.py checks both)."""
    B, C, h, w = y.shape
    weight, bias = bn.weight.repeat(B), bn.bias.repeat(B)
    folded = y.contiguous().reshape(1, B * C, h, w)
    return F.batch_norm(folded, None, None, weight, bias, True, 0.0, bn.eps).view(B, C, h, w)


class FusionNet(nn.Module):
    """Fusion CNN.

    Args:
        feat_dim: rendered / output feature channels C (128).
        use_res: add the rendered features to the output (``use_fusion_res``).
        no_bn: drop the final BatchNorm (``no_fusion_BN``).
    """

    def __init__(self, feat_dim: int = 128, use_res: bool = False, no_bn: bool = False):
        super().__init__()
        self.feat_dim, self.use_res, self.no_bn = int(feat_dim), bool(use_res), bool(no_bn)
        layers = [nn.Conv2d(3 + feat_dim, 64, 3, padding=1), nn.ReLU(),
                  nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
                  nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
                  nn.Conv2d(64, feat_dim, 5, padding=2)]
        if not no_bn:
            layers.append(BatchStatBatchNorm2d(feat_dim))
        self.net = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, rgb: torch.Tensor, feat: torch.Tensor, per_image_stats: bool = False) -> torch.Tensor:
        """``rgb (B,3,h,w)`` ACT colour in [0, 1], ``feat (B,C,h,w)`` rendered features -> ``(B,C,h,w)``.

        ``per_image_stats``: the final BatchNorm normalises each image with its own statistics, as
        if each were fused alone (batched refinement: B queries must not share statistics). The
        running statistics are then left untouched (they are never used).
        """
        x = torch.cat([(rgb - self.mean.to(rgb.dtype)) / self.std.to(rgb.dtype), feat], dim=1)
        if x.device.type == "cpu":   # NHWC convolutions are ~1.4x faster on CPU (same numbers)
            x = x.contiguous(memory_format=torch.channels_last)
        if per_image_stats and not self.no_bn and x.shape[0] > 1:
            out = _batch_norm_per_image(self.net[:-1](x), self.net[-1])
        else:
            out = self.net(x)
        return out + feat if self.use_res else out
