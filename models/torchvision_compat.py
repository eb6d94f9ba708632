"""Import torchvision next to a CPU-only torch.

The PyPI torchvision wheel that matches torch 2.13 is a CUDA build: its compiled ops library does not
load against the CPU torch, and ``import torchvision`` then fails in its meta registrations with
``operator torchvision::nms does not exist``. Declaring the two operator schemas it registers fake
kernels for (``nms`` and ``qnms``) before the import lets the pure-Python parts (model definitions,
transforms) work; compiled ops (nms, roi_align, video decoding) stay unavailable.

Only optional extras (PoseNet backbones) use torchvision; the core (DFNet, NeFeS) never imports it.
"""
from __future__ import annotations

import importlib
import logging

import torch

_logger = logging.getLogger(__name__)

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
# The Library object must stay alive: its definitions are removed when it is garbage-collected.
_FRAGMENT: torch.library.Library | None = None


class TorchvisionUnavailable(ImportError):
    """torchvision is not installed or cannot be imported."""


def _op_exists(name: str) -> bool:
    try:
        getattr(torch.ops.torchvision, name)
        return True
    except (AttributeError, RuntimeError):
        return False


def _declare_missing_schemas() -> list[str]:
    global _FRAGMENT
    missing = [n for n in _SCHEMAS if not _op_exists(n)]
    if missing:
        if _FRAGMENT is None:
            _FRAGMENT = torch.library.Library("torchvision", "FRAGMENT")
        for name in missing:
            _FRAGMENT.define(_SCHEMAS[name])
    return missing


def import_torchvision():
    """Return the ``torchvision`` module, importing it so that it works with a CPU-only torch.

    Raises:
        TorchvisionUnavailable: torchvision is not installed, or its import fails for another reason.
    """
    try:
        return importlib.import_module("torchvision")  # already imported, or a build that matches torch
    except ModuleNotFoundError:
        raise TorchvisionUnavailable("torchvision is not installed (needed for PoseNet backbones only): "
                                     "pip install torchvision matching your torch version") from None
    except RuntimeError as e:
        if "does not exist" not in str(e):
            raise TorchvisionUnavailable(f"cannot import torchvision: {e}") from None
    # A failed import leaves half-initialised torchvision modules behind: drop them before retrying.
    import sys
    for mod in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[mod]
    declared = _declare_missing_schemas()
    _logger.debug("declared torchvision op schemas %s (compiled torchvision ops unavailable)", declared)
    try:
        return importlib.import_module("torchvision")
    except Exception as e:
        raise TorchvisionUnavailable(f"cannot import torchvision even after declaring its op schemas: {e}") from None
