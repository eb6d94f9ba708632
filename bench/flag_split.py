"""Where the refinement works: finished demo runs split by the run's own flag, and by the field at the truth.

    python -m bench.flag_split --runs logs/bench/far/street48,logs/bench/scenes/street52/demo \
        [--basin logs/bench/fourteenth_fresh_street52.json ...]

Pools the queries of several finished refinements (folders holding ``demo_summary.json``; the demo, or
``bench.scenes``; a run is named after its folder, or the folder above one called ``demo``, as the
benchmark scenes are) and reports, per group: how many queries, the share improved in both t and r, the share
whose errors were both halved, and the median per-query ratio refined / APR (t and r).

* **The run's own flag** (no ground truth): the render PSNR at the refined pose (``lm_polish`` records
  it) against :data:`dm.refine_run.LOW_RENDER_PSNR`: the queries a user would trust, and the flagged ones.
* **The field at the truth** (with ``--basin``, a ``bench.basin`` JSON per scene, whose ``query_psnr`` is
  the field's PSNR at each query's true pose): whether the field renders the view at all (``--field_ok``
  dB), crossed with the APR's rotation error: is the field or the APR's start the limit?
* ``--by_walk``: per test walk of each run, the APR's medians, the ratio of medians and the queries improved.

docs/convergence.md, fourteenth pass, has the table for five streets.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def load_run(out: Path) -> dict:
    """A finished refinement under ``out``: per-query APR and refined errors and render PSNR (loader order)."""
    sys.path.insert(0, str(REPO))
    from dm import metrics
    summary_file = Path(out) / "demo_summary.json"
    if not summary_file.is_file():
        raise SystemExit(f"error: {summary_file} not found (not a finished demo run)")
    summary = json.loads(summary_file.read_text())
    res = Path(summary["results_dir"])
    if not res.is_dir():      # a run moved or linked elsewhere: its results folder under out/logs
        res = Path(out) / "logs" / Path(summary["results_dir"]).name
    from dm.result_files import RunFiles
    run = json.loads((res / "summary.json").read_text())
    refined = res / Path(summary["refined_file"]).name           # <apr>_<scene>_NeFeS<iters>_<kind>_results.txt
    apr_name = refined.name.partition(f"_{run['scene']}_NeFeS")[0]
    files = RunFiles(res, run["scene"], apr_name, 0, run["pose_only"])   # for the GT and APR files' names
    if not all(f.is_file() for f in (files.gt, files.apr_results, refined)):
        raise SystemExit(f"error: {res}: expected {files.gt.name}, {files.apr_results.name} and {refined.name}")
    gt = np.loadtxt(files.gt)
    ta, ra = metrics.pose_errors(np.loadtxt(files.apr_results), gt)
    tr, rr = metrics.pose_errors(np.loadtxt(refined), gt)
    psnr = np.asarray(run.get("render_psnr", {}).get("per_query", []), float)
    if psnr.size != gt.shape[0]:
        raise SystemExit(f"error: {res}/summary.json has no render PSNR per query (a refinement without lm_polish)")
    out = Path(out).resolve()
    name = out.parent.name if out.name == "demo" else out.name      # logs/bench/scenes/<name>/demo, or <name>/
    walks = [walk_of(n) for n in files.frames.read_text().split()] if files.frames.is_file() else ["?"] * len(gt)
    return dict(scene=name, ta=ta, ra=ra, tr=tr, rr=rr, psnr=psnr, walk=np.array(walks))


def walk_of(frame: str) -> str:
    """The test sequence of a frame name: its ``seq...`` folder (7-Scenes ``seq-03/frame-000000.color.png``,
    Cambridge ``seq1/frame00001.png``) or the prefix of a flat name (``test/rgb/seq4_frame00001.png``)."""
    parts = Path(frame).parts
    return next((p for p in parts[:-1] if p.startswith("seq")), Path(frame).stem.split("_")[0])


def walk_lines(run: dict) -> list[str]:
    """Per test walk of one run: APR medians, the ratio of medians refined / APR, queries improved in both."""
    from dm.metrics import improved
    from dm.refine_run import LOW_RENDER_PSNR
    lines = []
    for w in dict.fromkeys(run["walk"]):                            # in loader order
        m = run["walk"] == w
        ta, ra = np.median(run["ta"][m]), np.median(run["ra"][m])
        n_better = int(improved((run["ta"][m], run["ra"][m]), (run["tr"][m], run["rr"][m])).sum())
        lines.append(f"{run['scene']} {w}: APR {ta:.3f} m / {ra:.2f} deg -> ratio {np.median(run['tr'][m]) / ta:.2f} / "
                     f"{np.median(run['rr'][m]) / ra:.2f}, {n_better} of {m.sum()} improved, "
                     f"{int((run['psnr'][m] >= LOW_RENDER_PSNR).sum())} trusted")
    return lines



def group_line(label: str, m: np.ndarray, q: dict) -> str:
    if not m.any():
        return f"{label:40s} n=  0"
    from dm.metrics import improved as better
    ta, ra, tr, rr = (q[k][m] for k in ("ta", "ra", "tr", "rr"))
    improved, halved = better((ta, ra), (tr, rr)).mean(), better((ta, ra), (tr, rr), 0.5).mean()
    return (f"{label:40s} n={m.sum():3d}  improved {100 * improved:4.0f} %  halved {100 * halved:4.0f} %  "
            f"median ratio t / r {np.median(tr / ta):.2f} / {np.median(rr / ra):.2f}")


def report(runs: list[dict], basin: dict[str, np.ndarray], field_ok: float) -> str:
    from dm.refine_run import LOW_RENDER_PSNR
    q = {k: np.concatenate([r[k] for r in runs]) for k in ("ta", "ra", "tr", "rr", "psnr")}
    lines = [f"{len(q['ta'])} queries from {', '.join(r['scene'] for r in runs)}",
             group_line("all", np.ones_like(q["ta"], bool), q),
             group_line(f"trusted (render >= {LOW_RENDER_PSNR:g} dB, refined pose)", q["psnr"] >= LOW_RENDER_PSNR, q),
             group_line(f"flagged (render < {LOW_RENDER_PSNR:g} dB)", q["psnr"] < LOW_RENDER_PSNR, q)]
    if basin:
        missing = [r["scene"] for r in runs if r["scene"] not in basin]
        if missing:
            raise SystemExit(f"error: --basin has no query_psnr for {', '.join(missing)}")
        field = np.concatenate([basin[r["scene"]] for r in runs])
        for fl, fm in ((f"field >= {field_ok:g} dB at the truth", field >= field_ok),
                       (f"field < {field_ok:g} dB at the truth", field < field_ok)):
            lines.append(group_line(fl, fm, q))
            for al, am in (("APR r < 10 deg", q["ra"] < 10), ("APR r 10-20 deg", (q["ra"] >= 10) & (q["ra"] < 20)),
                           ("APR r >= 20 deg", q["ra"] >= 20)):
                lines.append(group_line(f"  {al}", fm & am, q))
    return "\n".join(lines)


def basin_field_psnr(paths: list[Path]) -> dict[str, np.ndarray]:
    """scene -> the field's PSNR at each query's true pose, from ``bench.basin`` JSON files (all queries)."""
    out = {}
    for p in paths:
        rows = json.loads(Path(p).read_text())
        for scene, s in rows[0]["per_scene"].items():
            if s["queries"] != list(range(len(s["queries"]))):
                raise SystemExit(f"error: {p}: {scene} was benchmarked on a subset of its queries (--queries 0 needed)")
            out[scene] = np.asarray(s["query_psnr"], float)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", required=True, help="comma-separated folders of finished demo runs")
    p.add_argument("--basin", nargs="*", type=Path, default=[], help="bench.basin JSON files (all queries) of the same scenes")
    p.add_argument("--field_ok", type=float, default=25.0, help="dB at the truth: the field renders the view")
    p.add_argument("--by_walk", action="store_true", help="also one line per test walk of each run")
    a = p.parse_args(argv)
    runs = [load_run(Path(d)) for d in a.runs.split(",")]
    print(report(runs, basin_field_psnr(a.basin), a.field_ok))
    if a.by_walk:
        print("\n".join(line for r in runs for line in walk_lines(r)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
