"""7-Scenes readers: dSLAM ground truth (``7Scenes``) and COLMAP pseudo ground truth (``7Scenes_colmap``).

Layout of the image folder (MapNet / original NeFeS, spec §1.1-§1.2)::

    <image root>/TrainSplit.txt, TestSplit.txt      lines "sequenceK" -> folder seq-KK
    <image root>/seq-KK/frame-NNNNNN.{color.png, pose.txt, depth.png}
    <image root>/<scene>_{train,test}.txt            COLMAP lists (also looked up elsewhere, see below)

The image root is ``datadir`` itself when it holds ``TrainSplit.txt`` (single-folder layout), else the
original's ``<root>/deepslam_data/<dataset>/<scene>`` for ``datadir = <root>/<dataset>/<scene>``.

Frames: ids come from the files whose name contains ``pose`` in each sequence folder (characters
6..11 of ``frame-NNNNNN...``), sorted; ``skip`` is applied per sequence; order = sequences in
split-file order. These readers only parse files; frame conversions happen in ``scene.py``.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from core import frames, geometry
from dataset_loaders import DatasetError, RawSplit

_logger = logging.getLogger(__name__)

SPLIT_FILES = {"train": "TrainSplit.txt", "test": "TestSplit.txt"}
#: Focal of the original 7-Scenes loader (pixels at 640 px width) for the dSLAM ground truth.
DSLAM_FOCAL_640 = 585.0


def locate_image_root(datadir: Path) -> Path:
    """Folder that holds the split files and ``seq-XX`` folders for a 7-Scenes ``datadir``."""
    datadir = Path(datadir)
    if (datadir / SPLIT_FILES["train"]).is_file():
        return datadir
    alt = datadir.parent.parent / "deepslam_data" / datadir.parent.name / datadir.name
    if alt.is_dir():
        return alt
    raise DatasetError(f"{datadir}: no {SPLIT_FILES['train']} here and image folder {alt} not found "
                       "(run data/setup_7scenes.py, or point datadir at a folder with the split files)")


def read_split_file(path: Path) -> list[int]:
    """Sequence ids listed in a ``TrainSplit.txt`` / ``TestSplit.txt`` (lines ``sequenceK``)."""
    if not path.is_file():
        raise DatasetError(f"{path}: split file not found")
    seqs = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        try:
            seqs.append(int(s.split("sequence")[-1]))
        except ValueError:
            raise DatasetError(f"{path}:{lineno}: expected 'sequenceK', got {s!r}") from None
    if not seqs:
        raise DatasetError(f"{path}: lists no sequence")
    return seqs


def frame_ids(seq_dir: Path) -> tuple[list[int], int]:
    """Sorted frame ids of a sequence folder and the number of pose files (for the global index)."""
    names = [n for n in os.listdir(seq_dir) if "pose" in n]
    ids = []
    for n in names:
        digits = n[6:12]
        if n.startswith("frame-") and digits.isdigit():
            ids.append(int(digits))
        else:
            _logger.debug("%s: ignoring %s (not frame-NNNNNN.pose.txt)", seq_dir, n)
    return sorted(ids), len(names)


def _list_frames(image_root: Path, split: str, skip: int):
    """-> names (seq-KK/frame-NNNNNN), gt_idx. Skip per sequence on sorted ids, as the original."""
    split_file = image_root / SPLIT_FILES[split]
    stems, gt_idx, offset, counts = [], [], 0, {}
    for seq in read_split_file(split_file):
        seq_dir = image_root / f"seq-{seq:02d}"
        if not seq_dir.is_dir():
            raise DatasetError(f"{seq_dir}: sequence folder listed in {split_file} not found")
        ids, n_pose_files = frame_ids(seq_dir)
        counts[f"seq-{seq:02d}"] = len(ids)
        ids = ids[::skip]
        stems += [f"seq-{seq:02d}/frame-{i:06d}" for i in ids]
        gt_idx += [offset + i for i in ids]
        offset += n_pose_files
    if len(counts) > 1 and min(counts.values()) < 0.5 * max(counts.values()):
        # an emptied or half-copied sequence folder would otherwise train / test on fewer frames silently
        listed = ", ".join(f"{k}: {v}" for k, v in counts.items())
        _logger.warning("%s split: the listed sequences hold very different numbers of frames (%s); "
                        "check for missing or partly copied sequence folders", split, listed)
    if not stems:
        raise DatasetError(f"{split_file}: zero {split} frames (no frame-*.pose.txt files in the listed sequences)")
    return stems, np.asarray(gt_idx, dtype=np.int64)


def read_pose_file(path: Path) -> np.ndarray:
    """A 4x4 text matrix -> (3, 4) float64; one clear error for a malformed file.

    A file of 12 numbers is read as the 3x4 top of the matrix (accepted on purpose: some tools write poses
    without the constant last row). A 4x4 whose last row is not ``0 0 0 1`` (e.g. a transposed matrix) is
    an error."""
    try:
        vals = np.array(path.read_text().split(), dtype=np.float64)
    except FileNotFoundError:
        raise DatasetError(f"{path}: pose file not found") from None
    except ValueError:
        raise DatasetError(f"{path}: pose file holds non-numeric text") from None
    if vals.size not in (12, 16):
        raise DatasetError(f"{path}: expected a 4x4 pose matrix (16 numbers; 12 for its 3x4 top), got {vals.size} numbers")
    if not np.all(np.isfinite(vals)):
        raise DatasetError(f"{path}: pose contains NaN or infinite values")
    if vals.size == 16 and np.abs(vals[12:] - [0, 0, 0, 1]).max() > 1e-4:
        raise DatasetError(f"{path}: the last row of the 4x4 pose is {vals[12:].tolist()}, not [0, 0, 0, 1] "
                           f"(a transposed matrix?)")
    return vals[:12].reshape(3, 4)


def check_rotations(poses: np.ndarray, paths: list) -> None:
    """Name the first file whose rotation block is not orthonormal (:data:`core.geometry.ROTATION_TOLERANCE`)."""
    i, dev, _ = geometry.first_non_rotation(poses[:, :3, :3], proper=False)
    if i is not None:
        raise DatasetError(f"{paths[i]}: rotation block is not orthonormal (max |RᵀR - I| = {dev:.3g})")


def find_colmap_list(image_root: Path, datadir: Path, split: str) -> Path:
    """``<scene>_<split>.txt`` in the image folder, then datadir, then ``<root>/7Scenes_colmap_poses/<scene>/``."""
    scene = Path(datadir).name
    fname = f"{scene}_{split}.txt"
    candidates = [image_root / fname, Path(datadir) / fname,
                  Path(datadir).parent.parent / "7Scenes_colmap_poses" / scene / fname]
    for c in candidates:
        if c.is_file():
            return c
    raise DatasetError(f"{fname}: COLMAP pose list not found (looked in {', '.join(str(c.parent) for c in candidates)})")


def read_colmap_list(path: Path) -> dict[str, np.ndarray]:
    """COLMAP list -> {relative image name: (8,) [qw qx qy qz tx ty tz f]} (world-to-camera, OpenCV)."""
    out = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if len(parts) != 9:
            raise DatasetError(f"{path}:{lineno}: expected 'name qw qx qy qz tx ty tz focal' (9 fields), got {len(parts)}")
        try:
            vals = np.array(parts[1:], dtype=np.float64)
        except ValueError:
            raise DatasetError(f"{path}:{lineno}: non-numeric pose values") from None
        if not np.all(np.isfinite(vals)):
            raise DatasetError(f"{path}:{lineno}: pose contains NaN or infinite values")
        if np.linalg.norm(vals[:4]) < 1e-6:
            raise DatasetError(f"{path}:{lineno}: zero quaternion")
        out[parts[0]] = vals
    return out


def read_split(datadir: Path, split: str, skip: int, colmap: bool) -> RawSplit:
    """Read one split of a 7-Scenes scene (no image is decoded).

    Args:
        datadir: scene folder (meta files; images too, or under ``../../deepslam_data/<dataset>/<scene>``).
        split: ``"train"`` or ``"test"``; skip: keep every ``skip``-th frame of each sequence.
        colmap: poses from the COLMAP list (world-to-camera) instead of the dSLAM pose files.
    Returns:
        :class:`RawSplit` with ``poses_raw`` (N, 3, 4): OpenCV c2w (dSLAM) or COLMAP w2c.
    """
    image_root = locate_image_root(datadir)
    stems, gt_idx = _list_frames(image_root, split, skip)
    names = [s + ".color.png" for s in stems]
    image_paths = [image_root / n for n in names]
    depth_paths = [image_root / (s + ".depth.png") for s in stems]
    if colmap:
        list_path = find_colmap_list(image_root, datadir, split)
        table = read_colmap_list(list_path)
        missing = [n for n in names if n not in table]
        if missing:
            raise DatasetError(f"{list_path}: no entry for {missing[0]} ({len(missing)} of the {len(names)} "
                               f"{split} images are missing)")
        rows = np.stack([table[n] for n in names])
        poses = frames.colmap_to_w2c(rows[:, :4], rows[:, 4:7])
        return RawSplit(split, image_paths, names, poses, "w2c_colmap", f"COLMAP list {list_path}", gt_idx,
                        depth_paths=depth_paths, focal_list=float(rows[0, 7]))
    pose_paths = [image_root / (s + ".pose.txt") for s in stems]
    poses = np.stack([read_pose_file(p) for p in pose_paths])
    check_rotations(poses, pose_paths)
    return RawSplit(split, image_paths, names, poses, "c2w_opencv",
                    f"dSLAM pose files {image_root}/seq-XX/frame-*.pose.txt", gt_idx, depth_paths=depth_paths)
