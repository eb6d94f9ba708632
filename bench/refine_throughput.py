"""Refinement throughput against ``refine_batch``: ``python -m bench.refine_throughput [--quick]``.

On a scene trained by the demo pipeline (a :mod:`bench.scenes` scene, trained and cached if absent),
the same test queries are refined with ``refine_batch`` 1, 2, 4, 8, 16 (``--batches``), and for each
it prints queries per second, the speed-up over one at a time and the largest pose difference to the
one-at-a-time run (rotation in degrees, translation in metres). Two sizes (``--sizes``):

* ``demo``: the scene's own demo refinement command (its render size and samples);
* ``paper``: the paper's render size and samples: working images 240 px high (``df 2``), rendered at
  a quarter of that (``tinyscale 4``: 60x80 for the 640x480 room, 60x106 for an 854x480 street) with
  64 + 64 samples per ray, with the scene's trained NeFeS and DFNet.

Every device in ``--devices`` that is present is measured (``cuda`` is skipped with a line saying so
when there is none). Results: ``logs/bench/refine_throughput.{txt,json}``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import scenes as bench_scenes  # noqa: E402

SIZES = {"demo": [], "paper": ["--df", "2", "--tinyscale", "4", "--N_samples", "64", "--N_importance", "64"]}


def measure(command: list, batch: int, queries: int, device: str) -> tuple[np.ndarray, float, list]:
    """Refine the first ``queries`` test queries ``batch`` at a time; -> (poses (n, 3, 4), seconds,
    per query whether the verification step reverted it to the APR pose)."""
    from config.options import get_device, parse_args
    from dataset_loaders import load_scene
    from dm.direct_pose_model import load_APR_and_FeatureNet
    from test_refinement import build_refiner, predict_all
    args = parse_args(command + ["--refine_batch", str(batch)])
    dev = get_device(device)
    scene = load_scene(args)
    apr, featnet = load_APR_and_FeatureNet(args, dev)
    idx = list(range(min(queries, len(scene.test))))
    starts = np.zeros((len(scene.test), 3, 4))
    starts[idx] = predict_all(apr, scene.test, dev, idx)
    refine = build_refiner(args, scene, apr, featnet, dev, starts)
    refine(idx[:1])                                 # warm-up (allocations, kernels), not timed
    if dev.type == "cuda":
        torch.cuda.synchronize()
    out, reverted, t0 = [], [], time.perf_counter()
    for k in range(0, len(idx), batch):
        for p, info in refine(idx[k:k + batch]):
            out.append(p.double().cpu().numpy())
            reverted.append(bool(info.get("reverted", False)))
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return np.stack(out), time.perf_counter() - t0, reverted


def compare(poses: np.ndarray, reverted: list, ref: np.ndarray, ref_reverted: list) -> dict:
    """Pose differences to the reference run, per query, and over the queries whose verification
    decision (keep the refined pose or revert to the APR's) is the same in both runs: a decision that
    flips on a float-rounding difference moves that query by the whole refinement."""
    from dm.metrics import pose_errors
    t, r = pose_errors(poses, ref)
    same = np.array(reverted) == np.array(ref_reverted)
    return dict(max_dt_m=float(t.max()), max_dr_deg=float(r.max()), dt_m=t.tolist(), dr_deg=r.tolist(),
                flips=int((~same).sum()), max_dt_same_m=float(t[same].max()) if same.any() else 0.0,
                max_dr_same_deg=float(r[same].max()) if same.any() else 0.0)


def diff_text(c: dict) -> str:
    text = f"{c['max_dt_m']:.2e} m / {c['max_dr_deg']:.2e} deg"
    if c["flips"]:
        text += (f" ({c['flips']} verification decision(s) flipped; the others "
                 f"{c['max_dt_same_m']:.2e} m / {c['max_dr_same_deg']:.2e} deg)")
    return text


def floor_row(command: list, queries: int, device: str, ref: tuple, rows: list, size: str) -> str:
    """The one-at-a-time run again with another number of CPU threads: the same algorithm, only the
    order of float reductions changes, so its pose difference is the float noise floor that any
    batched difference is to be read against."""
    if device != "cpu":
        return f"{device:5s} {size:6s} noise floor: not measured (thread count only changes CPU reductions)"
    threads = torch.get_num_threads()
    other = 1 if threads > 1 else 2
    torch.set_num_threads(other)
    try:
        poses, sec, reverted = measure(command, 1, queries, device)
    finally:
        torch.set_num_threads(threads)
    c = compare(poses, reverted, *ref)
    rows.append(dict(device=device, size=size, refine_batch=1, threads=other, queries=len(poses), seconds=sec,
                     queries_per_s=len(poses) / sec, noise_floor=True, **c))
    return (f"{device:5s} {size:6s} refine_batch   1, {other} thread(s): max pose diff to the {threads}-thread run "
            f"(float noise floor): {diff_text(c)}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scene", default="room21", help=f"a benchmark scene ({', '.join(bench_scenes.ALL)})")
    p.add_argument("--batches", default="1,2,4,8,16")
    p.add_argument("--sizes", default="demo,paper", help=f"comma-separated subset of {', '.join(SIZES)}")
    p.add_argument("--queries", type=int, default=16, help="queries refined per setting")
    p.add_argument("--pose_only", type=int, default=2, help="refinement mode (2: APR + NeFeS, 3, 4)")
    p.add_argument("--devices", default="cpu,cuda")
    p.add_argument("--extra", default="", help="more overrides of the refinement command, e.g. '--no_verification_step'")
    p.add_argument("--no_noise_floor", dest="noise_floor", action="store_false",
                   help="skip the one-at-a-time rerun with another CPU thread count")
    p.add_argument("--quick", action="store_true", help="demo size, batches 1 and 4, 8 queries")
    p.add_argument("--out", type=Path, default=REPO / "logs" / "bench")
    a = p.parse_args(argv)
    if a.quick:
        a.sizes, a.batches, a.queries = "demo", "1,4", 8
    summary = bench_scenes.ensure_trained(bench_scenes.ALL[a.scene])
    base = [c for c in summary["refine_command"] if c != "test_refinement.py"] + ["--pose_only", str(a.pose_only)] + a.extra.split()
    batches = [int(b) for b in a.batches.split(",")]
    if batches[0] != 1:
        batches = [1] + batches   # the one-at-a-time run is the reference
    if a.noise_floor:
        batches.insert(1, "floor")
    rows, lines = [], []
    for device in a.devices.split(","):
        if device == "cuda" and not torch.cuda.is_available():
            lines.append("cuda: not measured (no GPU on this machine)")
            print(lines[-1], flush=True)
            continue
        for size in a.sizes.split(","):
            ref, ref_qps = None, None
            for b in batches:
                if b == "floor":
                    lines.append(floor_row(base + SIZES[size], a.queries, device, ref, rows, size))
                    print(lines[-1], flush=True)
                    continue
                poses, sec, reverted = measure(base + SIZES[size], b, a.queries, device)
                qps = len(poses) / sec
                if ref is None:
                    ref, ref_qps = (poses, reverted), qps
                c = compare(poses, reverted, *ref)
                row = dict(device=device, size=size, refine_batch=b, queries=len(poses), seconds=sec,
                           queries_per_s=qps, speedup=qps / ref_qps, reverted=reverted, **c)
                rows.append(row)
                lines.append(f"{device:5s} {size:6s} refine_batch {b:3d}: {qps:7.3f} queries/s "
                             f"(x{row['speedup']:.2f}), {sec / len(poses):6.2f} s/query, "
                             f"max pose diff to batch 1: {diff_text(c)}")
                print(lines[-1], flush=True)
    text = "\n".join(lines) + (f"\nscene {a.scene}, pose_only {a.pose_only} {a.extra}, {a.queries} queries, "
                               f"{torch.get_num_threads()} CPU threads, torch {torch.__version__}")
    print("\n" + text)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "refine_throughput.txt").write_text(text + "\n")
    (a.out / "refine_throughput.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
