"""Cambridge Landmarks reader (the layout written by ``data/setup_cambridge.py``, spec §1.2).

::

    <datadir>/{train,test}/rgb/<seq>_<frame>.png          images (height 480 after setup)
    <datadir>/{train,test}/poses/<seq>_<frame>.txt        4x4 camera-to-world, OpenCV axes, metres
    <datadir>/{train,test}/calibration/<seq>_<frame>.txt  focal (px) at the stored size; only checked
    <datadir>/{train,test}/semantic/*                     masks, 1 = static (only with --semantic)

Files are sorted lexicographically (``seq10_*`` before ``seq1_*``, as the original), then ``skip`` is
applied to the whole list. For a scene folder named ``ShopFacade`` the original deletes entries 42 and
35 of the sorted training lists ("abnormal data"); that quirk is kept so indices match the paper.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from dataset_loaders import DatasetError, RawSplit
from dataset_loaders.seven_scenes import check_rotations, read_pose_file

_logger = logging.getLogger(__name__)

#: Focal of the original Cambridge loader: 744 px at 854 px width, for every scene.
FOCAL_854 = 744.0
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SHOPFACADE_DROPPED = (42, 35)  # deleted in this order, from the sorted training lists


def _listdir(folder: Path, suffixes) -> list[Path]:
    if not folder.is_dir():
        raise DatasetError(f"{folder}: folder not found (run data/setup_cambridge.py?)")
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in suffixes and not p.name.startswith(".")),
                  key=lambda p: p.name)


def read_split(datadir: Path, split: str, skip: int, semantic: bool = False) -> RawSplit:
    """Read one split of a Cambridge scene (no image is decoded).

    Returns a :class:`RawSplit` with ``poses_raw`` (N, 3, 4) OpenCV camera-to-world and, when
    ``semantic`` and the ``semantic/`` folder exists (required for train), ``mask_paths``.
    """
    datadir = Path(datadir)
    if not datadir.is_dir():
        raise DatasetError(f"{datadir}: datadir not found")
    root = datadir / split
    rgb = _listdir(root / "rgb", IMAGE_SUFFIXES)
    pose_files = _listdir(root / "poses", (".txt",))
    masks = None
    if semantic:
        sem_dir = root / "semantic"
        if sem_dir.is_dir():
            masks = _listdir(sem_dir, IMAGE_SUFFIXES)
        elif split == "train":
            raise DatasetError(f"{sem_dir}: semantic masks requested (--semantic) but folder not found")
        else:
            _logger.info("%s: no semantic masks for the %s split", sem_dir, split)

    notes = []
    if datadir.name == "ShopFacade" and split == "train":
        if len(rgb) > max(SHOPFACADE_DROPPED) and len(pose_files) > max(SHOPFACADE_DROPPED):
            dropped = [rgb[i].name for i in sorted(SHOPFACADE_DROPPED)]
            for lst in (rgb, pose_files, masks):
                if lst is not None and len(lst) > max(SHOPFACADE_DROPPED):
                    for i in SHOPFACADE_DROPPED:
                        del lst[i]
            notes.append(f"ShopFacade quirk of the original: dropped training entries 35 and 42 ({', '.join(dropped)})")
            _logger.info("ShopFacade: dropping training images %s (the original's 'abnormal data' quirk)", dropped)
        else:
            _logger.warning("ShopFacade: fewer than 43 training images, the original's removal of entries 42/35 is skipped")

    if len(rgb) != len(pose_files):
        raise DatasetError(f"{root}: rgb/ has {len(rgb)} images but poses/ has {len(pose_files)} pose files")
    for r, p in zip(rgb, pose_files):
        if r.stem != p.stem:
            raise DatasetError(f"{p}: pose file does not match image {r.name} (rgb/ and poses/ must hold the same names)")
    if masks is not None and len(masks) != len(rgb):
        raise DatasetError(f"{root / 'semantic'}: {len(masks)} masks for {len(rgb)} images")

    idx = np.arange(len(rgb))[::skip]
    if idx.size == 0:
        raise DatasetError(f"{root / 'rgb'}: zero {split} images")
    rgb = [rgb[i] for i in idx]
    pose_files = [pose_files[i] for i in idx]
    masks = [masks[i] for i in idx] if masks is not None else None

    poses = np.stack([read_pose_file(p) for p in pose_files])
    check_rotations(poses, pose_files)
    return RawSplit(split, rgb, [f"{split}/rgb/{p.name}" for p in rgb], poses, "c2w_opencv",
                    f"pose files {root / 'poses'}", idx.astype(np.int64), mask_paths=masks, notes=notes)


def calibration_focal(datadir: Path) -> tuple[float, int] | None:
    """Median focal of ``train/calibration/*.txt`` (pixels at the stored size) and the file count, or None."""
    folder = Path(datadir) / "train" / "calibration"
    if not folder.is_dir():
        return None
    vals = []
    for p in sorted(folder.glob("*.txt")):
        try:
            vals.append(float(p.read_text().split()[0]))
        except (ValueError, IndexError):
            _logger.warning("%s: unreadable calibration file ignored", p)
    if not vals:
        return None
    return float(np.median(vals)), len(vals)
