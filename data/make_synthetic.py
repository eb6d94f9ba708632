#!/usr/bin/env python
"""Render a synthetic scene in the exact on-disk layout of 7-Scenes (``room``) or Cambridge (``street``).

    python data/make_synthetic.py room   --out data/synthetic_scenes/room   [--seed 0] [--width 640 --height 480]
    python data/make_synthetic.py street --out data/synthetic_scenes/street [--layout single|original] [--with_meta]

Point a config's ``datadir`` at the output folder (``--layout original`` writes the original's
``deepslam_data/7Scenes/<scene>`` + ``7Scenes/<scene>`` pair instead). The real work lives in
the package ``data/synthetic/`` (import it as ``data.synthetic``). Generated scenes are git-ignored
anywhere under ``data/``; keep them out of the package folder itself.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # run from anywhere

from config.options import setup_logging  # noqa: E402
from core.errors import cli_main  # noqa: E402
from data import synthetic  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("kind", choices=synthetic.KINDS, help="room: 7-Scenes layout; street: Cambridge layout")
    p.add_argument("--out", required=True, help="output folder (must be empty unless --overwrite)")
    p.add_argument("--seed", type=int, default=0, help="scene, trajectories and exposure seed")
    p.add_argument("--width", type=int, default=None, help="image width in pixels (room 640, street 854)")
    p.add_argument("--height", type=int, default=None, help="image height in pixels (480)")
    p.add_argument("--n_train_seq", type=int, default=3, help="training sequences")
    p.add_argument("--frames_per_seq", type=int, default=100, help="frames per training sequence")
    p.add_argument("--n_test_seq", type=int, default=2, help="test sequences")
    p.add_argument("--test_frames_per_seq", type=int, default=50, help="frames per test sequence")
    p.add_argument("--layout", choices=synthetic.LAYOUTS, default="single",
                   help="single: everything in --out; original: <out>/deepslam_data/7Scenes/<scene> + <out>/7Scenes/<scene>")
    p.add_argument("--scene", default=None, help="scene name (default: folder name, or the kind for --layout original)")
    p.add_argument("--with_meta", action="store_true", help="also write world_setup.json and pose_avg_stats*.txt")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.add_argument("--workers", type=int, default=None, help="render processes (default: min(2, CPUs))")
    p.add_argument("--verbose", action="store_true", help="debug logging")
    return p


@cli_main
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    t0 = time.time()
    info = synthetic.generate(
        args.kind, args.out, seed=args.seed, width=args.width, height=args.height,
        n_train_seq=args.n_train_seq, frames_per_seq=args.frames_per_seq, n_test_seq=args.n_test_seq,
        test_frames_per_seq=args.test_frames_per_seq, layout=args.layout, scene_name=args.scene,
        overwrite=args.overwrite, with_meta=args.with_meta, workers=args.workers)
    size = info["image_size"]
    print(f"{args.kind} '{info['scene_name']}': {info['frames']['train']} train + {info['frames']['test']} test frames, "
          f"{size['width']}x{size['height']}, focal {info['intrinsics']['focal_px']:.3f} px -> "
          f"{Path(args.out) / info['data_dir']} ({time.time() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
