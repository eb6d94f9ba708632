"""``generate``: render a whole synthetic scene into the exact 7-Scenes / Cambridge on-disk layout."""
from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from core import frames, geometry
from data.synthetic.constants import (EXPOSURE_RANGE, GENERATOR_VERSION, INCOMPLETE_MARKER, INFO_FILE, KINDS, LAYOUTS,
                                      REF_CAMERA, ROOM_TEST_COVERAGE_FRACTION, ROOM_TEST_MIN_TRAIN_FRAMES,
                                      STREET_TEST_COVERAGE_M, TEST_WALK_REDRAWS, SyntheticError)
from data.synthetic.raycast import default_intrinsics
from data.synthetic.render import Scene
from data.synthetic.room import build_room
from data.synthetic.street import build_street
from data.synthetic.trajectories import exposure_walk, make_trajectory
from dataset_loaders.poses import save_pose_avg_stats
from utils.atomic import atomic_write_text

_logger = logging.getLogger(__name__)


def build_scene(kind: str, seed: int, focal: float | None = None) -> Scene:
    """Build the ``kind`` scene for ``seed``. Texel size grows when ``focal`` (px) is below the
    reference camera's, so small test images build quickly; the layout does not depend on it."""
    if kind not in KINDS:
        raise SyntheticError(f"unknown scene kind {kind!r} (choose from {', '.join(KINDS)})")
    f_ref = REF_CAMERA[kind][0]
    coarsen = max(1.0, f_ref / focal) if focal else 1.0
    return build_room(seed, 0.004 * coarsen) if kind == "room" else build_street(seed, 0.02 * coarsen)


@dataclass
class _Job:
    split: str
    seq: int
    frame: int
    name: str            # relative path stem, e.g. seq-03/frame-000012 or seq3_frame00013
    c2w: np.ndarray      # (4, 4) OpenCV camera-to-world
    gain: float
    time_s: float
    noise_seed: tuple


_CTX: dict = {}          # scene / intrinsics / folders for the (forked) render workers


def _pose_text(c2w: np.ndarray, sep: str) -> str:
    return "".join(sep.join(f"{x:.9e}" for x in row) + "\n" for row in np.asarray(c2w, np.float64).reshape(4, 4))


def _write_png(path: Path, img: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    path.write_bytes(buf.tobytes())


def _render_job(job: _Job) -> str:
    scene, intr, data_dir = _CTX["scene"], _CTX["intr"], _CTX["data_dir"]
    trans = scene.transients_at(job.time_s, job.c2w[:3, 3]) if scene.actors else ()
    fr = scene.render(job.c2w, intr, gain=job.gain, transients=trans, noise_seed=job.noise_seed)
    bgr = np.ascontiguousarray(fr.rgb[..., ::-1])
    if scene.kind == "room":
        stem = data_dir / job.name
        _write_png(stem.with_name(stem.name + ".color.png"), bgr)
        _write_png(stem.with_name(stem.name + ".depth.png"), fr.depth_mm)
        stem.with_name(stem.name + ".pose.txt").write_text(_pose_text(job.c2w, "\t"))
    else:
        root = data_dir / job.split
        _write_png(root / "rgb" / f"{job.name}.png", bgr)
        _write_png(root / "semantic" / f"{job.name}.png", fr.mask)
        (root / "poses" / f"{job.name}.txt").write_text(_pose_text(job.c2w, " "))
        (root / "calibration" / f"{job.name}.txt").write_text(f"{intr.focal:.6f}\n")
    return job.name


def _prepare_output(data_dir: Path, meta_dir: Path, overwrite: bool) -> None:
    """Create the scene folders and the in-progress marker (in ``data_dir``). Only these folders are
    checked and, when allowed, emptied: never anything else under ``--out`` (the original layout's
    root may hold other datasets)."""
    for d in (data_dir, meta_dir):
        if d.exists() and not d.is_dir():
            raise SyntheticError(f"{d}: exists and is not a folder")
    occupied = [d for d in dict.fromkeys((data_dir, meta_dir)) if d.is_dir() and any(d.iterdir())]
    if (data_dir / INCOMPLETE_MARKER).exists():
        _logger.warning("%s: an interrupted earlier run was detected (%s); regenerating", data_dir, INCOMPLETE_MARKER)
    elif occupied and not overwrite:
        d = occupied[0]
        what = f"already holds a synthetic scene ({INFO_FILE})" if (d / INFO_FILE).exists() else "is not empty"
        raise SyntheticError(f"{d}: folder {what}; pass --overwrite to replace it")
    for d in occupied:
        for child in d.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    for d in (data_dir, meta_dir):
        d.mkdir(parents=True, exist_ok=True)
    (data_dir / INCOMPLETE_MARKER).write_text("synthetic scene generation in progress; rerun the generator to redo it\n")


def _layout_dirs(kind: str, out: Path, layout: str, scene_name: str | None):
    """-> (data_dir, meta_dir, scene name) for the requested layout."""
    if layout == "single":
        name = scene_name or out.resolve().name
        return out, out, name
    name = scene_name or kind
    if kind == "room":
        return out / "deepslam_data" / "7Scenes" / name, out / "7Scenes" / name, name
    return out / "Cambridge" / name, out / "Cambridge" / name, name


def _plan(scene: Scene, seed: int, kind: str, n_train_seq, frames_per_seq, n_test_seq, test_frames) -> list[_Job]:
    """Sequence ids, trajectories and exposure for every frame (train first, so test sequences can be
    placed inside the region covered by the training cameras)."""
    ids = np.arange(1, n_train_seq + n_test_seq + 1)
    test_ids = set(np.random.default_rng([seed, 5]).choice(ids, n_test_seq, replace=False).tolist())
    jobs: list[_Job] = []
    train_c2w = []
    for split in ("train", "test"):
        region = None
        if split == "test":
            p = np.concatenate(train_c2w)[:, :3, 3]
            lo, hi = p.min(0), p.max(0)
            region = (lo + 0.1 * (hi - lo), hi - 0.1 * (hi - lo))
        for sid in (int(i) for i in ids if (int(i) in test_ids) == (split == "test")):
            n = frames_per_seq if split == "train" else test_frames
            if split == "test" and (kind == "street" or sum(map(len, train_c2w)) >= ROOM_TEST_MIN_TRAIN_FRAMES):
                c2w = _covered_test_walk(scene, seed, sid, n, region, np.concatenate(train_c2w), kind)
            else:
                c2w = make_trajectory(scene, np.random.default_rng([seed, 1, sid]), n, region)
            gains = exposure_walk(np.random.default_rng([seed, 2, sid]), n)
            if split == "train":
                train_c2w.append(c2w)
            for i in range(n):
                name = f"seq-{sid:02d}/frame-{i:06d}" if kind == "room" else f"seq{sid}_frame{i + 1:05d}"
                jobs.append(_Job(split, sid, i, name, c2w[i], float(gains[i]), sid * 1000.0 + 0.8 * i, (seed, 4, sid, i)))
    return jobs


def _covered_test_walk(scene: Scene, seed: int, sid: int, n: int, region, train_c2w: np.ndarray, kind: str) -> np.ndarray:
    """A test walk that revisits the mapped views, as the real test sequences do.

    A street walk looks at one side along ~10 m of a 50-70 m street, so a test walk drawn on its own can
    face facades that no training camera saw from nearer than 10 m (street44, street45); a room walk can
    look at the room from where no training camera looked the same way (room51: half the spread away,
    where the real 7-Scenes test sequences lie at 4-13 %). No APR or field can localise those views. The
    walk is redrawn (new random streams; the first is the one every earlier version used, so walks that
    were covered stay identical) until the median distance from its frames to a training camera looking
    the same way is at most ``STREET_TEST_COVERAGE_M`` (streets) or ``ROOM_TEST_COVERAGE_FRACTION`` of
    the training cameras' spread (rooms of at least ``ROOM_TEST_MIN_TRAIN_FRAMES`` training frames); after
    ``TEST_WALK_REDRAWS`` draws the best-covered one is kept, with a warning."""
    from dataset_loaders.inspect import camera_spread, view_coverage   # the benchmark's coverage measures
    limit = STREET_TEST_COVERAGE_M if kind == "street" else ROOM_TEST_COVERAGE_FRACTION * camera_spread(train_c2w)
    best = None
    for attempt in range(TEST_WALK_REDRAWS):
        rng = np.random.default_rng([seed, 1, sid] if attempt == 0 else [seed, 1, sid, attempt])
        c2w = make_trajectory(scene, rng, n, region)
        _, similar = view_coverage(train_c2w[:, :3], c2w[:, :3])
        cover = float(np.median(similar))
        if best is None or cover < best[0]:
            best = (cover, c2w)
        if cover <= limit:
            return c2w
    _logger.warning("%s test sequence %d: no walk within %.2f m of a training view in %d draws (best %.2f m)",
                    kind, sid, limit, TEST_WALK_REDRAWS, best[0])
    return best[1]


def generate(kind: str, out, *, seed: int = 0, width: int | None = None, height: int | None = None,
             n_train_seq: int = 3, frames_per_seq: int = 100, n_test_seq: int = 2, test_frames_per_seq: int = 50,
             layout: str = "single", scene_name: str | None = None, overwrite: bool = False,
             with_meta: bool = False, workers: int | None = None, progress: bool = True) -> dict:
    """Render a synthetic scene into ``out`` in the 7-Scenes (``room``) or Cambridge (``street``) layout.

    Layouts: ``single`` writes everything into ``out``; ``original`` writes the images, poses, splits and
    lists to ``<out>/deepslam_data/7Scenes/<scene>/`` and creates the (empty unless ``with_meta``) meta
    folder ``<out>/7Scenes/<scene>/`` (street: ``<out>/Cambridge/<scene>/``).
    Returns the dict written to ``synthetic_info.json`` in the image folder (``out`` for ``single``),
    written last: a folder holding the ``.synthetic_incomplete`` marker is incomplete and is regenerated
    by the next run. Raises :class:`SyntheticError` for bad arguments or an occupied scene folder.
    """
    if layout not in LAYOUTS:
        raise SyntheticError(f"unknown layout {layout!r} (choose from {', '.join(LAYOUTS)})")
    for key, val, low in (("n_train_seq", n_train_seq, 1), ("frames_per_seq", frames_per_seq, 1),
                          ("n_test_seq", n_test_seq, 1), ("test_frames_per_seq", test_frames_per_seq, 1)):
        if int(val) < low:
            raise SyntheticError(f"{key} must be at least {low}, got {val}")
    if kind == "room" and frames_per_seq > 999999 or kind == "street" and frames_per_seq > 99999:
        raise SyntheticError(f"frames_per_seq={frames_per_seq} does not fit the frame-number width")
    intr = default_intrinsics(kind, width, height)
    out = Path(out)
    data_dir, meta_dir, name = _layout_dirs(kind, out, layout, scene_name)
    _prepare_output(data_dir, meta_dir, overwrite)
    t0 = time.perf_counter()
    scene = build_scene(kind, seed, intr.focal)
    _logger.info("built the %s scene (seed %d, %d primitives, %.1f M texels) in %.1f s", kind, seed,
                 len(scene.prims), scene.atlas.data.size / 1e6, time.perf_counter() - t0)
    jobs = _plan(scene, seed, kind, n_train_seq, frames_per_seq, n_test_seq, test_frames_per_seq)
    for job in jobs:
        folder = (data_dir / job.name).parent if kind == "room" else data_dir / job.split
        for sub in ([""] if kind == "room" else ["rgb", "poses", "calibration", "semantic"]):
            (folder / sub).mkdir(parents=True, exist_ok=True)
    _render_all(scene, intr, data_dir, jobs, workers, progress)
    G = _write_lists(kind, data_dir, name, jobs, intr, seed)
    if with_meta:
        _write_meta(kind, meta_dir, jobs, G, scene)
    info = _info(kind, seed, layout, name, out, data_dir, meta_dir, intr, scene, jobs, G, with_meta)
    atomic_write_text(data_dir / INFO_FILE, json.dumps(info, indent=1) + "\n")   # last: marks a complete scene
    (data_dir / INCOMPLETE_MARKER).unlink()
    return info


def _render_all(scene, intr, data_dir, jobs, workers, progress) -> None:
    _CTX.update(scene=scene, intr=intr, data_dir=data_dir)
    workers = min(2, os.cpu_count() or 1) if workers is None else max(1, int(workers))
    bar = tqdm(total=len(jobs), desc=f"rendering {scene.kind} {intr.width}x{intr.height}", unit="frame",
               disable=not progress)
    try:
        if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
            # fork: workers inherit the scene (textures) without pickling it
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                for _ in pool.imap_unordered(_render_job, jobs, chunksize=2):
                    bar.update()
        else:
            for job in jobs:
                _render_job(job)
                bar.update()
    finally:
        bar.close()
        _CTX.clear()


def colmap_world_transform(seed: int) -> np.ndarray:
    """(4, 4) fixed random rigid transform G (no scale) of the COLMAP-style list: X_colmap = G · X_world."""
    g = torch.Generator().manual_seed(int(np.random.default_rng([seed, 3]).integers(2**31)))
    G = np.eye(4)
    G[:3, :3] = geometry.random_rotation(1, 180.0, generator=g)[0].numpy()
    G[:3, 3] = np.random.default_rng([seed, 3]).uniform(-3, 3, 3)
    return G


def _write_lists(kind, data_dir: Path, name: str, jobs, intr, seed):
    """Split files and COLMAP-style lists (room); returns G (room) or None."""
    if kind != "room":
        return None
    for split, fname in (("train", "TrainSplit.txt"), ("test", "TestSplit.txt")):
        seqs = sorted({j.seq for j in jobs if j.split == split})
        (data_dir / fname).write_text("".join(f"sequence{s}\n" for s in seqs))
    G = colmap_world_transform(seed)
    for split in ("train", "test"):
        sel = [j for j in jobs if j.split == split]
        c2w_colmap = torch.as_tensor(np.stack([G @ j.c2w for j in sel])[:, :3])
        w2c = geometry.invert_pose(c2w_colmap)
        q = geometry.rotmat_to_quat(w2c[:, :, :3]).numpy()
        t = w2c[:, :, 3].numpy()
        lines = [f"{j.name}.color.png " + " ".join(f"{x:.12g}" for x in (*q[i], *t[i])) + f" {intr.focal:.6f}\n"
                 for i, j in enumerate(sel)]
        (data_dir / f"{name}_{split}.txt").write_text("".join(lines))
    return G


def _write_meta(kind, meta_dir: Path, jobs, G, scene: Scene) -> None:
    """Optional world_setup.json / pose_avg_stats*.txt with sensible values (loaders compute their own).

    Scales follow the released configs (7-Scenes: s1 = 0.5, v = (0, 0, 1); Cambridge: s1·s2 = 0.05);
    ``far`` covers the longest possible ray (room: its diagonal; street: across the far enclosure)."""
    c2w = np.stack([j.c2w[:3] for j in jobs if j.split == "train"])
    save_pose_avg_stats(meta_dir / "pose_avg_stats.txt", frames.average_poses(c2w))
    if kind == "room":
        w2c = np.linalg.inv(np.stack([G @ j.c2w for j in jobs if j.split == "train"]))[:, :3]
        save_pose_avg_stats(meta_dir / "pose_avg_stats_colmap.txt", frames.average_poses(w2c))   # as the original: raw w2c
        diag = float(np.linalg.norm(np.subtract(scene.bounds[1], scene.bounds[0])))
        ws = frames.WorldSetup(near=0.0, far=math.ceil(diag * 0.5 * 2) / 2, pose_scale=0.5, pose_scale2=1.0,
                          move_all_cam_vec=[0.0, 0.0, 1.0])
    else:
        ws = frames.WorldSetup(near=0.0, far=10.0, pose_scale=0.25, pose_scale2=0.2, move_all_cam_vec=[0.0, 0.0, 0.0])
    ws.to_json(meta_dir / "world_setup.json")


def _info(kind, seed, layout, name, out, data_dir, meta_dir, intr, scene, jobs, G, with_meta) -> dict:
    def rel(p):                                   # folders relative to --out
        return str(Path(os.path.relpath(p, out)))
    splits = {s: sorted({j.seq for j in jobs if j.split == s}) for s in ("train", "test")}
    info = {
        "generator": "nefes data.synthetic", "version": GENERATOR_VERSION, "kind": kind, "seed": seed,
        "layout": layout, "scene_name": name, "data_dir": rel(data_dir), "meta_dir": rel(meta_dir),
        "dataset_type": "7Scenes / 7Scenes_colmap" if kind == "room" else "Cambridge",
        "image_size": {"width": intr.width, "height": intr.height},
        "intrinsics": {"focal_px": intr.focal, "cx": intr.width / 2, "cy": intr.height / 2,
                       "pixel_rays": "pixel (u, v) looks along ((u - cx)/f, (v - cy)/f, 1) in OpenCV camera axes"},
        "sequences": splits,
        "frames": {s: sum(j.split == s for j in jobs) for s in ("train", "test")},
        "world_frame": "metres, z up; pose files hold camera-to-world 4x4 with OpenCV camera axes",
        "scene_bounds_m": [list(map(float, scene.bounds[0])), list(map(float, scene.bounds[1]))],
        "camera_region_m": [list(map(float, scene.cam_region[0])), list(map(float, scene.cam_region[1]))],
        "exposure": {"range": list(EXPOSURE_RANGE), "model": "8bit = 255 * clip(gain * vignette * radiance)^(1/2.2) + noise",
                     "gains": {j.name: round(j.gain, 6) for j in jobs}},
        "with_meta": with_meta,
    }
    if kind == "room":
        info["depth"] = {"file": "frame-NNNNNN.depth.png", "dtype": "uint16", "units": "mm", "kind": "z-depth",
                         "invalid": 65535}
        info["colmap_list"] = {
            "files": [f"{name}_train.txt", f"{name}_test.txt"],
            "line": "<image> qw qx qy qz tx ty tz f : world-to-camera (x_cam = R x_colmap + t), Hamilton, OpenCV axes",
            "world_transform": np.round(G, 12).tolist(),
            "meaning": "X_colmap = G · X_world, so c2w_colmap = G · c2w (rigid, no scale)"}
    else:
        info["semantic"] = {"static": 255, "transient": 0, "transient_objects": "pedestrians and cars (move per frame)"}
        info["calibration"] = "one number per image: focal in pixels"
    return info
