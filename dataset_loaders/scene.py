"""``load_scene(args) -> SceneData``: one entry point for every dataset type (contract "Data").

Steps: read both splits from disk (:mod:`seven_scenes`, :mod:`cambridge`), choose the pose
normalisation (:mod:`world_setup`), convert the poses to the APR frame (:mod:`poses`), pick the
intrinsics, and wrap each split in a lazily-loading :class:`Split` (Cambridge pre-loads, as the original).
"""
from __future__ import annotations

import argparse
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from config.options import DATASET_TYPES
from core import frames
from core.errors import ConfigError
from dataset_loaders import DatasetError, RawSplit, cambridge, images, poses, seven_scenes, world_setup

_logger = logging.getLogger(__name__)

DECODE_THREADS = max(1, min(8, os.cpu_count() or 1))


# ----------------------------------------------------------------------------------------------
# Split
# ----------------------------------------------------------------------------------------------
class Split(Dataset):
    """One split of a scene: images read lazily, poses in the APR frame.

    Items: ``{"img": (3, H, W) float32 in [0, 1], "pose": (12,) float32 (APR c2w, row-major 3x4),
    "hist": (10,) float32, "idx": int[, "mask": (h, w) bool at the render size of --tinyscale]}``.
    After :meth:`images` the item image is a view of the cached tensor: do not modify it in place.

    Attributes:
        poses: (N, 3, 4) float64 APR-frame camera-to-world. names: relative image paths.
        image_paths: absolute paths. gt_idx: the original's global frame index.
        masks: (N, h, w) bool tensor or None.
    """

    def __init__(self, split: str, image_paths: list[Path], names: list[str], c2w_apr: np.ndarray,
                 raw_hw: tuple[int, int], hw: tuple[int, int], df: float, *, gt_idx=None,
                 masks: torch.Tensor | None = None, cache: bool = True):
        self.split = split
        self.image_paths = list(image_paths)
        self.names = list(names)
        self.poses = np.asarray(c2w_apr, dtype=np.float64)
        self.raw_hw, self.hw, self.df = tuple(raw_hw), tuple(hw), float(df)
        self.gt_idx = np.arange(len(self.names)) if gt_idx is None else np.asarray(gt_idx)
        self.masks = masks
        self.cache = cache
        self._u16: dict[int, np.ndarray] = {}      # idx -> (3, H, W) uint16 working image
        self._hist: dict[int, torch.Tensor] = {}   # idx -> (10,) float32
        self._images: torch.Tensor | None = None   # (N, 3, H, W) float32 once images() ran
        self._hists: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.names)

    # -- decoding ---------------------------------------------------------------------------
    def _decode(self, i: int) -> tuple[np.ndarray, torch.Tensor]:
        path = self.image_paths[i]
        raw = images.read_rgb(path)
        if raw.shape[:2] != self.raw_hw:
            raise DatasetError(f"{path}: image is {raw.shape[1]}x{raw.shape[0]}, expected "
                               f"{self.raw_hw[1]}x{self.raw_hw[0]} like the first training image")
        img = images.to_working(raw, self.hw, self.df)
        hist = images.luminance_histogram(img.transpose(2, 0, 1))
        return images.quantize_u16(img), hist

    def _load(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """-> ((3, H, W) float32, (10,) hist), through the caches."""
        if self._images is not None:
            return self._images[i], self.hists[i]
        u16 = self._u16.get(i)
        if u16 is None:
            u16, hist = self._decode(i)
            self._hist[i] = hist
            if self.cache:
                self._u16[i] = u16
        return images.dequantize_u16(u16), self._hist[i]

    def _decode_all(self, keep_images: bool) -> None:
        todo = [i for i in range(len(self)) if i not in self._hist or (keep_images and i not in self._u16)]
        if not todo:
            return

        def work(i):
            u16, hist = self._decode(i)
            self._hist[i] = hist
            if keep_images:
                self._u16[i] = u16

        with ThreadPoolExecutor(DECODE_THREADS) as pool:
            list(tqdm(pool.map(work, todo), total=len(todo), desc=f"decoding {self.split} images",
                      disable=len(todo) < 200, leave=False))

    # -- public -----------------------------------------------------------------------------
    @property
    def hists(self) -> torch.Tensor:
        """(N, 10) float32 luminance histograms (decodes the images not seen yet, once)."""
        if self._hists is None:
            self._decode_all(keep_images=self.cache)
            self._hists = torch.stack([self._hist[i] for i in range(len(self))])
        return self._hists

    def images(self) -> torch.Tensor:
        """(N, 3, H, W) float32 working-size images, decoded once (threaded) and kept."""
        if self._images is None:
            self._decode_all(keep_images=True)
            buf = np.empty((len(self), 3, *self.hw), dtype=np.float32)
            for i in range(len(self)):
                images.dequantize_u16(self._u16[i], out=buf[i])
            self._images = torch.from_numpy(buf)
            _ = self.hists
            self._u16.clear()  # the float tensor now serves every item
        return self._images

    def preload(self) -> "Split":
        self.images()
        return self

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < len(self):
            raise IndexError(f"{self.split} split has {len(self)} items, got index {i}")
        img, hist = self._load(i)
        out = {"img": img, "pose": torch.from_numpy(self.poses[i].reshape(12).astype(np.float32)),
               "hist": hist, "idx": int(i)}
        if self.masks is not None:
            out["mask"] = self.masks[i]
        return out


# ----------------------------------------------------------------------------------------------
# SceneData
# ----------------------------------------------------------------------------------------------
@dataclass
class SceneData:
    """A loaded scene (see docs/architecture.md, "Data").

    ``H, W, focal``: working size and focal (pixels). ``near, far``: NeRF-frame ray bounds.
    ``pose_avg`` (3, 4): centring matrix A in use. ``provenance``: what came from where (strings).
    """
    name: str
    dataset_type: str
    datadir: Path
    train: Split
    test: Split
    H: int
    W: int
    focal: float
    H_raw: int
    W_raw: int
    focal_raw: float
    near: float
    far: float
    world_setup: frames.WorldSetup
    pose_avg: np.ndarray
    provenance: dict = field(default_factory=dict)

    def render_size(self, tinyscale: float) -> tuple[int, int, float]:
        """(h, w, focal) at which NeFeS renders: ``int(H // tinyscale), int(W // tinyscale), focal / tinyscale``."""
        return int(self.H // tinyscale), int(self.W // tinyscale), self.focal / tinyscale

    def frustum_bounds(self, split: str = "train") -> np.ndarray:
        """(2, 3) NeRF-frame AABB [min; max] of the camera centres and far-plane corners of a split."""
        c2w = frames.apr_to_nerf(getattr(self, split).poses, self.world_setup)
        hx, hy = self.W / (2 * self.focal), self.H / (2 * self.focal)
        corners = np.array([[sx * hx, sy * hy, -1.0] for sx in (-1, 1) for sy in (-1, 1)]) * self.far
        pts = np.einsum("nij,kj->nki", c2w[:, :, :3], corners) + c2w[:, None, :, 3]
        pts = np.concatenate([pts.reshape(-1, 3), c2w[:, :, 3]])
        return np.stack([pts.min(0), pts.max(0)])

    def summary(self) -> str:
        lines = [f"scene {self.name} ({self.dataset_type}) from {self.datadir}",
                 f"  train {len(self.train)} / test {len(self.test)} images",
                 f"  image size raw {self.W_raw}x{self.H_raw}, working {self.W}x{self.H}, "
                 f"focal {self.focal:.4g} px (raw {self.focal_raw:.4g})",
                 f"  near/far {self.near:g}/{self.far:g} (NeRF units)"]
        lines += [f"  {k}: {v}" for k, v in self.provenance.items()]
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------------
def _arg(args, name, default):
    v = getattr(args, name, default)
    return default if v is None else v


def _check_args(args) -> tuple[str, Path]:
    dtype = getattr(args, "dataset_type", None)
    if dtype not in DATASET_TYPES:
        raise DatasetError(f"dataset_type {dtype!r} is not one of {', '.join(DATASET_TYPES)}")
    if not getattr(args, "datadir", None):
        raise DatasetError("datadir is not set (config key 'datadir')")
    datadir = Path(args.datadir)
    if not datadir.is_dir():
        raise DatasetError(f"{datadir}: datadir not found")
    for key in ("trainskip", "testskip"):
        if int(_arg(args, key, 1)) < 1:
            raise DatasetError(f"{key} must be >= 1, got {getattr(args, key)}")
    if float(_arg(args, "df", 1.0)) <= 0:
        raise DatasetError(f"df must be positive, got {args.df}")
    return dtype, datadir


def read_raw_splits(args, splits=("train", "test")) -> tuple[RawSplit, ...]:
    """The requested splits as on disk (dataset frame, no image decoded)."""
    dtype, datadir = _check_args(args)
    skips = {"train": int(_arg(args, "trainskip", 1)), "test": int(_arg(args, "testskip", 1))}
    if dtype == "Cambridge":
        sem = bool(_arg(args, "semantic", False))
        return tuple(cambridge.read_split(datadir, s, skips[s], semantic=sem) for s in splits)
    if _arg(args, "semantic", False):
        _logger.warning("semantic masks exist only for Cambridge; --semantic ignored for %s", dtype)
    colmap = dtype == "7Scenes_colmap"
    return tuple(seven_scenes.read_split(datadir, s, skips[s], colmap=colmap) for s in splits)


def save_pose_avg_stats(args) -> Path:
    """``--save_pose_avg_stats``: the original recipe on the training poses, written to datadir. -> path."""
    dtype, datadir = _check_args(args)
    (train,) = read_raw_splits(args, splits=("train",))
    path = world_setup.write_recipe_pose_avg(datadir, dtype, train)
    _logger.info("wrote %s (average of %d raw training poses, the original's recipe)", path, len(train.poses_raw))
    return path


def to_apr(raw: RawSplit, A: np.ndarray) -> np.ndarray:
    """Raw dataset poses -> (N, 3, 4) APR-frame camera-to-world."""
    if raw.pose_kind == "w2c_colmap":
        out = frames.colmap_w2c_to_apr(raw.poses_raw, A)
    else:
        out = frames.opencv_c2w_to_apr(raw.poses_raw, A)
    try:
        return poses.check_poses(out, raw.pose_source)
    except poses.PoseFileError as e:
        raise DatasetError(str(e)) from None


def _intrinsics(args, dtype: str, datadir: Path, raw_train: RawSplit, w_raw: int) -> tuple[float, str]:
    """Focal (pixels, raw size) and where it came from."""
    override = getattr(args, "focal", None)
    if dtype == "7Scenes":
        default = seven_scenes.DSLAM_FOCAL_640 * w_raw / 640.0
        how = "7-Scenes default 585 px at 640 px width" + (f", scaled to {w_raw} px: {default:.4g} px" if w_raw != 640 else "")
    elif dtype == "7Scenes_colmap":
        default = float(raw_train.focal_list)
        how = f"COLMAP list focal {default:g} px of {raw_train.names[0]}"
    else:
        default = cambridge.FOCAL_854 * w_raw / 854.0
        how = "Cambridge default 744 px at 854 px width" + (f", scaled to {w_raw} px: {default:.4g} px" if w_raw != 854 else "")
        calib = cambridge.calibration_focal(datadir)
        if calib is not None and abs(calib[0] / default - 1.0) > 0.02:
            _logger.warning("%s: median calibration focal %.1f px (%d files) differs from the default %.1f px by "
                            "more than 2%%; using %s", datadir / "train" / "calibration", calib[0], calib[1], default,
                            "--focal" if override else "the default, as the original (set --focal to change)")
    if override:
        return float(override), f"--focal {float(override):g} px (default would be {default:.4g}: {how})"
    return default, how


def load_scene(args: argparse.Namespace, preload: bool | None = None) -> SceneData:
    """Load a scene as described by ``args`` (datadir, dataset_type, df, trainskip, testskip, ...).

    Args:
        preload: decode every image now (default: Cambridge only, as the original); otherwise
            images are decoded on first use and cached (``--cache_images``).

    ``--save_pose_avg_stats`` is a separate job (:func:`save_pose_avg_stats`, run by ``run_nefes.py``, which
    exits after it as the original did): with that flag set this raises :class:`ConfigError`.
    Raises :class:`DatasetError` on bad input.
    """
    dtype, datadir = _check_args(args)
    if _arg(args, "save_pose_avg_stats", False):
        raise ConfigError("save_pose_avg_stats writes the pose statistics and exits: run it with run_nefes.py")

    raw_train, raw_test = read_raw_splits(args)
    prov = {"poses": raw_train.pose_source}
    if dtype != "Cambridge":
        prov["images"] = str(seven_scenes.locate_image_root(datadir))
    else:
        prov["images"] = str(datadir / "{train,test}" / "rgb")
    if raw_train.notes + raw_test.notes:
        prov["notes"] = "; ".join(raw_train.notes + raw_test.notes)

    meta_dir = _arg(args, "meta_dir", None)
    A, prov["pose_avg"] = world_setup.resolve_pose_avg(datadir, dtype, raw_train,
                                                       load_flag=bool(_arg(args, "load_pose_avg_stats", False)),
                                                       meta_dir=meta_dir)
    c2w_train, c2w_test = to_apr(raw_train, A), to_apr(raw_test, A)
    h_raw, w_raw = images.image_size(raw_train.image_paths[0])
    df = float(_arg(args, "df", 1.0))
    h, w = images.working_size(h_raw, w_raw, df)
    focal_raw, prov["focal"] = _intrinsics(args, dtype, datadir, raw_train, w_raw)
    ws, prov["world_setup"] = world_setup.resolve_world_setup(datadir, c2w_train, raw_train.depth_paths,
                                                              meta_dir=meta_dir, image_paths=raw_train.image_paths,
                                                              camera=(h_raw, w_raw, focal_raw))
    focal = focal_raw / df

    if _arg(args, "set_near_far", False):
        near, far = (float(x) for x in args.near_far)
        prov["near_far"] = f"--set_near_far {near:g} {far:g} (world setup says {ws.near:g} {ws.far:g})"
    else:
        near, far = ws.near, ws.far
        prov["near_far"] = "world setup"

    tinyscale = float(_arg(args, "tinyscale", 4.0))
    render_hw = (int(h // tinyscale), int(w // tinyscale))
    cache = bool(_arg(args, "cache_images", True))

    def make_split(raw: RawSplit, c2w: np.ndarray) -> Split:
        masks = None
        if raw.mask_paths is not None:
            masks = torch.from_numpy(np.stack([images.read_mask(p, render_hw) for p in raw.mask_paths]))
        return Split(raw.split, raw.image_paths, raw.names, c2w, (h_raw, w_raw), (h, w), df,
                     gt_idx=raw.gt_idx, masks=masks, cache=cache)

    scene = SceneData(name=datadir.name, dataset_type=dtype, datadir=datadir,
                      train=make_split(raw_train, c2w_train), test=make_split(raw_test, c2w_test),
                      H=h, W=w, focal=focal, H_raw=h_raw, W_raw=w_raw, focal_raw=focal_raw,
                      near=near, far=far, world_setup=ws, pose_avg=A, provenance=prov)
    if preload if preload is not None else dtype == "Cambridge":  # the original pre-loads Cambridge
        scene.train.preload()
        scene.test.preload()
    _logger.info("%s", scene.summary())
    return scene
