"""Today's demo refinement against an earlier commit's, on this machine: ``python -m bench.refine_vs_commit``.

A time target quoted from another machine cannot be checked here; the earlier code can be rerun here.
This checks out ``--commit`` (default: the last commit before issue 15's work, whose demo refined at
2.3 s per query on the VM of the time) as a git worktree under ``logs/bench/commits/``, runs that
commit's own demo there once (its models; cached, ``--rerun`` to redo; its CPU kernel built apart, in
``TORCH_EXTENSIONS_DIR``), then reruns that demo's refinement command with that code and today's demo
refinement (``--demo_dir``, as ``demo.py`` runs it: one rank per core on a CPU, ``--ranks``) in turns,
``--repeat`` rounds. Per side it prints the seconds of wall clock per query of each round, their
median, the ratio today / then and each side's refined median error. Output: stdout and
``logs/bench/refine_vs_commit.{txt,json}``.
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
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dm.refine_run import waited_per_query  # noqa: E402

#: the last commit before the work on issue 15 (its demo: run 6 of docs/benchmarks.md, 2.32 s per query)
ISSUE15_BASELINE = "bb2d061"


def checkout(commit: str, root: Path) -> Path:
    """A detached worktree of ``commit`` under ``root`` (reused when present)."""
    tree = root / commit
    if not (tree / "demo.py").is_file():
        root.mkdir(parents=True, exist_ok=True)
        p = subprocess.run(["git", "worktree", "add", "--force", "--detach", str(tree), commit], cwd=REPO,
                           capture_output=True, text=True)
        if p.returncode != 0:
            raise SystemExit(f"error: cannot check out {commit}: {p.stderr.strip()}")
    return tree


def old_env(tree: Path) -> dict:
    # the earlier commit's CPU kernel may differ from today's: build and cache it apart
    return {**os.environ, "TORCH_EXTENSIONS_DIR": str(tree.parent / f"{tree.name}_torch_extensions")}


def old_demo(tree: Path, out: Path, rerun: bool) -> list:
    """Run the earlier commit's demo into ``out`` once; -> its refinement command (argv after python)."""
    summary = out / "demo_summary.json"
    if rerun or not summary.is_file():
        shutil.rmtree(out, ignore_errors=True)
        print(f"=== the demo of {tree.name} (its own code, configs and models) -> {out}", flush=True)
        p = subprocess.run([sys.executable, "demo.py", "--out", str(out)], cwd=tree, env=old_env(tree))
        if p.returncode != 0:
            raise SystemExit(f"error: the demo of {tree.name} failed (exit {p.returncode})")
    return json.loads(summary.read_text())["refine_command"]


def timing(summary: dict) -> dict:
    """What the comparison keeps of a refinement summary: seconds waited per query, refined median errors."""
    return dict(seconds=waited_per_query(summary), t=summary["refined"]["median_t"], r=summary["refined"]["median_r"],
                ranks=summary.get("world_size", 1))


def time_old(tree: Path, command: list, scratch: Path, name: str) -> dict:
    """One run of the earlier refinement (one process, as its demo ran it; ``command`` starts with
    ``test_refinement.py``) -> seconds per query and errors."""
    from bench.refine_ranks import run_once
    return timing(run_once(command[1:], 1, scratch, name, cwd=tree, env=old_env(tree)))


def time_now(demo_dir: Path, ranks: int, scratch: Path, name: str) -> dict:
    from bench.refine_ranks import run_once
    from demo import refine_args
    return timing(run_once(refine_args(demo_dir), ranks, scratch, name))


def alternate(run_old, run_now, repeat: int) -> dict:
    """``repeat`` rounds, the two sides taking turns (the earlier code first in even rounds)."""
    runs = {"then": [], "today": []}
    for k in range(repeat):
        for side in (("then", "today") if k % 2 == 0 else ("today", "then")):
            runs[side].append((run_old if side == "then" else run_now)(k))
            print(f"  round {k + 1}, {side}: {runs[side][-1]['seconds']:.2f} s per query", flush=True)
    return runs


def table(runs: dict, commit: str, demo_dir: Path) -> tuple[str, dict]:
    med = {side: statistics.median(x["seconds"] for x in v) for side, v in runs.items()}
    rows = {side: dict(seconds=[x["seconds"] for x in v], median=med[side], refined_t=statistics.median(x["t"] for x in v),
                       refined_r=statistics.median(x["r"] for x in v)) for side, v in runs.items()}
    ranks = runs["today"][0].get("ranks", 1)
    lines = [f"demo refinement, wall clock per query on this machine: commit {commit} (its own demo, one process) against "
             f"today ({demo_dir}, {ranks} process(es))",
             "| code | s per query (rounds) | median | refined median |", "|---|---|---|---|"]
    for side, label in (("then", commit), ("today", "today")):
        r = rows[side]
        lines.append(f"| {label} | {', '.join(f'{v:.2f}' for v in r['seconds'])} | {r['median']:.2f} | "
                     f"{r['refined_t']:.4f} m / {r['refined_r']:.3f} deg |")
    lines.append(f"today / {commit}: x{med['today'] / med['then']:.2f}")
    return "\n".join(lines), {"commit": commit, "ratio": med["today"] / med["then"], **rows}


def main(argv=None) -> int:
    from bench import write_results
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--commit", default=ISSUE15_BASELINE, help="the earlier commit (default: before issue 15)")
    p.add_argument("--demo_dir", type=Path, default=REPO / "logs" / "demo", help="today's finished demo")
    p.add_argument("--ranks", type=int, default=0, help="today's refinement processes (0: as demo.py chooses)")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--rerun", action="store_true", help="rerun the earlier commit's demo even if cached")
    p.add_argument("--root", type=Path, default=REPO / "logs" / "bench" / "commits")
    p.add_argument("--out", type=Path, default=REPO / "logs" / "bench")
    a = p.parse_args(argv)
    from demo import refine_args, refine_ranks
    refine_args(a.demo_dir)                                 # a clear error when today's demo has not run
    ranks = refine_ranks("cpu", a.ranks, json.loads((a.demo_dir / "demo_summary.json").read_text())["n"])
    tree = checkout(a.commit, a.root)
    command = old_demo(tree, a.root / f"{a.commit}_demo", a.rerun)
    scratch = Path(tempfile.mkdtemp(prefix="refine_vs_commit_"))
    try:
        runs = alternate(lambda k: time_old(tree, command, scratch, f"then_{k}"),
                         lambda k: time_now(a.demo_dir, ranks, scratch, f"today_{k}"), a.repeat)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    text, data = table(runs, a.commit, a.demo_dir)
    print(text)
    write_results(a.out, "refine_vs_commit", text, data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
