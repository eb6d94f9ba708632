"""How well a trained NeFeS field renders a scene's views: ``python -m bench.field_quality [--demo_dir DIR | --config CFG] [--ckpt PATH]``.

For the test views (all of them) and every ``--train_every``-th training view, at their true poses and at
the refinement's render size (the demo's refinement command from ``demo_summary.json``, or a refinement
config such as ``config/7Scenes/dfnet/config_chess_DFM.txt``, whose ``ft_path`` is the field):

* ``psnr``: the colour against the image (dB), what the refinement's objectives compare;
* ``depth``: the median relative error ``|d - d_true| / d_true`` of the rendered depth, and the fraction of
  pixels within 10 %. True depth: the depth maps of a 7-Scenes layout (``*.depth.png``, millimetres), or,
  for a scene rendered by ``data.synthetic`` (``synthetic_info.json``), the generator's own scene
  re-cast at the pose files; none for real Cambridge data. (Real 7-Scenes depth maps come from the
  Kinect's depth camera, not registered to the colour images: there the error is approximate.)

A field that fits its training views but renders the test views with the wrong depth has learnt the
views, not the scene: no optimiser makes its objective sharp at the test poses (docs/convergence.md,
eleventh pass). ``--ckpt`` evaluates another checkpoint of the same scene (e.g. a stage-1 field trained
with other settings). Output: stdout and ``<out>/field_quality.txt``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from core.errors import cli_main  # noqa: E402

WITHIN = 0.10   # "pixels within 10 %" of the true depth


def _synthetic_scene(datadir: Path):
    """(scene, raw focal, raw size) of a scene rendered by data.synthetic, else None."""
    info_file = datadir / "synthetic_info.json"
    if not info_file.is_file():
        return None
    from data.synthetic.generate import build_scene
    info = json.loads(info_file.read_text())
    focal = float(info["intrinsics"]["focal_px"])
    size = (int(info["image_size"]["height"]), int(info["image_size"]["width"]))
    return build_scene(info["kind"], int(info["seed"]), focal), focal, size


def _pose_file(image_path: Path) -> Path | None:
    """The generator's world-frame camera-to-world of an image: ``frame-N.pose.txt`` next to a 7-Scenes
    layout image, ``poses/<stem>.txt`` beside a Cambridge layout ``rgb/`` folder."""
    for f in (image_path.with_name(image_path.name.replace(".color.png", ".pose.txt")),
              image_path.parent.parent / "poses" / (image_path.stem + ".txt")):
        if f != image_path and f.is_file():
            return f
    return None


def cast_depth(synthetic, c2w: np.ndarray, h: int, w: int) -> np.ndarray:
    """(h, w) z-depth in metres (NaN: no hit) of the generator's scene seen from ``c2w`` at ``h x w``."""
    from data.synthetic.raycast import Intrinsics
    scene, focal, (_, W) = synthetic
    frame = scene.render(c2w, Intrinsics(w, h, focal * w / W), supersample=False)
    return np.where(np.isfinite(frame.depth), frame.depth, np.nan).astype(np.float64)


def true_depth(image_path: Path, synthetic, h: int, w: int) -> np.ndarray | None:
    """(h, w) true z-depth in metres (NaN: none) at the render size, or None where the scene has none."""
    image_path = Path(image_path)
    depth_png = image_path.with_name(image_path.name.replace(".color.png", ".depth.png"))
    if depth_png != image_path and depth_png.is_file():
        from PIL import Image
        d = np.asarray(Image.open(depth_png)).astype(np.float64)
        d[(d == 0) | (d >= 65535)] = np.nan
        H, W = d.shape                                   # nearest sample at each render pixel's centre
        rows = ((np.arange(h) + 0.5) * H / h).astype(int)
        cols = ((np.arange(w) + 0.5) * W / w).astype(int)
        return d[np.ix_(rows, cols)] / 1000.0
    pose_file = _pose_file(image_path) if synthetic is not None else None
    return None if pose_file is None else cast_depth(synthetic, np.loadtxt(pose_file), h, w)


def evaluate(refine_args: list, ckpt: str | None, train_every: int) -> str:
    import torch.nn.functional as F
    from config.options import get_device, parse_args
    from dataset_loaders import load_scene
    from dm.refine_apr import RenderCamera
    from models.losses import psnr
    from models.nefes import load_nefes
    args = parse_args(refine_args)
    dev = get_device(args.device)
    scene = load_scene(args)
    nefes, _ = load_nefes(ckpt or args.ft_path, dev, args)
    cam = RenderCamera.for_scene(args, scene)
    synthetic = _synthetic_scene(Path(args.datadir))
    metres_per_unit = 1.0 / scene.world_setup.scale
    lines = [f"field quality: {scene.name}, {Path(ckpt or args.ft_path).name}, render {cam.h}x{cam.w}, "
             f"samples {cam.N_samples}+{cam.N_importance}, true poses"]
    lines.append(f"  {'split':<6} {'views':>5} {'psnr (dB) median':>17} {'depth rel. error median':>24} {'within 10 %':>12}")
    for split, step in (("test", 1), ("train", train_every)):
        data = getattr(scene, split)
        psnrs, errs, within = [], [], []
        for i in range(0, len(data), step):
            item = data[i]
            with torch.no_grad():
                out = cam.render(nefes, torch.as_tensor(data.poses[i], dtype=torch.float32, device=dev)[None],
                                 item["hist"][None].to(dev), features=False)
            ref = F.interpolate(item["img"][None].to(dev), size=(cam.h, cam.w), mode="area")
            psnrs.append(float(psnr(out["rgb"].clamp(0, 1), ref)))
            d_true = true_depth(data.image_paths[i], synthetic, cam.h, cam.w)
            if d_true is not None:
                d = out["depth"][0].double().cpu().numpy() * metres_per_unit
                ok = np.isfinite(d_true) & (d_true > 0)
                rel = np.abs(d[ok] - d_true[ok]) / d_true[ok]
                if rel.size:
                    errs.append(float(np.median(rel)))
                    within.append(float(np.mean(rel < WITHIN)))
        depth = (f"{np.median(errs):24.3f} {100 * np.median(within):11.0f}%" if errs else f"{'n/a':>24} {'n/a':>12}")
        lines.append(f"  {split:<6} {len(psnrs):5d} {np.median(psnrs):17.2f} {depth}")
    return "\n".join(lines)


@cli_main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--demo_dir", type=Path, default=REPO / "logs" / "demo",
                   help="output folder of a finished demo (a benchmark scene's: logs/bench/scenes/<name>/demo)")
    p.add_argument("--config", default=None, help="a refinement config instead of a demo (its ft_path, datadir, render settings)")
    p.add_argument("--ckpt", default=None, help="evaluate this NeFeS checkpoint instead of the demo's final field")
    p.add_argument("--train_every", type=int, default=10, help="every N-th training view")
    p.add_argument("--args", default="", help="refinement options appended to the demo's command (e.g. --device cpu)")
    p.add_argument("--out", type=Path, default=REPO / "logs" / "bench")
    a = p.parse_args(argv)
    import shlex
    if a.config is not None:
        if not Path(a.config).is_file():
            raise SystemExit(f"error: config {a.config} not found")
        refine_args = ["--config", a.config] + shlex.split(a.args)
    else:
        from demo import refine_args as demo_refine_args
        refine_args = demo_refine_args(a.demo_dir) + shlex.split(a.args)
    if a.ckpt is not None and not Path(a.ckpt).is_file():
        raise SystemExit(f"error: checkpoint {a.ckpt} not found")
    text = evaluate(refine_args, a.ckpt, max(1, a.train_every))
    print(text)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "field_quality.txt").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
