"""Exposure-adaptive affine colour transform (ACT), spec §2.5 and §7.2.

A bias-free MLP maps the query image's 10-bin luminance histogram (rounded percentages 0..100)
to a 3x3 matrix K and a 3-vector b; a rendered linear colour c becomes ``sigmoid(K c + b)``.

The original used a tiny-cuda-nn ``FullyFusedMLP`` (10 -> 32 -> 32 -> 32 -> 12, ReLU, no biases) and
stored it as ONE flat parameter ``exposure_embedding.params`` of 3072 floats. This module keeps that
layout exactly so original checkpoints load with ``load_state_dict``:

* the 10 inputs are padded to 16 with the constant **1.0** (tcnn's padding value; it acts as a bias);
* the output is padded to 16 and sliced to the first 12;
* the flat vector is the concatenation of the matrices ``W0 (32x16), W1 (32x32), W2 (32x32),
  W3 (16x32)``, each row-major ``[out, in]`` like ``nn.Linear.weight``.

Deviation from tcnn: we evaluate in **float32** (tcnn computes in fp16); differences are at the fp16
rounding level (~1e-3 relative). The histogram is cast to an integer first (``hist.long()`` in the
original), which truncates fractional inputs.
"""
from __future__ import annotations

import math

import torch
from torch import nn

_PAD = 16          # tcnn FullyFusedMLP pads input and output widths to a multiple of 16


def _round_up(n: int, m: int = _PAD) -> int:
    return (n + m - 1) // m * m


class AffineColorTransform(nn.Module):
    """The ACT MLP with the tcnn parameter layout (state-dict key ``params``, flat).

    Args:
        n_input: histogram bins (10).
        n_output: 12 = 9 (K, row-major) + 3 (b).
        width: hidden width (32).
        n_hidden_layers: tcnn's ``n_hidden_layers`` (3): 3 hidden ReLU layers, 4 matrices.
        seed: seed of the (self-contained) initialisation RNG.

    Initialisation (training from scratch; any sane init is allowed by the spec): Xavier-uniform per
    matrix as tcnn, except that one hidden unit carries the constant padding input through the ReLUs
    and feeds ``K = 4 I, b = -2`` to the output, so the initial transform is close to
    ``sigmoid(4c - 2)`` (a smooth, non-saturated identity-like map on [0, 1]) for every histogram;
    the histogram columns of ``W0`` are scaled by 1/50 because the inputs are percentages.
    """

    def __init__(self, n_input: int = 10, n_output: int = 12, width: int = 32, n_hidden_layers: int = 3,
                 seed: int = 1337):
        super().__init__()
        self.n_input, self.n_output = int(n_input), int(n_output)
        self.in_pad, self.out_pad = _round_up(self.n_input), _round_up(self.n_output)
        self.shapes = [(width, self.in_pad)] + [(width, width)] * (n_hidden_layers - 1) + [(self.out_pad, width)]
        n_params = sum(o * i for o, i in self.shapes)
        self.params = nn.Parameter(torch.empty(n_params, dtype=torch.float32))
        self.reset_parameters(seed)

    # ------------------------------------------------------------------------------------------
    def matrices(self) -> list[torch.Tensor]:
        """Views of ``params`` as the weight matrices ``[out, in]`` in layer order."""
        mats, off = [], 0
        for o, i in self.shapes:
            mats.append(self.params[off:off + o * i].view(o, i))
            off += o * i
        return mats

    @torch.no_grad()
    def reset_parameters(self, seed: int = 1337) -> None:
        g = torch.Generator().manual_seed(seed)
        mats = []
        for o, i in self.shapes:
            bound = math.sqrt(6.0 / (o + i))
            mats.append((torch.rand(o, i, generator=g) * 2 - 1) * bound)
        w0, w_last = mats[0], mats[-1]
        w0[:, :self.n_input] /= 50.0
        # unit 0 of every hidden layer == 1: from the first padding input, then passed through
        w0[0].zero_()
        w0[0, self.n_input] = 1.0
        for w in mats[1:-1]:
            w[0].zero_()
            w[0, 0] = 1.0
        w_last *= 0.05
        target = torch.zeros(self.out_pad)
        if self.n_output >= 12:
            target[[0, 4, 8]] = 4.0
            target[9:12] = -2.0
        w_last[:, 0] = target
        self.params.copy_(torch.cat([m.reshape(-1) for m in mats]))

    # ------------------------------------------------------------------------------------------
    def embed(self, hist: torch.Tensor) -> torch.Tensor:
        """``(B, 10)`` histogram (percentages) -> ``(B, 12)`` raw ACT parameters (dtype of ``params``, float32)."""
        x = hist.to(torch.long).to(self.params.dtype)  # the original feeds hist.long()
        pad = x.new_ones(x.shape[0], self.in_pad - self.n_input)
        h = torch.cat([x, pad], dim=-1)
        mats = self.matrices()
        for w in mats[:-1]:
            h = torch.relu(h @ w.t())
        return (h @ mats[-1].t())[:, :self.n_output]

    def forward(self, rgb: torch.Tensor, hist: torch.Tensor) -> torch.Tensor:
        """Apply the per-image transform.

        Args:
            rgb: ``(B, R, 3)`` linear (unbounded) rendered colours, rays grouped per image.
            hist: ``(B, 10)`` histograms of the B images.
        Returns:
            ``(B, R, 3)`` colours in (0, 1): ``sigmoid(K c + b)`` with the image's own K, b.
        """
        if rgb.dim() != 3 or hist.dim() != 2 or hist.shape[0] != rgb.shape[0]:
            raise ValueError(f"apply_act: expected rgb (B,R,3) and hist (B,10), got {tuple(rgb.shape)} and {tuple(hist.shape)}")
        a = self.embed(hist.to(rgb.device)).to(rgb.dtype)
        K = a[:, :9].reshape(-1, 3, 3)                  # (B, 3, 3) row-major
        b = a[:, 9:12].reshape(-1, 1, 3)                # (B, 1, 3)
        return torch.sigmoid(rgb @ K.transpose(1, 2) + b)
