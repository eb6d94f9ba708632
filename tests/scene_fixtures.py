"""Tiny fake scenes on disk in the layouts the loaders read (7-Scenes original / single folder, COLMAP
lists, Cambridge after setup). Everything is written from known camera-to-world poses so tests can
compare the loaders' output with ``poses.py`` conversions of the same matrices.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from config import options
from core import geometry

BOTTOM = np.array([[0.0, 0.0, 0.0, 1.0]])


def random_c2w(n: int, seed: int = 0, max_angle: float = 30.0, spread: float = 1.0) -> np.ndarray:
    """(n, 3, 4) OpenCV camera-to-world: cameras looking roughly along world +z, centres in a cube."""
    g = torch.Generator().manual_seed(seed)
    R = geometry.random_rotation(n, max_angle, generator=g).double().numpy()
    t = np.random.default_rng(seed).uniform(-spread / 2, spread / 2, size=(n, 3, 1))
    return np.concatenate([R, t], axis=2)


def invert(p34: np.ndarray) -> np.ndarray:
    """(..., 3, 4) rigid -> its inverse (test helper; plain linear algebra)."""
    R, t = p34[..., :3, :3], p34[..., :3, 3:]
    Rt = np.swapaxes(R, -1, -2)
    return np.concatenate([Rt, -Rt @ t], axis=-1)


def write_image(path: Path, h: int, w: int, seed: int = 0, value=None) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    if value is None:
        img = np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    else:
        img = np.full((h, w, 3), value, dtype=np.uint8)
    Image.fromarray(img).save(path)
    return img


def write_pose(path: Path, c2w: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(path, np.concatenate([c2w, BOTTOM]), fmt="%.12f", delimiter="\t")


def write_depth(path: Path, h: int, w: int, mm: int) -> None:
    """Constant depth ``mm`` with a few invalid pixels (0 and 65535)."""
    d = np.full((h, w), mm, dtype=np.uint16)
    d[0, :] = 0
    d[-1, :] = 65535
    Image.fromarray(d).save(path)


def quat_wxyz(R: np.ndarray) -> np.ndarray:
    return geometry.rotmat_to_quat(torch.as_tensor(R)).numpy()


@dataclass
class Fake7Scenes:
    datadir: Path
    image_root: Path
    c2w: dict = field(default_factory=dict)        # "seq-KK/frame-NNNNNN" -> (3, 4) OpenCV c2w
    train_seqs: tuple = ()
    test_seqs: tuple = ()
    frames: dict = field(default_factory=dict)     # seq -> list of frame ids (written order)
    focal_list: float = 0.0

    def names(self, split: str, skip: int = 1) -> list[str]:
        """Expected image names in loader order (sequences as listed, frames sorted, per-seq skip)."""
        seqs = self.train_seqs if split == "train" else self.test_seqs
        return [f"seq-{s:02d}/frame-{i:06d}.color.png" for s in seqs for i in sorted(self.frames[s])[::skip]]

    def poses_c2w(self, split: str, skip: int = 1) -> np.ndarray:
        return np.stack([self.c2w[n[:-len(".color.png")]] for n in self.names(split, skip)])


def make_7scenes(root: Path, scene: str = "chess", layout: str = "original", train_seqs=(2, 1), test_seqs=(3,),
                 frames_per_seq: int = 5, h: int = 24, w: int = 32, colmap: str | None = "image",
                 depth_mm: int | None = 2000, focal_list: float = 26.5, seed: int = 0) -> Fake7Scenes:
    """Write a 7-Scenes-like scene.

    layout: ``"original"`` (datadir = root/7Scenes/<scene>, images in root/deepslam_data/7Scenes/<scene>)
    or ``"single"`` (datadir = root/<scene> holds everything).
    colmap: where to put ``<scene>_{train,test}.txt``: "image", "datadir", "colmap_poses" or None.
    Frame ids are written in scrambled order with a gap so sorting matters.
    """
    root = Path(root)
    if layout == "original":
        datadir = root / "7Scenes" / scene
        image_root = root / "deepslam_data" / "7Scenes" / scene
    else:
        datadir = image_root = root / scene
    datadir.mkdir(parents=True, exist_ok=True)
    image_root.mkdir(parents=True, exist_ok=True)
    fake = Fake7Scenes(datadir, image_root, train_seqs=tuple(train_seqs), test_seqs=tuple(test_seqs),
                       focal_list=focal_list)
    (image_root / "TrainSplit.txt").write_text("".join(f"sequence{s}\n" for s in train_seqs))
    (image_root / "TestSplit.txt").write_text("# test sequences\n" + "".join(f"sequence{s}\n" for s in test_seqs))
    all_seqs = list(train_seqs) + list(test_seqs)
    c2w_all = random_c2w(len(all_seqs) * frames_per_seq, seed=seed)
    k = 0
    for s in all_seqs:
        ids = [3 * i + (i > 2) for i in range(frames_per_seq)][::-1]  # 0,3,6,10,13 written in reverse
        fake.frames[s] = ids
        for i in ids:
            stem = f"seq-{s:02d}/frame-{i:06d}"
            write_image(image_root / f"{stem}.color.png", h, w, seed=seed * 1000 + k)
            write_pose(image_root / f"{stem}.pose.txt", c2w_all[k])
            if depth_mm is not None:
                write_depth(image_root / f"{stem}.depth.png", h, w, depth_mm)
            fake.c2w[stem] = c2w_all[k]
            k += 1
    if colmap is not None:
        folder = {"image": image_root, "datadir": datadir,
                  "colmap_poses": datadir.parent.parent / "7Scenes_colmap_poses" / scene}[colmap]
        write_colmap_lists(fake, folder, scene, seed)
    return fake


def write_colmap_lists(fake: Fake7Scenes, folder: Path, scene: str, seed: int = 0) -> None:
    """COLMAP lists (w2c quaternion + translation + focal) of the same cameras, lines shuffled."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + 1)
    for split in ("train", "test"):
        names = fake.names(split)
        lines = []
        for n in names:
            w2c = invert(fake.c2w[n[:-len(".color.png")]])
            q = quat_wxyz(w2c[:, :3])
            vals = list(q) + list(w2c[:, 3]) + [fake.focal_list]
            lines.append(n + " " + " ".join(f"{v:.12g}" for v in vals))
        rng.shuffle(lines)
        (folder / f"{scene}_{split}.txt").write_text("\n".join(lines) + "\n")


@dataclass
class FakeCambridge:
    datadir: Path
    c2w: dict = field(default_factory=dict)        # "train/rgb/<name>.png" -> (3, 4) OpenCV c2w
    names: dict = field(default_factory=dict)      # split -> names in sorted (loader) order


def cambridge_names(n: int) -> list[str]:
    """Names over seq1 and seq10 so the lexicographic order differs from the numeric one."""
    return [f"seq{1 if i % 2 == 0 else 10}_frame{i:05d}.png" for i in range(n)]


def make_cambridge(root: Path, scene: str = "KingsCollege", n_train: int = 6, n_test: int = 3, h: int = 24,
                   w: int = 40, semantic: bool = True, calib_focal: float | None = None, seed: int = 0) -> FakeCambridge:
    """Write a Cambridge scene as data/setup_cambridge.py leaves it (datadir = root/Cambridge/<scene>)."""
    datadir = Path(root) / "Cambridge" / scene
    fake = FakeCambridge(datadir)
    c2w = random_c2w(n_train + n_test, seed=seed, spread=20.0)
    k = 0
    for split, n in (("train", n_train), ("test", n_test)):
        names = cambridge_names(n)
        for name in names:
            write_image(datadir / split / "rgb" / name, h, w, seed=seed * 1000 + k)
            write_pose(datadir / split / "poses" / (name[:-4] + ".txt"), c2w[k])
            if calib_focal is not None:
                (datadir / split / "calibration").mkdir(parents=True, exist_ok=True)
                (datadir / split / "calibration" / (name[:-4] + ".txt")).write_text(str(calib_focal))
            if semantic:  # left half static (255), right half transient (0)
                m = np.zeros((h, w), dtype=np.uint8)
                m[:, : w // 2] = 255
                (datadir / split / "semantic").mkdir(parents=True, exist_ok=True)
                Image.fromarray(m).save(datadir / split / "semantic" / name)
            fake.c2w[f"{split}/rgb/{name}"] = c2w[k]
            k += 1
        fake.names[split] = sorted(names)
    return fake


def write_meta(datadir: Path, pose_avg: np.ndarray | None = None, world: dict | None = None,
               colmap_avg: np.ndarray | None = None) -> None:
    """Original-style meta files in ``datadir``."""
    datadir.mkdir(parents=True, exist_ok=True)
    if pose_avg is not None:
        np.savetxt(datadir / "pose_avg_stats.txt", pose_avg)
    if colmap_avg is not None:
        np.savetxt(datadir / "pose_avg_stats_colmap.txt", colmap_avg)
    if world is not None:
        (datadir / "world_setup.json").write_text(json.dumps(world))


def make_args(datadir, dataset_type: str, *extra: str, **kw):
    """Namespace from THE parser: ``make_args(d, "7Scenes", trainskip=2)``."""
    argv = ["--datadir", str(datadir), "--dataset_type", dataset_type, *extra]
    for k, v in kw.items():
        if isinstance(v, (list, tuple)):
            argv += [f"--{k}", *map(str, v)]
        else:
            argv += [f"--{k}", str(v)]
    return options.parse_args(argv)
