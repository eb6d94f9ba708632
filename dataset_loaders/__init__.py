"""Dataset loading: 7-Scenes (dSLAM and COLMAP ground truth) and Cambridge Landmarks.

Entry point: :func:`load_scene` (``dataset_loaders.scene``) returns a :class:`SceneData` with a
``train`` and a ``test`` :class:`Split` whose poses are APR-frame camera-to-world matrices.
Frame conventions live in :mod:`core.frames`; nothing here flips or rescales poses by hand.

Bad input (missing folder or file, malformed pose, unreadable image, ...) raises
:class:`DatasetError` with one line that names the file and the problem.
"""


from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import DatasetError


@dataclass
class RawSplit:
    """One split as read from disk, before any frame conversion (what the dataset readers return).

    ``poses_raw`` (N, 3, 4) float64 is in the dataset frame: ``pose_kind == "c2w_opencv"`` for the
    7-Scenes pose files and Cambridge, ``"w2c_colmap"`` for the COLMAP lists (see ``core/frames.py``).
    """
    split: str                                  # "train" or "test"
    image_paths: list[Path]
    names: list[str]                            # image paths relative to the image root
    poses_raw: np.ndarray
    pose_kind: str
    pose_source: str                            # human-readable: where the poses came from
    gt_idx: np.ndarray                          # the original's global frame index
    depth_paths: list[Path] | None = None       # 7-Scenes depth PNGs (may not exist on disk)
    mask_paths: list[Path] | None = None        # Cambridge semantic masks (only with --semantic)
    focal_list: float | None = None             # COLMAP list focal of the first image (raw size)
    notes: list[str] = field(default_factory=list)


_LAZY = {"load_scene": "scene", "SceneData": "scene", "Split": "scene"}


def __getattr__(name):
    # Lazy so that ``import dataset_loaders.images`` stays light and submodules can import
    # RawSplit from here without an import cycle.
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DatasetError", "RawSplit", "load_scene", "SceneData", "Split"]
