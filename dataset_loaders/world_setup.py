"""Choose (read, or compute and write) the pose normalisation of a scene.

Two files live in ``datadir`` next to the data:

* ``pose_avg_stats.txt`` (``pose_avg_stats_colmap.txt`` for ``7Scenes_colmap``): the matrix A that
  centres the world before the APR frame is formed (``core/frames.py``).
* ``world_setup.json``: near/far and the APR -> NeRF translation map (s1, v, s2).

Rules
-----
* A file that exists is always used (the shipped files of the original must win, and an automatic
  file written by an earlier run makes later runs reproducible). ``--load_pose_avg_stats`` only adds a
  warning when it is set and the file is missing.
* Missing ``pose_avg_stats``: A = ``average_poses`` of the **training** camera-to-world matrices in
  the dataset's world (OpenCV c2w for 7-Scenes dSLAM and Cambridge; for COLMAP the inverted, axis-
  flipped w2c ``(M·Q)⁻¹``, which is what the original centres when no file is loaded). Both choices put
  the training cameras' mean at the APR origin, looking along −z on average.
* Missing ``world_setup.json``: near = 0 (as every original scene); the far bound ``far_m`` (metres)
  is a high percentile of the 7-Scenes depth maps of a subsample of training frames; without depth
  maps, twice a high percentile of the depths of SIFT keypoints triangulated between neighbouring
  training views at their known poses (:mod:`core.triangulation`); without enough keypoints, a
  multiple of the spread of the training cameras (docs/convergence.md, thirteenth pass); then s1 = 1, s2 = 2 / far_m (far = 2 NeRF
  units) and v moves the midpoint of the mean viewing frustum, ``c̄ + d̄·far_m/2``, to the origin.
* Both automatic files are written to ``datadir`` (a warning if it is not writable; the values are
  used in memory), or to ``meta_dir`` when one is given (``--meta_dir``: keep a read-only or shared
  scene folder untouched); files in ``datadir`` still win, then those in ``meta_dir``. ``--save_pose_avg_stats`` instead reproduces the original recipe exactly
  (:func:`recipe_pose_avg`) and writes the file.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from core import frames, triangulation
from dataset_loaders import DatasetError, RawSplit, poses
from dataset_loaders.images import read_depth_mm
from utils.atomic import atomic_write_text

_logger = logging.getLogger(__name__)

WORLD_SETUP_FILE = "world_setup.json"
IDENTITY_34 = np.concatenate([np.eye(3), np.zeros((3, 1))], axis=1)

# far-bound heuristics (documented in data/README.md)
DEPTH_PERCENTILE = 99.0      # of the valid depth values of the sampled frames
DEPTH_MARGIN = 1.2           # far_m = margin × percentile
DEPTH_MAX_FRAMES = 40        # evenly spaced training frames
KEYPOINT_PERCENTILE = 99.0   # no depth maps: of the triangulated keypoints' depths
KEYPOINT_MARGIN = 2.0        # far_m = margin × percentile (the keypoints miss what lies too far for parallax)
KEYPOINT_MAX_VIEWS = 120     # evenly spaced training views (about 15 s for 854x480 images on two cores)
KEYPOINT_MIN_POINTS = 200    # fewer: fall back to the camera spread
CAMERA_SPREAD_FACTOR = 3.0   # no depth, no keypoints: far_m = factor × camera spread (2 × 90th pct distance to the mean)
NERF_FAR = 2.0               # target far bound in NeRF units


def pose_avg_filename(dataset_type: str) -> str:
    return "pose_avg_stats_colmap.txt" if dataset_type == "7Scenes_colmap" else "pose_avg_stats.txt"


def _try_write(path: Path, text: str) -> str:
    """Write ``text`` to ``path``; returns a provenance suffix (warns instead of failing)."""
    try:
        atomic_write_text(path, text)
        return f"written to {path}"
    except OSError as e:
        _logger.warning("could not write %s (%s); using the computed values in memory only", path, e)
        return f"NOT written ({path}: {e.strerror or e}); used in memory"


# ----------------------------------------------------------------------------------------------
# pose_avg_stats
# ----------------------------------------------------------------------------------------------
def recipe_pose_avg(raw_train: RawSplit) -> np.ndarray:
    """The original ``--save_pose_avg_stats`` recipe: ``average_poses`` of the training poses as loaded.

    For 7-Scenes dSLAM and Cambridge those are OpenCV c2w; for COLMAP they are the raw **w2c**
    matrices (how the shipped ``pose_avg_stats_colmap.txt`` files were made, spec §1.5).
    """
    return frames.average_poses(raw_train.poses_raw)


def auto_pose_avg(raw_train: RawSplit) -> np.ndarray:
    """A for scenes without a file: average of the training c2w poses in the dataset's world."""
    if raw_train.pose_kind == "w2c_colmap":
        c2w = frames.colmap_w2c_to_apr(raw_train.poses_raw, IDENTITY_34)  # (M·Q)⁻¹, COLMAP world
    else:
        c2w = raw_train.poses_raw
    return frames.average_poses(c2w)


def _format_matrix(A: np.ndarray) -> str:
    return "\n".join(" ".join(f"{v:.18e}" for v in row) for row in np.asarray(A).reshape(3, 4)) + "\n"


def write_recipe_pose_avg(datadir: Path, dataset_type: str, raw_train: RawSplit) -> Path:
    """``--save_pose_avg_stats``: write the original recipe's A to ``datadir`` (overwrites). -> path."""
    path = Path(datadir) / pose_avg_filename(dataset_type)
    A = recipe_pose_avg(raw_train)
    try:
        atomic_write_text(path, _format_matrix(A))
    except OSError as e:
        raise DatasetError(f"{path}: cannot write pose_avg_stats ({e.strerror or e})") from None
    return path


def _meta_path(datadir: Path, meta_dir: Path | None, name: str) -> Path:
    """The file to read: ``datadir/name`` if it exists, else ``meta_dir/name`` (also where a new one goes)."""
    path = Path(datadir) / name
    if path.is_file() or meta_dir is None:
        return path
    Path(meta_dir).mkdir(parents=True, exist_ok=True)
    return Path(meta_dir) / name


def resolve_pose_avg(datadir: Path, dataset_type: str, raw_train: RawSplit,
                     load_flag: bool = True, write: bool = True, meta_dir: Path | None = None) -> tuple[np.ndarray, str]:
    """-> (A (3, 4), provenance). Reads the file when present, else computes (and writes) it."""
    path = _meta_path(datadir, meta_dir, pose_avg_filename(dataset_type))
    if path.is_file():
        try:
            A = poses.load_pose_avg_stats(path)
            poses.check_poses(A[None], str(path))
        except poses.PoseFileError as e:
            raise DatasetError(str(e)) from None
        return A, f"read from {path}"
    if load_flag:
        _logger.warning("load_pose_avg_stats is set but %s does not exist; computing it from the training poses", path)
    A = auto_pose_avg(raw_train)
    kind = "(M·Q)⁻¹ of the COLMAP w2c" if raw_train.pose_kind == "w2c_colmap" else "OpenCV camera-to-world"
    desc = f"auto: average of the {len(raw_train.poses_raw)} training {kind} poses"
    desc += "; " + (_try_write(path, _format_matrix(A)) if write else "not written")
    _logger.info("pose_avg_stats %s", desc)
    return A, desc


# ----------------------------------------------------------------------------------------------
# world_setup.json
# ----------------------------------------------------------------------------------------------
def far_from_depth(depth_paths: list[Path] | None) -> tuple[float, str] | None:
    """Far bound in metres from 7-Scenes depth PNGs (uint16 mm; 0 and 65535 invalid), or None.

    Uses up to ``DEPTH_MAX_FRAMES`` evenly spaced frames whose depth file exists.
    """
    if not depth_paths:
        return None
    existing = [p for p in depth_paths if p.is_file()]
    if not existing:
        return None
    pick = np.unique(np.linspace(0, len(existing) - 1, min(DEPTH_MAX_FRAMES, len(existing))).round().astype(int))
    values = []
    for i in pick:
        d = read_depth_mm(existing[i])[::2, ::2]
        values.append(d[(d > 0) & (d < 65535)])
    v = np.concatenate(values)
    if v.size == 0:
        return None
    p = float(np.percentile(v, DEPTH_PERCENTILE)) / 1000.0
    far_m = DEPTH_MARGIN * p
    return far_m, (f"{DEPTH_MARGIN} × {DEPTH_PERCENTILE:g}th percentile ({p:.3f} m) of {v.size} valid depths "
                   f"from {len(pick)} training depth maps")


def far_from_keypoints(image_paths: list[Path] | None, c2w_apr: np.ndarray,
                       camera: tuple[int, int, float] | None) -> tuple[float, str] | None:
    """Far bound in metres from SIFT keypoints triangulated at the training poses, or None.

    Args:
        image_paths: the training images, in the order of ``c2w_apr`` (N, 3, 4; APR frame, metres).
        camera: ``(h, w, focal)`` of the images as stored (pixels).
    Uses up to ``KEYPOINT_MAX_VIEWS`` evenly spaced views; None with fewer than ``KEYPOINT_MIN_POINTS``
    keypoints (or without OpenCV's SIFT). Without depth maps the camera spread is a poor cue for how
    deep a scene is: on the synthetic street50 it gives 99 m where the keypoints lie at 6-16 m, and a far
    bound 4x too large spends most samples, and the hash grid most cells, on empty space
    (docs/convergence.md, twelfth and thirteenth passes).
    """
    if not image_paths or camera is None or len(image_paths) != len(c2w_apr) or len(image_paths) < 2:
        return None
    pick = np.unique(np.linspace(0, len(image_paths) - 1, min(KEYPOINT_MAX_VIEWS, len(image_paths))).round().astype(int))
    h, w, focal = camera
    try:
        sd = triangulation.triangulate([image_paths[i] for i in pick], c2w_apr[pick], h, w, focal)
    except (ImportError, AttributeError) as e:      # an OpenCV build without SIFT
        _logger.warning("no keypoints for the far bound (%s)", e)
        return None
    except FileNotFoundError as e:                  # an image OpenCV cannot decode
        raise DatasetError(f"automatic far bound: {e}") from None
    if len(sd) < KEYPOINT_MIN_POINTS:
        _logger.warning("only %d keypoints triangulated in %d training views: the far bound falls back to the "
                        "camera spread", len(sd), len(pick))
        return None
    p = float(np.percentile(sd.depth, KEYPOINT_PERCENTILE))
    return KEYPOINT_MARGIN * p, (f"{KEYPOINT_MARGIN:g} × {KEYPOINT_PERCENTILE:g}th percentile ({p:.3f} m) of the "
                                 f"depths of {len(sd)} SIFT keypoints triangulated in {len(pick)} training views")


def far_from_cameras(c2w_apr: np.ndarray) -> tuple[float, str]:
    """Far bound in metres without depth: ``CAMERA_SPREAD_FACTOR`` × camera spread.

    spread = 2 × 90th percentile of the distances of the training camera centres to their mean
    (a robust diameter); 1 m when the cameras do not move (no metric cue at all).
    """
    c = c2w_apr[:, :, 3]
    dist = np.linalg.norm(c - c.mean(0), axis=1)
    spread = 2.0 * float(np.percentile(dist, 90))
    if spread < 1e-6:
        _logger.warning("training cameras do not move: no scale cue for the far bound, using 1 m")
        return 1.0, "1 m (training cameras do not move; no depth maps)"
    return CAMERA_SPREAD_FACTOR * spread, f"{CAMERA_SPREAD_FACTOR} × camera spread ({spread:.3f} m; no depth maps)"


def auto_world_setup(c2w_apr_train: np.ndarray, depth_paths: list[Path] | None = None,
                     image_paths: list[Path] | None = None,
                     camera: tuple[int, int, float] | None = None) -> tuple[frames.WorldSetup, str]:
    """Near/far and the APR -> NeRF map for a scene without ``world_setup.json``.

    Args:
        c2w_apr_train: (N, 3, 4) training poses in the APR frame (metres, OpenGL camera axes).
        depth_paths: optional 7-Scenes depth PNGs of those frames.
        image_paths, camera: optional training images of those frames and their ``(h, w, focal)``
            (for the keypoint far bound when there are no depth maps).
    Returns:
        (WorldSetup with near 0, far 2, s1 1, s2 = 2/far_m, v), a human-readable description.
    """
    found = far_from_depth(depth_paths)
    if found is None:
        found = far_from_keypoints(image_paths, c2w_apr_train, camera)
    far_m, why = found if found is not None else far_from_cameras(c2w_apr_train)
    centre = c2w_apr_train[:, :, 3].mean(0)
    view = -c2w_apr_train[:, :, 2].mean(0)          # OpenGL cameras look along their −z
    if np.linalg.norm(view) > 0.3:
        target = centre + view / np.linalg.norm(view) * far_m / 2.0
        where = "midpoint of the mean viewing frustum"
    else:                                           # cameras look in all directions: centre on them
        target = centre
        where = "camera centroid (viewing directions too spread)"
    s1, s2 = 1.0, NERF_FAR / far_m
    ws = frames.WorldSetup(near=0.0, far=NERF_FAR, pose_scale=s1, pose_scale2=s2,
                          move_all_cam_vec=[round(float(x), 9) + 0.0 for x in -s1 * target])  # no "-0.0"/1e-17 noise
    ws.validate("auto world setup")
    desc = (f"auto: far_m = {far_m:.3f} m = {why}; near 0, far {NERF_FAR:g} NeRF units, s1 = 1, s2 = {s2:.6g}, "
            f"v = {np.round(ws.move_all_cam_vec, 4).tolist()} ({where} at the origin)")
    return ws, desc


def resolve_world_setup(datadir: Path, c2w_apr_train: np.ndarray, depth_paths: list[Path] | None = None,
                        write: bool = True, meta_dir: Path | None = None, image_paths: list[Path] | None = None,
                        camera: tuple[int, int, float] | None = None) -> tuple[frames.WorldSetup, str]:
    """-> (WorldSetup, provenance). Reads ``world_setup.json`` (datadir, then meta_dir) if present, else
    computes and writes it."""
    path = _meta_path(datadir, meta_dir, WORLD_SETUP_FILE)
    if path.is_file():
        try:
            return frames.WorldSetup.from_json(path), f"read from {path}"
        except poses.PoseFileError as e:
            raise DatasetError(str(e)) from None
    ws, desc = auto_world_setup(c2w_apr_train, depth_paths, image_paths, camera)
    payload = {"near": ws.near, "far": ws.far, "pose_scale": ws.pose_scale, "pose_scale2": ws.pose_scale2,
               "move_all_cam_vec": ws.move_all_cam_vec, "_nefes_auto": desc}
    desc += "; " + (_try_write(path, json.dumps(payload, indent=4) + "\n") if write else "not written")
    _logger.info("world_setup %s", desc)
    return ws, desc
