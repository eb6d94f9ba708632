"""Refinement settings on a finished demo: ``python -m bench.refine_ablation [--demo_dir DIR]``.

Reruns the demo's own ``test_refinement.py`` command (stored in ``demo_summary.json``) on its trained
NeFeS and DFNet, once per variant, with a few keys overridden, and prints median errors, their ratio
to the APR and the time per query. The default variants separate the two settings the tiny demo
config changes from the paper's (``refine_crop``, ``learning_rate``) and the coarse sample count.
Results: ``logs/bench/refine_ablation.{txt,json}`` (``--out``); each variant's files in ``<demo logs>/ablation_<name>/``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

#: name -> overrides appended to the demo's refinement command (the demo config itself is "demo")
VARIANTS = {
    "paper_crop_lr": ["--refine_crop", "10", "--learning_rate", "1e-5"],
    "paper_lr": ["--learning_rate", "1e-5"],
    "half_lr": ["--learning_rate", "2e-5"],
    "paper_crop": ["--refine_crop", "10"],
    "demo": [],
    "demo_32_coarse": ["--N_samples", "32"],
}


def run_variant(demo_dir: Path, summary: dict, name: str, overrides: list) -> dict:
    """Run one variant through test_refinement.py; returns its summary.json plus the overrides."""
    expname = f"ablation_{name}"
    cmd = [sys.executable, *summary["refine_command"], "--expname", expname, *overrides]
    log = demo_dir / "logs" / f"{expname}.log"
    with open(log, "wb") as f:
        if subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT).returncode != 0:
            raise SystemExit(f"error: variant {name} failed; see {log}")
    res = json.loads((demo_dir / "logs" / expname / "summary.json").read_text())
    return {"variant": name, "overrides": " ".join(overrides) or "(demo config)", "apr": res["apr"],
            "refined": res["refined"], "seconds_per_query": res["seconds_per_query"]}


def report(rows: list) -> str:
    lines = [f"{'variant':16s} {'overrides':34s} {'median t':>9s} {'median r':>9s} {'ratio t':>8s} {'ratio r':>8s} "
             f"{'mean t':>8s} {'s/query':>8s}"]
    for m in rows:
        a, r = m["apr"], m["refined"]
        lines.append(f"{m['variant']:16s} {m['overrides']:34s} {r['median_t']:9.4f} {r['median_r']:9.3f} "
                     f"{r['median_t'] / a['median_t']:8.2f} {r['median_r'] / a['median_r']:8.2f} "
                     f"{r['mean_t']:8.4f} {m['seconds_per_query']:8.2f}")
    a = rows[0]["apr"]
    lines.append(f"APR before refinement: median {a['median_t']:.4f} m / {a['median_r']:.3f} deg ({a['n']} queries)")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--demo_dir", type=Path, default=REPO / "logs" / "bench" / "demo_cpu",
                   help="output folder of a finished demo (bench.demo writes logs/bench/demo_cpu; demo.sh logs/demo)")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {', '.join(VARIANTS)}")
    p.add_argument("--out", type=Path, default=REPO / "logs" / "bench", help="where refine_ablation.{txt,json} go")
    a = p.parse_args(argv)
    path = a.demo_dir / "demo_summary.json"
    if not path.is_file():
        p.error(f"{path} not found: run `bash demo.sh` or `python -m bench.demo` first")
    summary = json.loads(path.read_text())
    if "refine_command" not in summary:
        p.error(f"{path} predates the stored refinement command: rerun the demo")
    names = [v for v in a.variants.split(",") if v]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    rows = []
    for name in names:
        rows.append(run_variant(a.demo_dir, summary, name, VARIANTS[name]))
        print(report(rows).splitlines()[-2], flush=True)
    text = report(rows)
    print("\n" + text)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "refine_ablation.json").write_text(json.dumps(rows, indent=2))
    (a.out / "refine_ablation.txt").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
