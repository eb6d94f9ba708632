"""Losses and metrics against hand computations / numpy references (spec §3, §5)."""
import math

import numpy as np
import pytest
import torch

from models.losses import feature_cosine_loss, l1_feature_loss, nerfw_color_loss, psnr, ssim


def test_nerfw_color_loss_terms():
    rgb = torch.tensor([[0.5, 0.5, 0.5], [1.0, 0.0, 0.0]])
    target = torch.tensor([[0.4, 0.5, 0.7], [1.0, 0.0, 0.5]])
    rgb0 = torch.tensor([[0.0, 0.5, 0.5], [1.0, 1.0, 0.0]])
    beta = torch.tensor([0.1, 0.5])
    sig_t = torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 2.0]])
    t = nerfw_color_loss(rgb, target, beta, sig_t, rgb0)
    # by hand
    coarse = 0.5 * (0.16 + 0 + 0.04 + 0 + 1.0 + 0.25) / 6
    fine = ((0.01 + 0 + 0.04) / (2 * 0.01) + (0 + 0 + 0.25) / (2 * 0.25)) / 6
    logb = 3 + (math.log(0.1) + math.log(0.5)) / 2
    sig = 0.01 * 12 / 6
    assert t["coarse"].item() == pytest.approx(coarse)
    assert t["fine"].item() == pytest.approx(fine)
    assert t["beta"].item() == pytest.approx(logb)
    assert t["sigma_t"].item() == pytest.approx(sig)
    assert t["total"].item() == pytest.approx(coarse + fine + logb + sig)
    assert "coarse" not in nerfw_color_loss(rgb, target, beta, sig_t)


def test_l1_feature_loss_mask():
    p, t = torch.zeros(4, 2), torch.tensor([[1.0, 1], [2, 2], [3, 3], [4, 4]])
    assert l1_feature_loss(p, t).item() == pytest.approx(2.5)
    assert l1_feature_loss(p, t, torch.tensor([True, False, False, True])).item() == pytest.approx(2.5)
    assert l1_feature_loss(p, t, torch.tensor([False, True, False, False])).item() == pytest.approx(2.0)
    P, T = torch.zeros(2, 3, 2, 2), torch.ones(2, 3, 2, 2)
    T[0, :, 0, 0] = 5.0
    m = torch.zeros(2, 2, 2, dtype=torch.bool)
    m[0, 0, 0] = True
    assert l1_feature_loss(P, T, m).item() == pytest.approx(5.0)
    assert l1_feature_loss(P, T, m[:, None]).item() == pytest.approx(5.0)


def _np_cos(a, b, axis, eps=1e-6):
    num = (a * b).sum(axis)
    den = np.maximum(np.linalg.norm(a, axis=axis) * np.linalg.norm(b, axis=axis), eps)
    return num / den


def test_feature_cosine_loss_per_channel_and_per_pixel():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(16, 5, 7, generator=g), torch.randn(16, 5, 7, generator=g)
    A, B = a.reshape(16, -1).double().numpy(), b.reshape(16, -1).double().numpy()
    assert feature_cosine_loss(a, b).item() == pytest.approx(1 - _np_cos(A, B, 1).mean(), abs=1e-6)
    assert feature_cosine_loss(a, b, per_pixel=True).item() == pytest.approx(1 - _np_cos(A, B, 0).mean(), abs=1e-6)
    assert feature_cosine_loss(a[None], b[None]).item() == pytest.approx(feature_cosine_loss(a, b).item(), abs=1e-7)
    assert feature_cosine_loss(a, a).item() == pytest.approx(0.0, abs=1e-6)
    assert feature_cosine_loss(a, -a).item() == pytest.approx(2.0, abs=1e-6)
    # per-channel cosine is invariant to a positive scale per channel, per-pixel one is not
    s = torch.rand(16, 1, 1, generator=g) + 0.5
    assert feature_cosine_loss(a * s, a).item() == pytest.approx(0.0, abs=1e-6)
    assert feature_cosine_loss(a * s, a, per_pixel=True).item() > 1e-3


def test_psnr():
    x = torch.zeros(1, 3, 4, 4)
    assert psnr(x + 0.1, x).item() == pytest.approx(20.0, abs=1e-4)


def _np_ssim(x, y, k=7):
    pad = k // 2
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="reflect")
    y = np.pad(y, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="reflect")
    box = lambda t: np.lib.stride_tricks.sliding_window_view(t, (k, k), axis=(2, 3)).mean((-1, -2))  # noqa: E731
    mx, my = box(x), box(y)
    sx, sy, sxy = box(x * x) - mx ** 2, box(y * y) - my ** 2, box(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    m = (2 * mx * my + c1) * (2 * sxy + c2) / ((mx ** 2 + my ** 2 + c1) * (sx + sy + c2))
    return np.clip(m, 0, 1).mean()


def test_ssim_matches_numpy_reference():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 12, 15, generator=g, dtype=torch.float64)
    y = (x + 0.1 * torch.randn(2, 3, 12, 15, generator=g, dtype=torch.float64)).clamp(0, 1)
    assert ssim(x, x).item() == pytest.approx(1.0)
    assert ssim(x, y).item() == pytest.approx(_np_ssim(x.numpy(), y.numpy()), rel=1e-9)
    assert ssim(x, y).item() < 0.95
    assert ssim(x, 1 - x).item() < ssim(x, y).item()
