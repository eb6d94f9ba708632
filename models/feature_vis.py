"""Feature maps as pictures: a 3-component PCA of the channels, coloured."""
from __future__ import annotations

import numpy as np
import torch


def pca_image(feat: torch.Tensor, basis: torch.Tensor | None = None) -> tuple[np.ndarray, torch.Tensor]:
    """(C, H, W) features -> ((H, W, 3) uint8 image, (C, 3) basis).

    Pass the returned ``basis`` back in to colour several maps consistently (e.g. rendered vs target).
    """
    C, H, W = feat.shape
    x = feat.detach().float().reshape(C, -1).T  # (HW, C)
    x = x - x.mean(0, keepdim=True)
    if basis is None:
        # top-3 principal directions; lowrank SVD is plenty for 128 channels
        _, _, V = torch.linalg.svd(x[:: max(1, x.shape[0] // 4096)], full_matrices=False)
        basis = V[:3].T  # (C, 3)
    y = x @ basis
    lo, hi = torch.quantile(y, 0.01, dim=0), torch.quantile(y, 0.99, dim=0)
    y = ((y - lo) / (hi - lo).clamp_min(1e-8)).clamp(0, 1)
    return (y.reshape(H, W, 3).numpy() * 255).astype(np.uint8), basis
