"""Set up Microsoft 7-Scenes for nefes (the layout of the original NeFeS ``data/`` folder).

Result (``--out``, default ``<repo>/data``)::

    deepslam_data/7Scenes/<scene>/{TrainSplit.txt, TestSplit.txt, seq-XX/frame-NNNNNN.*}   images + dSLAM poses
    deepslam_data/7Scenes/<scene>/<scene>_{train,test}.txt    COLMAP lists (with --meta)
    7Scenes/<scene>/{world_setup.json, pose_avg_stats.txt, pose_avg_stats_colmap.txt, <scene>_{train,test}.txt}
    7Scenes_colmap_poses/<scene>/<scene>_{train,test}.txt     (with --meta)

Sources: ``--download`` (the official Microsoft URLs) or ``--zips DIR`` (already downloaded
``<scene>.zip`` files). ``--meta DIR`` is a folder laid out like the original repository's ``data/``
(``7Scenes/<scene>/...`` and ``7Scenes_colmap_poses/<scene>/...``), e.g. ``../shared/nefes-reference/data``.
Without it the loaders compute the pose normalisation themselves (and ``7Scenes_colmap`` needs the lists).

    python data/setup_7scenes.py --zips ~/Downloads/7scenes --meta ../shared/nefes-reference/data
"""
from __future__ import annotations

import argparse
import shutil
import sys
import urllib.request
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from core.errors import SetupError, cli_main  # noqa: E402  (after the path fix, so the script runs from anywhere)

SCENES = ("chess", "fire", "heads", "office", "pumpkin", "redkitchen", "stairs")
URL = "http://download.microsoft.com/download/2/8/5/28564B23-0828-408F-8631-23B1EFF1DAC8/{scene}.zip"
META_FILES = ("world_setup.json", "pose_avg_stats.txt", "pose_avg_stats_colmap.txt")


def safe_extract(zf: zipfile.ZipFile, dest: Path) -> list[str]:
    """Extract every member under ``dest``, refusing absolute paths and '..' (zip-slip). -> member names."""
    dest = dest.resolve()
    for m in zf.infolist():
        target = (dest / m.filename).resolve()
        if not target.is_relative_to(dest):
            raise SetupError(f"{zf.filename}: member {m.filename!r} would be written outside {dest}")
    zf.extractall(dest)
    return zf.namelist()


def download(url: str, path: Path) -> None:
    print(f"downloading {url}")
    tmp = path.with_suffix(path.suffix + ".part")
    try:
        with urllib.request.urlopen(url) as r, open(tmp, "wb") as f:
            total = int(r.headers.get("Content-Length") or 0)
            done = 0
            while chunk := r.read(1 << 22):
                f.write(chunk)
                done += len(chunk)
                if total:
                    print(f"\r  {done / total:6.1%} of {total / 2**20:.0f} MiB", end="", flush=True)
        print()
        tmp.replace(path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise SetupError(f"{url}: download failed ({e})") from None


def unpack_scene(zip_path: Path, images_root: Path, scene: str, keep_inner: bool = False) -> Path:
    """Unpack ``<scene>.zip`` into ``images_root`` and each inner ``seq-XX.zip`` into the scene folder."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            safe_extract(zf, images_root)
    except zipfile.BadZipFile:
        raise SetupError(f"{zip_path}: not a valid zip archive") from None
    scene_dir = images_root / scene
    if not scene_dir.is_dir():
        raise SetupError(f"{zip_path}: archive does not contain a '{scene}/' folder")
    for inner in sorted(scene_dir.glob("seq-*.zip")):
        print(f"  unpacking {inner.name}")
        try:
            with zipfile.ZipFile(inner) as zf:
                safe_extract(zf, scene_dir)
        except zipfile.BadZipFile:
            raise SetupError(f"{inner}: not a valid zip archive") from None
        if not keep_inner:
            inner.unlink()
    for split in ("TrainSplit.txt", "TestSplit.txt"):
        if not (scene_dir / split).is_file():
            raise SetupError(f"{scene_dir / split}: split file missing after unpacking {zip_path}")
    return scene_dir


def copy_meta(meta: Path, out: Path, scene: str, images_dir: Path) -> list[str]:
    """Copy world_setup / pose_avg_stats and the COLMAP lists of ``scene`` from an original-style ``data/``."""
    copied = []
    src = meta / "7Scenes" / scene
    dst = out / "7Scenes" / scene
    dst.mkdir(parents=True, exist_ok=True)
    for name in META_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
            copied.append(str(dst / name))
    lists = [meta / "7Scenes_colmap_poses" / scene / f"{scene}_{s}.txt" for s in ("train", "test")]
    for lst in lists:
        if not lst.is_file():
            continue
        for folder in (dst, images_dir, out / "7Scenes_colmap_poses" / scene):
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy2(lst, folder / lst.name)
        copied.append(lst.name)
    if not copied:
        print(f"warning: nothing found for {scene} under {meta}", file=sys.stderr)
    return copied


def setup_scene(scene: str, out: Path, zips: Path | None, do_download: bool, meta: Path | None,
                keep_zips: bool = False) -> None:
    images_root = out / "deepslam_data" / "7Scenes"
    images_root.mkdir(parents=True, exist_ok=True)
    print(f"=== {scene}")
    if zips is not None:
        zip_path = zips / f"{scene}.zip"
        if not zip_path.is_file():
            raise SetupError(f"{zip_path}: zip not found (expected <scene>.zip in --zips)")
        scene_dir = unpack_scene(zip_path, images_root, scene)
    elif do_download:
        zip_path = images_root / f"{scene}.zip"
        download(URL.format(scene=scene), zip_path)
        scene_dir = unpack_scene(zip_path, images_root, scene)
        if not keep_zips:
            zip_path.unlink()
    else:
        scene_dir = images_root / scene
        if not scene_dir.is_dir():
            raise SetupError(f"{scene_dir}: not found; give --zips DIR or --download")
    if meta is not None:
        copied = copy_meta(meta, out, scene, scene_dir)
        print(f"  copied {len(copied)} meta file(s) from {meta}")
    (out / "7Scenes" / scene).mkdir(parents=True, exist_ok=True)


@cli_main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--download", action="store_true", help="download the scene zips from Microsoft")
    src.add_argument("--zips", type=Path, help="folder holding already downloaded <scene>.zip files")
    p.add_argument("--meta", type=Path, help="original-style data/ folder with 7Scenes/ and 7Scenes_colmap_poses/")
    p.add_argument("--scenes", nargs="+", default=list(SCENES), choices=SCENES, help="scenes to set up")
    p.add_argument("--out", type=Path, default=REPO / "data", help="output data folder")
    p.add_argument("--keep_zips", action="store_true", help="keep downloaded zips")
    a = p.parse_args(argv)
    if a.meta is not None and not a.meta.is_dir():
        raise SetupError(f"--meta {a.meta}: folder not found")
    if a.zips is not None and not a.zips.is_dir():
        raise SetupError(f"--zips {a.zips}: folder not found")
    for scene in a.scenes:
        setup_scene(scene, a.out, a.zips, a.download, a.meta, a.keep_zips)
    print(f"done: datadir for configs = {a.out}/7Scenes/<scene>")
    return 0


if __name__ == "__main__":
    sys.exit(main())
