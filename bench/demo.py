"""Benchmark of the whole method on the demo scene: ``python -m bench.demo [--devices cpu,cuda]``.

Runs the demo pipeline from scratch (synthetic room, NeFeS stage 1, DFNet, NeFeS stages 2+3,
APR + NeFeS refinement) with the tiny configs and prints, per device, the figures docs/benchmarks.md
quotes: stage times, held-out NeFeS PSNR, APR and refined median errors, their ratio, refinement
time per query and the total. Results go to ``logs/bench/demo_<device>/`` and ``logs/bench/demo.json``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

#: targets of the issues (CPU, this 2-core machine)
TARGETS = dict(nefes_minutes=8.0, nefes_psnr=22.0, dfnet_minutes=5.0, apr_t=0.25, apr_r=8.0, ratio=0.5,
               seconds_per_query=3.0, demo_minutes=15.0)


def _last_val_psnr(expdir: Path) -> float:
    rows = [json.loads(l) for l in (expdir / "train_log.jsonl").read_text().splitlines()]
    return [r for r in rows if "val_psnr" in r][-1]["val_psnr"]


def measure(device: str, out: Path) -> dict:
    from demo import format_summary, run_demo
    from dm.refine_run import waited_per_query
    shutil.rmtree(out, ignore_errors=True)
    s = run_demo(out, device=device)
    print(format_summary(s))
    logs, exps = out / "logs", s["experiments"]
    a, r, sec = s["apr"], s["refined"], s["seconds"]
    return dict(
        device=s["device"], data_minutes=sec.get("data", 0) / 60,
        nefes_stage1_minutes=sec["nefes_stage1"] / 60, nefes_stage1_psnr=_last_val_psnr(logs / exps["stage1"]),
        nefes_stage23_minutes=sec["nefes_stage2"] / 60, nefes_psnr=_last_val_psnr(logs / exps["stage2"]),
        nefes_minutes=(sec["nefes_stage1"] + sec["nefes_stage2"]) / 60,
        dfnet_minutes=sec["dfnet"] / 60, apr_t=a["median_t"], apr_r=a["median_r"],
        refined_t=r["median_t"], refined_r=r["median_r"],
        ratio_t=r["median_t"] / a["median_t"], ratio_r=r["median_r"] / a["median_r"],
        seconds_per_query=s["seconds_per_query"], seconds_per_query_median=s.get("seconds_per_query_median"),
        # what the user waits per query: the wall clock over the refinement's processes
        wall_seconds_per_query=waited_per_query(s), refine_ranks=s.get("world_size", 1),
        queries=s["n"], demo_minutes=s["total_seconds"] / 60)


def report(m: dict) -> str:
    ok = lambda good: "ok" if good else "MISSED"   # noqa: E731
    T = TARGETS
    return "\n".join([
        f"[{m['device']}] NeFeS stage 1: {m['nefes_stage1_minutes']:.1f} min, held-out PSNR {m['nefes_stage1_psnr']:.2f} dB",
        f"[{m['device']}] NeFeS stages 1+2+3: {m['nefes_minutes']:.1f} min, held-out PSNR {m['nefes_psnr']:.2f} dB "
        f"(target <= {T['nefes_minutes']:g} min, >= {T['nefes_psnr']:g} dB: "
        f"{ok(m['nefes_minutes'] <= T['nefes_minutes'] and m['nefes_psnr'] >= T['nefes_psnr'])})",
        f"[{m['device']}] DFNet training: {m['dfnet_minutes']:.1f} min, APR median {m['apr_t']:.3f} m / {m['apr_r']:.2f} deg "
        f"(target <= {T['dfnet_minutes']:g} min, <= {T['apr_t']:g} m / {T['apr_r']:g} deg: "
        f"{ok(m['dfnet_minutes'] <= T['dfnet_minutes'] and m['apr_t'] <= T['apr_t'] and m['apr_r'] <= T['apr_r'])})",
        f"[{m['device']}] refinement: median {m['refined_t']:.3f} m / {m['refined_r']:.2f} deg, ratio to APR "
        f"t {m['ratio_t']:.2f} r {m['ratio_r']:.2f} (target <= {T['ratio']:g}: {ok(max(m['ratio_t'], m['ratio_r']) <= T['ratio'])}); "
        f"{m['wall_seconds_per_query']:.2f} s per query (wall clock, {m['refine_ranks']} process(es); each query "
        f"{m['seconds_per_query']:.2f} s, median {m['seconds_per_query_median']:.2f}; target <= "
        f"{T['seconds_per_query']:g} s: {ok(m['wall_seconds_per_query'] <= T['seconds_per_query'])})",
        f"[{m['device']}] demo total: {m['demo_minutes']:.1f} min (target <= {T['demo_minutes']:g} min: "
        f"{ok(m['demo_minutes'] <= T['demo_minutes'])})",
    ])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="end-to-end benchmark on the demo scene")
    p.add_argument("--devices", default="cpu,cuda", help="comma-separated; cuda is skipped when unavailable")
    a = p.parse_args(argv)
    devices = [d for d in a.devices.split(",") if d and (d != "cuda" or torch.cuda.is_available())]
    results = [measure(d, REPO / "logs" / "bench" / f"demo_{d}") for d in devices]
    text = "\n".join(report(m) for m in results)
    print("\n" + text)
    out = REPO / "logs" / "bench"
    (out / "demo.json").write_text(json.dumps(results, indent=2))
    (out / "demo.txt").write_text(text + "\n")
    m = results[0]
    print(f"summary [{m['device']}]: APR {m['apr_t']:.3f} m / {m['apr_r']:.2f} deg -> refined {m['refined_t']:.3f} m / "
          f"{m['refined_r']:.2f} deg (x{m['ratio_t']:.2f} / x{m['ratio_r']:.2f}), {m['wall_seconds_per_query']:.2f} s/query (wall clock), "
          f"demo {m['demo_minutes']:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
