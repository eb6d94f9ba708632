"""Paired refinement timing: ``python -m bench.refine_pair [--demo_dir DIR] [--env_b NEFES_CPU_KERNEL=0] [--args_b "..."]``.

On a shared machine the time per query drifts by tens of percent from one minute to the next, so
two separate runs cannot tell a 10 % change. Here two worker processes load the same finished demo
(its refinement command from ``demo_summary.json``) under two environments (``--env_a``, default
unchanged; ``--env_b``, default ``NEFES_CPU_KERNEL=0``: the pure-PyTorch hash-grid lookup), each with
its own extra refinement options appended to the demo's command (``--args_a``, ``--args_b``, e.g.
``--args_b "--lm_polish_N_importance 16"``; with ``--args_b`` given, ``--env_b`` defaults to unchanged), and refine
the same queries, taking turns query by query (alternating who goes first). Prints the mean seconds
per query of each and the median of the paired ratios b / a; writes ``logs/bench/refine_pair.txt``.
"""
from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def worker(refine_args: list) -> None:
    """Load the demo's models, then refine the query indices read from stdin, one time per line."""
    sys.path.insert(0, str(REPO))
    import test_refinement
    from config.options import get_device, parse_args
    from dataset_loaders import load_scene
    from dm.direct_pose_model import load_APR_and_FeatureNet
    protocol, sys.stdout = sys.stdout, sys.stderr      # stdout carries only READY and the timings
    args = parse_args(refine_args)
    device = get_device(args.device)
    scene = load_scene(args)
    apr, featnet = load_APR_and_FeatureNet(args, device)
    refine = test_refinement.build_refiner(args, scene, apr, featnet, device,
                                           test_refinement.predict_all(apr, scene.test, device))
    refine([0])                                         # warm-up: first-call allocations, kernel loading
    print(f"READY {len(scene.test)}", file=protocol, flush=True)
    for line in sys.stdin:
        t0 = time.perf_counter()
        refine([int(line)])
        print(f"{time.perf_counter() - t0:.4f}", file=protocol, flush=True)


def _env(spec: str) -> dict:
    env = dict(os.environ)
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition("=")
        env[key.strip()] = value.strip()
    return env


def _label(env: str, extra: str) -> str:
    return " ".join(filter(None, (env, extra))) or "unchanged"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--demo_dir", type=Path, default=REPO / "logs" / "bench" / "demo_cpu",
                   help="output folder of a finished demo (bench.demo writes logs/bench/demo_cpu)")
    p.add_argument("--env_a", default="", help="KEY=VALUE[,KEY=VALUE] for worker a")
    p.add_argument("--env_b", default=None, help="KEY=VALUE[,KEY=VALUE] for worker b (default NEFES_CPU_KERNEL=0, "
                   "or unchanged when --args_b is given)")
    p.add_argument("--args_a", default="", help="refinement options appended to the demo's command for worker a")
    p.add_argument("--args_b", default="", help="the same for worker b")
    p.add_argument("--extra", default="", help=argparse.SUPPRESS)
    p.add_argument("--queries", type=int, default=0, help="first N test queries (0: all)")
    p.add_argument("--out", type=Path, default=REPO / "logs" / "bench")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a, rest = p.parse_known_args(argv)
    sys.path.insert(0, str(REPO))
    from demo import refine_args as demo_refine_args
    refine_args = demo_refine_args(a.demo_dir)
    if a.worker:
        worker(refine_args + shlex.split(a.extra))
        return 0
    if a.env_b is None:
        a.env_b = "" if a.args_b else "NEFES_CPU_KERNEL=0"
    procs = [subprocess.Popen([sys.executable, "-m", "bench.refine_pair", "--worker", "--demo_dir", str(a.demo_dir),
                               f"--extra={extra}"],
                              cwd=REPO, env=_env(spec), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for spec, extra in ((a.env_a, a.args_a), (a.env_b, a.args_b))]
    try:
        ready = [p.stdout.readline().split() for p in procs]
        if any(not r or r[0] != "READY" for r in ready):
            raise SystemExit("error: a worker failed to start (see its output above)")
        n = int(ready[0][1]) if a.queries <= 0 else min(a.queries, int(ready[0][1]))
        times: list[list[float]] = [[], []]
        for i in range(n):
            for w in ((0, 1) if i % 2 == 0 else (1, 0)):
                procs[w].stdin.write(f"{i}\n")
                procs[w].stdin.flush()
                times[w].append(float(procs[w].stdout.readline()))
    finally:
        for proc in procs:
            if proc.stdin:
                proc.stdin.close()
            proc.wait()
    ratios = [b / t for t, b in zip(*times)]
    text = (f"paired refinement timing on {a.demo_dir} ({n} queries, turns alternate)\n"
            f"a [{_label(a.env_a, a.args_a)}]: {statistics.mean(times[0]):.3f} s per query\n"
            f"b [{_label(a.env_b, a.args_b)}]: {statistics.mean(times[1]):.3f} s per query\n"
            f"b / a: median {statistics.median(ratios):.3f}, mean {statistics.mean(ratios):.3f}")
    print(text)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "refine_pair.txt").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
