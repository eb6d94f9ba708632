"""Refinement success split by coverage: ``python -m bench.basin_coverage RESULT [--bins 4,8,15]``.

RESULT is either a :mod:`bench.basin` JSON file (coverage at the true poses; per method, start and
scene) or a refinement folder with a ``summary.json`` (``test_refinement.py`` or the demo: coverage at
the *refined* poses, which needs no ground truth; success of the refined against the APR poses). Queries
are grouped by how far each lies from the nearest training camera looking the same way (% of the
training cameras' spread; ``inf`` when none looks that way); success as in :mod:`bench.basin`. It tells
whether a scene's failures are the views its training images do not cover (docs/convergence.md).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.basin import summarize  # noqa: E402


def split(scene: dict, edges: list[float]) -> list[tuple[str, int, float | None]]:
    """[(bin label, n, success rate or None)] for one scene entry of a basin row (``per_scene[name]``:
    ``errors``, ``query_similar_view_m``, ``spread_m``)."""
    e = {k: np.asarray(v, dtype=np.float64) for k, v in scene["errors"].items()}
    cov = np.array([np.inf if v is None else v for v in scene["query_similar_view_m"]]) / scene["spread_m"] * 100
    spread = np.full(len(cov), scene["spread_m"])
    out = []
    for lo, hi in zip([-np.inf, *edges], [*edges, np.inf]):
        m = (cov > lo) & (cov <= hi)
        label = f"<= {hi:g} %" if lo == -np.inf else (f"> {lo:g} %" if hi == np.inf else f"{lo:g}-{hi:g} %")
        ok = summarize(e["t0"][m], e["r0"][m], e["t1"][m], e["r1"][m], spread[m])["success"] if m.any() else None
        out.append((label, int(m.sum()), ok))
    return out


def format_split(scene: dict, edges: list[float]) -> str:
    return " | ".join(f"{label}: " + ("-" if ok is None else f"{100 * ok:.0f} % of {n}")
                      for label, n, ok in split(scene, edges))


def refinement_entry(folder: Path) -> dict:
    """A refinement folder as a basin scene entry: errors of the APR (start) and refined poses against the
    ground truth, coverage at the refined poses (``summary.json``'s ``coverage``)."""
    from dm.metrics import pose_errors
    summary = json.loads((folder / "summary.json").read_text())
    if "coverage" not in summary:
        raise ValueError(f"{folder / 'summary.json'} has no per-query coverage (written before it existed); rerun")
    refined_file = folder / Path(summary["refined_file"]).name
    apr_tag = refined_file.name.split(f"_{summary['scene']}_NeFeS")[0]     # RunFiles' naming
    gt, apr, refined = (np.loadtxt(p, ndmin=2).reshape(-1, 3, 4) for p in (
        folder / f"{summary['scene']}_test_gt.txt", folder / f"{apr_tag}_{summary['scene']}_results.txt", refined_file))
    (t0, r0), (t1, r1) = pose_errors(apr, gt), pose_errors(refined, gt)
    return {"errors": {"t0": t0, "r0": r0, "t1": t1, "r1": r1}, "spread_m": summary["coverage"]["train_spread_m"],
            "query_similar_view_m": summary["coverage"]["per_query_m"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("result", type=Path, help="a bench.basin JSON file, or a refinement folder with summary.json")
    p.add_argument("--bins", default="4,8,15", help="bin edges, %% of the camera spread")
    a = p.parse_args(argv)
    try:
        edges = sorted(float(x) for x in a.bins.split(","))
    except ValueError:
        p.error(f"--bins {a.bins}: expected comma-separated numbers, e.g. 4,8,15")
    if a.result.is_dir():
        try:
            scene = refinement_entry(a.result)
        except (OSError, ValueError, KeyError) as e:
            p.error(f"{a.result}: {e}")
        print(f"{a.result.name} (refined poses, from the APR's) {format_split(scene, edges)}")
        return 0
    if not a.result.is_file():
        p.error(f"{a.result}: file not found")
    for row in json.loads(a.result.read_text()):
        for name, scene in row["per_scene"].items():
            if "query_similar_view_m" not in scene:
                p.error(f"{a.result}: written by an older bench.basin without per-query coverage; rerun it")
            print(f"{row['method']:10s} {row['start']:8s} {name:10s} {format_split(scene, edges)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
