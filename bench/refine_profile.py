"""Where a query's refinement time goes: ``python -m bench.refine_profile [--demo_dir DIR] [--ops N]``.

On a finished demo (its refinement command from ``demo_summary.json``, plus ``--args``), times the
pieces of the demo's refinement one at a time, each the median of ``--repeat`` runs on the first
``--queries`` test queries:

* ``apr``: one forward and backward pass of a fresh APR copy (the paper mode's pose prediction);
* ``render``: one render of the fused feature map at the paper mode's size and samples, forward and
  backward of the paper's loss down to the pose (what each of the ``opt_iter`` steps also pays);
* ``render (no grad)``: the same render without autograd;
* ``polish render``: one colour-only render of two poses at the polish's samples, no autograd (the
  photometric polish pays about ``lm_polish + 1`` of them per query);

then the whole refinement of each of those queries, and the estimate ``opt_iter x (apr + render) +
(lm_polish + 1) x polish render`` next to it (the rest: the optimiser, the loss's bookkeeping, the
polish's Jacobians). ``--ops N`` adds torch.profiler's N most expensive operators over one query.
Output: stdout and ``logs/bench/refine_profile.txt``.
"""
from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _median_ms(fn, repeat: int) -> float:
    fn()                                               # warm-up: allocations, kernel selection
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def profile(refine_args: list, queries: int, repeat: int, ops: int) -> str:
    import test_refinement
    from config.options import get_device, parse_args
    from dataset_loaders import load_scene
    from dm.direct_pose_model import load_APR_and_FeatureNet
    from dm.refine_apr import APRCopies, predict
    from dm.refine_loss import refinement_loss
    args = parse_args(refine_args)
    if args.pose_only != 2:
        raise SystemExit(f"error: the profile follows the paper mode (pose_only=2), the command has pose_only={args.pose_only}")
    dev = get_device(args.device)
    scene = load_scene(args)
    apr, featnet = load_APR_and_FeatureNet(args, dev)
    starts = test_refinement.predict_all(apr, scene.test, dev)
    refine = test_refinement.build_refiner(args, scene, apr, featnet, dev, starts)
    nefes, cam, polish_cam = refine.nefes, refine.cam, refine.polish_cam
    copies = APRCopies(apr)
    n = min(queries, len(scene.test))
    rows: dict[str, list[float]] = {k: [] for k in ("apr", "render", "render (no grad)", "polish render", "whole query")}
    for i in range(n):
        item = scene.test[i]
        img, hist = item["img"][None].to(dev), item["hist"][None].to(dev)
        with torch.no_grad():
            target = featnet.extract_features(img, None)
        pose = torch.as_tensor(starts[i], dtype=torch.float32, device=dev)
        model, = copies.take(1, channels_last=dev.type == "cpu")
        x = img.contiguous(memory_format=torch.channels_last) if dev.type == "cpu" else img
        loss_fn = refinement_loss(target, (cam.h, cam.w), args.refine_crop, args.per_pixel)

        def apr_step():
            predict(model, x, args.svd_reg).sum().backward()

        def render_step():
            p = pose.clone().requires_grad_(True)
            loss_fn(cam.render(nefes, p[None], hist)["fused"]).sum().backward()

        def render_no_grad():
            with torch.no_grad():
                cam.render(nefes, pose[None], hist)

        def polish_render():
            with torch.no_grad():
                polish_cam.render(nefes, torch.stack([pose, pose]), torch.cat([hist, hist]), features=False)

        rows["apr"].append(_median_ms(apr_step, repeat))
        rows["render"].append(_median_ms(render_step, repeat))
        rows["render (no grad)"].append(_median_ms(render_no_grad, repeat))
        rows["polish render"].append(_median_ms(polish_render, repeat))
        t0 = time.perf_counter()
        refine([i])
        rows["whole query"].append(1e3 * (time.perf_counter() - t0))
    med = {k: statistics.median(v) for k, v in rows.items()}
    estimate = args.opt_iter * (med["apr"] + med["render"]) + (args.lm_polish + 1) * med["polish render"] * (args.lm_polish > 0)
    lines = [f"refinement profile: {scene.name}, {n} queries, render {cam.h}x{cam.w}, samples {cam.N_samples}+{cam.N_importance} "
             f"(polish +{polish_cam.N_importance}), opt_iter {args.opt_iter}, lm_polish {args.lm_polish}, "
             f"{torch.get_num_threads()} threads, {dev}"]
    lines += [f"  {k:<18} {v:9.1f} ms" for k, v in med.items()]
    lines.append(f"  {'estimate':<18} {estimate:9.1f} ms  (opt_iter x (apr + render) + (lm_polish + 1) x polish render; "
                 f"{100 * estimate / med['whole query']:.0f} % of the whole query)")
    if ops > 0:
        from torch.profiler import ProfilerActivity
        with torch.profiler.profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            refine([0])
        lines.append(prof.key_averages(group_by_input_shape=True).table(
            sort_by="self_cpu_time_total", row_limit=ops, max_name_column_width=32, max_shapes_column_width=60))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--demo_dir", type=Path, default=REPO / "logs" / "demo", help="output folder of a finished demo")
    p.add_argument("--args", default="", help="refinement options appended to the demo's command")
    p.add_argument("--queries", type=int, default=3, help="first N test queries")
    p.add_argument("--repeat", type=int, default=10, help="timed runs per piece and query (the median is kept)")
    p.add_argument("--ops", type=int, default=0, help="also print the N most expensive operators of one query")
    p.add_argument("--out", type=Path, default=REPO / "logs" / "bench")
    a = p.parse_args(argv)
    from demo import refine_args as demo_refine_args
    refine_args = demo_refine_args(a.demo_dir) + shlex.split(a.args)
    text = profile(refine_args, a.queries, a.repeat, a.ops)
    print(text)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "refine_profile.txt").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
