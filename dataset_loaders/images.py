"""Image reading, the ``df`` down-scaling, the luminance histogram and semantic masks (spec §1.3, §1.6, §1.7).

* Colour images are read with PIL and converted to RGB (what torchvision's default loader does).
* Working size: ``(int(H0 // df), int(W0 // df))``; when ``df != 1`` the float image in [0, 1] is
  resized with OpenCV ``INTER_AREA`` (as the original), otherwise it is used as is.
* Cache format: working-size images are stored as ``uint16`` (value = round(x · 65535)), which keeps
  the float resize result to < 8e-6 (exact for ``df == 1``: k/255 = 257k/65535) at 2 bytes per value.
"""
from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from dataset_loaders import DatasetError

_logger = logging.getLogger(__name__)

#: Rec. 601 luma weights used by the original's ``rgb_to_yuv`` (a copy of Kornia's).
LUMA = (0.299, 0.587, 0.114)
U16 = 65535.0


def _open(path: Path) -> Image.Image:
    try:
        img = Image.open(path)
        img.load()  # decode now so truncated/corrupt files fail here, with the file name
        return img
    except FileNotFoundError:
        raise DatasetError(f"{path}: image file not found") from None
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, zlib errors, ...
        raise DatasetError(f"{path}: cannot read image ({type(e).__name__}: {e})") from None


def read_rgb(path: str | Path) -> np.ndarray:
    """Read a colour image -> (H, W, 3) uint8 RGB."""
    img = _open(Path(path))
    return np.asarray(img.convert("RGB"))


def image_size(path: str | Path) -> tuple[int, int]:
    """(H, W) of an image file, reading only its header."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            w, h = img.size
    except FileNotFoundError:
        raise DatasetError(f"{path}: image file not found") from None
    except Exception as e:
        raise DatasetError(f"{path}: cannot read image ({type(e).__name__}: {e})") from None
    return h, w


def working_size(h_raw: int, w_raw: int, df: float) -> tuple[int, int]:
    """Working (H, W) for a raw size and down-scale factor: ``int(H0 // df), int(W0 // df)``."""
    h, w = int(h_raw // df), int(w_raw // df)
    if h < 1 or w < 1:
        raise DatasetError(f"df={df} is too large for {w_raw}x{h_raw} images")
    return h, w


#: uint8 -> float32 in [0, 1], the same values as the original's ``(img / 255.).astype(float32)``.
_U8_TO_F32 = (np.arange(256) / 255.0).astype(np.float32)


def to_working(img_u8: np.ndarray, size_hw: tuple[int, int], df: float) -> np.ndarray:
    """(H0, W0, 3) uint8 -> (H, W, 3) float32 in [0, 1] at the working size (INTER_AREA when df != 1)."""
    img = _U8_TO_F32[img_u8]
    if df != 1.0:
        img = cv2.resize(img, (size_hw[1], size_hw[0]), interpolation=cv2.INTER_AREA)
    return img


def luminance_histogram(img_chw: torch.Tensor | np.ndarray, bins: int = 10) -> torch.Tensor:
    """Luminance histogram as rounded percentages (spec §1.6), the original's ``torch.histc`` recipe.

    Args:
        img_chw: (3, H, W) float32 in [0, 1] at the working size (tensor or array).
    Returns:
        (bins,) float32 of integers 0..100: Y = 0.299 R + 0.587 G + 0.114 B (float32), equal bins over
        [0, 1] (1.0 in the last bin, values outside ignored), percentages of the counted pixels,
        rounded half to even. Computed with numpy on histc's float32 bin edges (same counts as
        ``torch.histc``, which is slow when several threads decode images at once).
    """
    x = img_chw.numpy() if isinstance(img_chw, torch.Tensor) else np.asarray(img_chw)
    x = x.astype(np.float32, copy=False)
    y = (LUMA[0] * x[0] + LUMA[1] * x[1] + LUMA[2] * x[2]).ravel()
    y = y[(y >= 0.0) & (y <= 1.0)]
    idx = np.searchsorted(_hist_edges(bins)[1:-1], y, side="right")
    counts = torch.from_numpy(np.bincount(idx, minlength=bins).astype(np.float32))
    return torch.round(counts / counts.sum() * 100)


_EDGES: dict[int, np.ndarray] = {}


def _hist_edges(bins: int) -> np.ndarray:
    if bins not in _EDGES:
        _EDGES[bins] = torch.linspace(0.0, 1.0, bins + 1, dtype=torch.float32).numpy()
    return _EDGES[bins]


def quantize_u16(img_hwc: np.ndarray) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1] -> (3, H, W) uint16 cache format."""
    q = np.rint(np.clip(img_hwc, 0.0, 1.0) * U16).astype(np.uint16)
    return np.ascontiguousarray(q.transpose(2, 0, 1))


def dequantize_u16(img_u16: np.ndarray, out: np.ndarray | None = None) -> torch.Tensor:
    """(..., 3, H, W) uint16 cache -> float32 tensor in [0, 1] (optionally into ``out``).

    numpy, single-threaded on purpose: torch's intra-op threads made this 100x slower on a busy
    2-core machine while loader threads were decoding.
    """
    out = np.divide(img_u16, np.float32(U16), dtype=np.float32, out=out)
    return torch.from_numpy(out)


def read_mask(path: str | Path, size_hw: tuple[int, int]) -> np.ndarray:
    """Semantic mask (1 = static) resized with INTER_AREA to the render size, thresholded > 0.5.

    Returns (h, w) bool. A multi-channel mask counts a pixel as static only if every channel does
    (grey masks stored as RGB give the same answer as their single channel).
    """
    path = Path(path)
    m = np.asarray(_open(path)).astype(np.float32) / 255.0
    if m.ndim == 3:
        m = m.min(axis=2)
    m = cv2.resize(m, (size_hw[1], size_hw[0]), interpolation=cv2.INTER_AREA)
    return m > 0.5


def read_depth_mm(path: str | Path) -> np.ndarray:
    """7-Scenes depth PNG -> (H, W) uint16 millimetres (0 and 65535 mark invalid pixels)."""
    path = Path(path)
    d = np.asarray(_open(path))
    if d.ndim != 2:
        raise DatasetError(f"{path}: expected a single-channel 16-bit depth image, got shape {d.shape}")
    return d.astype(np.uint16, copy=False)
