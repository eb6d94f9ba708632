"""Basin success split by coverage: ``python -m bench.basin_coverage logs/bench/<tag>.json [--bins 4,8,15]``.

Reads a :mod:`bench.basin` result file and, per method, start and scene, prints the success rate of the
queries grouped by how far each lies from the nearest training camera looking the same way
(``query_similar_view_m``, as % of the scene's camera spread; ``inf`` when none looks that way). It tells
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
    """[(bin label, n, success rate or None)] for one scene entry of a basin row (``per_scene[name]``)."""
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("result", type=Path, help="a bench.basin JSON file")
    p.add_argument("--bins", default="4,8,15", help="bin edges, %% of the camera spread")
    a = p.parse_args(argv)
    if not a.result.is_file():
        p.error(f"{a.result}: file not found")
    edges = sorted(float(x) for x in a.bins.split(","))
    for row in json.loads(a.result.read_text()):
        for name, scene in row["per_scene"].items():
            if "query_similar_view_m" not in scene:
                p.error(f"{a.result}: written by an older bench.basin without per-query coverage; rerun it")
            cells = [f"{label}: " + ("-" if ok is None else f"{100 * ok:.0f} % of {n}") for label, n, ok in split(scene, edges)]
            print(f"{row['method']:10s} {row['start']:8s} {name:10s} " + " | ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
