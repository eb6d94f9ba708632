"""Set up Cambridge Landmarks for nefes (the conversion of the original NeFeS / DSAC* setup script).

For each scene zip (``--download`` from the University of Cambridge repository, or ``--zips DIR``)::

    Cambridge/<Scene>/{train,test}/rgb/<seq>_<frame>.png          shorter side resized to 480 (landscape: 854x480)
    Cambridge/<Scene>/{train,test}/poses/<seq>_<frame>.txt        4x4 camera-to-world (OpenCV axes), 4 lines
    Cambridge/<Scene>/{train,test}/calibration/<seq>_<frame>.txt  focal (px) at the stored size
    Cambridge/<Scene>/{train,test}/semantic/*                     masks (from --semantic_zip)
    Cambridge/<Scene>/{world_setup.json, pose_avg_stats.txt}      (from --meta)

Conversion (spec §1.2): only images present in ``reconstruction.nvm`` are kept; the pose line
``path X Y Z W P Q R`` of ``dataset_<split>.txt`` gives the camera centre c and the world-to-camera
rotation R (quaternion, w first); t = −R·c; images with any |t| > 10000 are skipped (outliers); the
inverse of [R | t] (camera-to-world) is written. Images are resized with OpenCV's default bilinear
filter. The original also writes 8x-subsampled scene coordinates to ``init/``; NeFeS never reads
them, so they are not produced. Images are read straight from the zip (no temporary copy).

    python data/setup_cambridge.py --zips ~/Downloads/cambridge --semantic_zip ~/Downloads/Cambridge_semantic.zip \\
        --meta ../shared/nefes-reference/data
"""
from __future__ import annotations

import argparse
import io
import math
import shutil
import sys
import tempfile
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from core import frames  # noqa: E402  (after the path fix, so the script runs from anywhere)
from core.errors import SetupError, cli_main  # noqa: E402

URLS = {
    "KingsCollege": "https://www.repository.cam.ac.uk/bitstream/handle/1810/251342/KingsCollege.zip",
    "OldHospital": "https://www.repository.cam.ac.uk/bitstream/handle/1810/251340/OldHospital.zip",
    "ShopFacade": "https://www.repository.cam.ac.uk/bitstream/handle/1810/251336/ShopFacade.zip",
    "StMarysChurch": "https://www.repository.cam.ac.uk/bitstream/handle/1810/251294/StMarysChurch.zip",
    "GreatCourt": "https://www.repository.cam.ac.uk/bitstream/handle/1810/251291/GreatCourt.zip",
}
SEMANTIC_URL = "https://www.robots.ox.ac.uk/~shuaic/NeFeS2024/Cambridge_semantic.zip"
DEFAULT_SCENES = ("KingsCollege", "OldHospital", "ShopFacade", "StMarysChurch")
TARGET_SHORT_SIDE = 480
MAX_TRANSLATION = 10000.0
HEADER_LINES = 3  # of dataset_{train,test}.txt


# ----------------------------------------------------------------------------------------------
# parsing
# ----------------------------------------------------------------------------------------------
def parse_nvm_cameras(text: str, source: str = "reconstruction.nvm") -> dict[str, float]:
    """Camera block of an NVM_V3 file -> {image name with .png extension: focal (px, original size)}."""
    lines = text.splitlines()
    if not lines or not lines[0].strip().startswith("NVM_V3"):
        raise SetupError(f"{source}: not an NVM_V3 file")
    i = 1
    while i < len(lines) and not lines[i].strip():
        i += 1
    try:
        n = int(lines[i].split()[0])
    except (IndexError, ValueError):
        raise SetupError(f"{source}: camera count expected on line {i + 1}") from None
    cams = {}
    for k in range(i + 1, i + 1 + n):
        parts = lines[k].split() if k < len(lines) else []
        if len(parts) < 2:
            raise SetupError(f"{source}:{k + 1}: expected '<image> <focal> ...', file ends early or is malformed")
        name = parts[0][:-3] + "png" if parts[0].lower().endswith(("jpg", "png")) else parts[0]
        cams[name] = float(parts[1])
    return cams


def parse_dataset_list(text: str, source: str) -> dict[str, np.ndarray]:
    """``dataset_<split>.txt`` -> {image path: (7,) [X Y Z W P Q R]} (centre, w2c quaternion w first)."""
    out = {}
    for lineno, line in enumerate(text.splitlines()[HEADER_LINES:], HEADER_LINES + 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 8:
            raise SetupError(f"{source}:{lineno}: expected 'image X Y Z W P Q R', got {len(parts)} fields")
        try:
            out[parts[0]] = np.array(parts[1:], dtype=np.float64)
        except ValueError:
            raise SetupError(f"{source}:{lineno}: non-numeric pose") from None
    return out


def camera_to_world(centre_quat: np.ndarray) -> np.ndarray | None:
    """[X Y Z W P Q R] -> 4x4 camera-to-world, or None for an outlier (|t| > 10000 with t = −R·c)."""
    c, q = centre_quat[:3], centre_quat[3:]
    R = frames.colmap_to_w2c(q, np.zeros(3))[:, :3]  # world -> camera
    t = -R @ c
    if np.abs(t).max() > MAX_TRANSLATION:
        return None
    w2c = np.eye(4)
    w2c[:3, :3], w2c[:3, 3] = R, t
    return np.linalg.inv(w2c)


def resized_shape(h: int, w: int) -> tuple[int, int]:
    """(h, w) with the shorter side 480, aspect kept (ceil), as the original."""
    aspect = h / w
    if aspect > 1:  # portrait
        return int(math.ceil(TARGET_SHORT_SIDE * aspect)), TARGET_SHORT_SIDE
    return TARGET_SHORT_SIDE, int(math.ceil(TARGET_SHORT_SIDE / aspect))


# ----------------------------------------------------------------------------------------------
# conversion
# ----------------------------------------------------------------------------------------------
def _scene_prefix(zf: zipfile.ZipFile, scene: str) -> str:
    nvms = [n for n in zf.namelist() if n.endswith("reconstruction.nvm")]
    if not nvms:
        raise SetupError(f"{zf.filename}: no reconstruction.nvm in the archive")
    nvms.sort(key=lambda n: (scene not in n, len(n)))
    return nvms[0][: -len("reconstruction.nvm")]


def _read(zf: zipfile.ZipFile, name: str) -> bytes:
    try:
        return zf.read(name)
    except KeyError:
        raise SetupError(f"{zf.filename}: {name} not found in the archive") from None


def convert_scene(zip_path: Path, out_scene: Path, scene: str, threads: int = 4) -> dict[str, int]:
    """Convert one Cambridge scene zip into ``out_scene``. -> {split: images written}."""
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as e:
        raise SetupError(f"{zip_path}: cannot open zip ({e})") from None
    counts = {}
    with zf:
        prefix = _scene_prefix(zf, scene)
        cams = parse_nvm_cameras(_read(zf, prefix + "reconstruction.nvm").decode("utf-8", "replace"),
                                 f"{zip_path}:{prefix}reconstruction.nvm")
        for split in ("train", "test"):
            listing = parse_dataset_list(_read(zf, prefix + f"dataset_{split}.txt").decode(),
                                         f"{zip_path}:{prefix}dataset_{split}.txt")
            jobs, skipped_nvm, skipped_outlier = [], 0, 0
            for name, cq in listing.items():
                if name not in cams:
                    skipped_nvm += 1
                    continue
                c2w = camera_to_world(cq)
                if c2w is None:
                    skipped_outlier += 1
                    continue
                jobs.append((name, c2w, cams[name]))
            dirs = {k: out_scene / split / k for k in ("rgb", "poses", "calibration")}
            for d in dirs.values():
                d.mkdir(parents=True, exist_ok=True)

            def work(job):
                name, c2w, focal = job
                data = _read(zf, prefix + name)
                try:
                    img = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
                except Exception as e:
                    raise SetupError(f"{zip_path}:{prefix}{name}: cannot read image ({e})") from None
                h, w = resized_shape(*img.shape[:2])
                small = cv2.resize(img, (w, h))  # OpenCV default (bilinear), as the original
                flat = name.replace("/", "_")
                stem = flat.rsplit(".", 1)[0]
                Image.fromarray(small).save(dirs["rgb"] / (stem + ".png"))
                (dirs["calibration"] / (stem + ".txt")).write_text(str(focal * w / img.shape[1]))
                (dirs["poses"] / (stem + ".txt")).write_text(
                    "".join(" ".join(repr(float(v)) for v in row) + "\n" for row in c2w))

            with ThreadPoolExecutor(threads) as pool:
                for k, _ in enumerate(pool.map(work, jobs), 1):
                    if k % 100 == 0 or k == len(jobs):
                        print(f"\r  {split}: {k}/{len(jobs)} images", end="", flush=True)
            print(f"\n  {split}: wrote {len(jobs)} images; skipped {skipped_nvm} not in reconstruction.nvm, "
                  f"{skipped_outlier} with |t| > {MAX_TRANSLATION:g}")
            counts[split] = len(jobs)
    return counts


def copy_semantic(semantic_zip: Path, out_root: Path, scenes) -> None:
    """Copy ``<Scene>_semantic_{train,test}/*`` from the semantic zip to ``<Scene>/{train,test}/semantic/``."""
    try:
        zf = zipfile.ZipFile(semantic_zip)
    except (zipfile.BadZipFile, OSError) as e:
        raise SetupError(f"{semantic_zip}: cannot open zip ({e})") from None
    with zf:
        names = [n for n in zf.namelist() if not n.endswith("/")]
        for scene in scenes:
            for split in ("train", "test"):
                key = f"{scene}_semantic_{split}/"
                members = [n for n in names if key in n]
                if not members:
                    print(f"warning: {semantic_zip} has no {key} folder", file=sys.stderr)
                    continue
                dst = out_root / scene / split / "semantic"
                dst.mkdir(parents=True, exist_ok=True)
                for n in members:
                    rel = n.split(key, 1)[1]
                    if not rel or ".." in Path(rel).parts:
                        continue
                    (dst / rel).parent.mkdir(parents=True, exist_ok=True)
                    (dst / rel).write_bytes(zf.read(n))
                print(f"  {scene}/{split}/semantic: {len(members)} masks")


def copy_meta(meta: Path, out_scene: Path, scene: str) -> int:
    src = meta / "Cambridge_world_setup" / scene
    n = 0
    for name in ("world_setup.json", "pose_avg_stats.txt"):
        if (src / name).is_file():
            shutil.copy2(src / name, out_scene / name)
            n += 1
    if n == 0:
        print(f"warning: no meta files for {scene} under {src}", file=sys.stderr)
    return n


def download(url: str, path: Path) -> None:
    print(f"downloading {url}")
    tmp = path.with_suffix(path.suffix + ".part")
    try:
        with urllib.request.urlopen(url) as r, open(tmp, "wb") as f:
            shutil.copyfileobj(r, f, 1 << 22)
        tmp.replace(path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise SetupError(f"{url}: download failed ({e})") from None


@cli_main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--download", action="store_true", help="download the scene zips (and the semantic masks)")
    src.add_argument("--zips", type=Path, help="folder holding already downloaded <Scene>.zip files")
    p.add_argument("--semantic_zip", type=Path, help="Cambridge_semantic.zip (masks for --semantic training)")
    p.add_argument("--meta", type=Path, help="original-style data/ folder with Cambridge_world_setup/<Scene>/")
    p.add_argument("--scenes", nargs="+", default=list(DEFAULT_SCENES), choices=sorted(URLS), help="scenes to set up")
    p.add_argument("--out", type=Path, default=REPO / "data", help="output data folder (scenes go to OUT/Cambridge/)")
    p.add_argument("--threads", type=int, default=4, help="image conversion threads")
    a = p.parse_args(argv)
    for opt in ("zips", "meta", "semantic_zip"):
        v = getattr(a, opt)
        if v is not None and not v.exists():
            raise SetupError(f"--{opt} {v}: not found")
    out_root = a.out / "Cambridge"
    out_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=a.out, prefix=".cambridge_download_") as tmp:
        for scene in a.scenes:
            print(f"=== {scene}")
            if a.zips is not None:
                zip_path = a.zips / f"{scene}.zip"
                if not zip_path.is_file():
                    raise SetupError(f"{zip_path}: zip not found (expected <Scene>.zip in --zips)")
            else:
                zip_path = Path(tmp) / f"{scene}.zip"
                download(URLS[scene], zip_path)
            out_scene = out_root / scene
            convert_scene(zip_path, out_scene, scene, threads=max(1, a.threads))
            if a.meta is not None:
                copy_meta(a.meta, out_scene, scene)
            if a.download:
                zip_path.unlink()
        semantic_zip = a.semantic_zip
        if semantic_zip is None and a.download:
            semantic_zip = Path(tmp) / "Cambridge_semantic.zip"
            download(SEMANTIC_URL, semantic_zip)
        if semantic_zip is not None:
            copy_semantic(semantic_zip, out_root, a.scenes)
    print(f"done: datadir for configs = {out_root}/<Scene>")
    return 0


if __name__ == "__main__":
    sys.exit(main())
