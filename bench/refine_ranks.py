"""Refinement wall clock against the number of CPU processes: ``python -m bench.refine_ranks``.

Reruns the refinement of finished demo pipelines (``--demo_dirs``: ``demo.sh`` outputs or
:mod:`bench.scenes` scenes; their ``demo_summary.json`` holds the command) as one process and as
``torchrun --nproc_per_node R`` (``--ranks``), each rank taking its share of the cores as intra-op
threads, into a scratch folder. The rank counts take turns, ``--repeat`` rounds, so that a drift of a
shared machine's speed falls on all of them. Per scene and rank count it prints the median of:

* ``wall s/query``: the refinement's wall clock over the queries (``summary.json``'s
  ``wall_seconds_per_query``: from the shared start to the gather), what the user waits per query;
* ``own s/query``: each query's own time on its rank (``seconds_per_query``);
* ``command s``: the whole command, set-up (loading, APR predictions) included;

the speed-up of the wall clock over one process, the refined median errors, and the largest and the
median pose difference to the one-process run of the same round (different thread counts add floats in
another order; docs/refinement_runs.md measures that noise floor). Output: stdout and
``logs/bench/refine_ranks.{txt,json}``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def command(refine_args: list, ranks: int, basedir: Path, expname: str) -> list:
    """The refinement command with ``ranks`` processes (one: plain python), its outputs under ``basedir``."""
    args = list(refine_args)
    for key, value in (("--basedir", str(basedir)), ("--expname", expname)):
        if key in args:
            args[args.index(key) + 1] = value
        else:
            args += [key, value]
    launcher = [sys.executable] if ranks == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                     f"--nproc_per_node={ranks}"]
    return launcher + ["test_refinement.py"] + args


def run_once(refine_args: list, ranks: int, basedir: Path, expname: str, cwd: Path = REPO, env: dict | None = None) -> dict:
    """One refinement run -> its summary plus ``command_seconds`` and the refined poses. ``cwd``: the
    checkout whose ``test_refinement.py`` runs (:mod:`bench.refine_vs_commit` runs an earlier commit's)."""
    cmd = command(refine_args, ranks, basedir, expname)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"error: the refinement with {ranks} rank(s) failed (exit {p.returncode}):\n{p.stderr[-2000:]}")
    out = basedir / expname
    summary = json.loads((out / "summary.json").read_text())
    poses = np.loadtxt(summary["refined_file"]).reshape(-1, 3, 4)
    return {**summary, "command_seconds": seconds, "poses": poses}


def measure(demo_dir: Path, ranks: list[int], repeat: int, extra: list, scratch: Path) -> list[dict]:
    from demo import refine_args as demo_refine_args
    from dm.metrics import pose_errors
    refine_args = demo_refine_args(demo_dir) + extra
    runs: dict[int, list[dict]] = {r: [] for r in ranks}
    for k in range(repeat):
        order = ranks if k % 2 == 0 else ranks[::-1]          # take turns: no rank count always runs first
        for r in order:
            runs[r].append(run_once(refine_args, r, scratch, f"{demo_dir.parent.name}_{demo_dir.name}_r{r}_{k}"))
            print(f"  {demo_dir}: {r} rank(s), round {k + 1}: {runs[r][-1]['wall_seconds_per_query']:.2f} s per query "
                  f"(wall)", flush=True)
    rows = []
    base = statistics.median(x["wall_seconds_per_query"] for x in runs[ranks[0]])
    for r in ranks:
        diffs_t, diffs_r = [], []
        for k, x in enumerate(runs[r]):
            t, rot = pose_errors(x["poses"], runs[ranks[0]][k]["poses"])
            diffs_t += t.tolist()
            diffs_r += rot.tolist()
        wall = statistics.median(x["wall_seconds_per_query"] for x in runs[r])
        rows.append(dict(scene=str(demo_dir), ranks=r, threads_per_rank=runs[r][0]["threads_per_rank"],
                         wall_s_per_query=wall, wall_runs=[x["wall_seconds_per_query"] for x in runs[r]],
                         own_s_per_query=statistics.median(x["seconds_per_query"] for x in runs[r]),
                         command_s=statistics.median(x["command_seconds"] for x in runs[r]),
                         speedup=base / wall, n=runs[r][0]["n"],
                         refined_t=statistics.median(x["refined"]["median_t"] for x in runs[r]),
                         refined_r=statistics.median(x["refined"]["median_r"] for x in runs[r]),
                         max_diff_t=max(diffs_t), max_diff_r=max(diffs_r),
                         median_diff_t=float(np.median(diffs_t)), median_diff_r=float(np.median(diffs_r))))
    return rows


def table(rows: list[dict], ranks: list[int]) -> str:
    lines = [f"refinement wall clock against CPU processes ({os.cpu_count()} cores seen; ranks {ranks[0]} is the reference)",
             "| scene | ranks x threads | wall s/query | own s/query | command s | speed-up | refined median | "
             "pose difference to the reference, max / median |", "|---|---|---|---|---|---|---|---|"]
    for x in rows:
        lines.append(f"| {x['scene']} | {x['ranks']} x {x['threads_per_rank']} | {x['wall_s_per_query']:.2f} "
                     f"({', '.join(f'{v:.2f}' for v in x['wall_runs'])}) | {x['own_s_per_query']:.2f} | "
                     f"{x['command_s']:.0f} | x{x['speedup']:.2f} | {x['refined_t']:.4f} m / {x['refined_r']:.3f} deg | "
                     f"{x['max_diff_t']:.1e} m / {x['max_diff_r']:.1e} deg, {x['median_diff_t']:.1e} m / "
                     f"{x['median_diff_r']:.1e} deg |")
    return "\n".join(lines)


def main(argv=None) -> int:
    from bench import write_results
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--demo_dirs", default=str(REPO / "logs" / "demo"),
                   help="comma-separated output folders of finished demo pipelines")
    p.add_argument("--ranks", default="1,2", help="comma-separated process counts; the first is the reference")
    p.add_argument("--repeat", type=int, default=2, help="rounds (the rank counts take turns)")
    p.add_argument("--args", default="", help="refinement options appended to each command")
    p.add_argument("--out", type=Path, default=REPO / "logs" / "bench")
    a = p.parse_args(argv)
    import shlex
    ranks = [int(r) for r in a.ranks.split(",") if r]
    if not ranks or min(ranks) < 1 or a.repeat < 1:
        p.error("--ranks needs positive process counts and --repeat at least 1")
    dirs = [Path(d) for d in a.demo_dirs.split(",") if d]
    for d in dirs:
        if not (d / "demo_summary.json").is_file():
            p.error(f"{d}: no demo_summary.json (run demo.sh or python -m bench.scenes first)")
    scratch = Path(tempfile.mkdtemp(prefix="refine_ranks_"))
    try:
        rows = [row for d in dirs for row in measure(d, ranks, a.repeat, shlex.split(a.args), scratch)]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    text = table(rows, ranks)
    print(text)
    write_results(a.out, "refine_ranks", text, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
