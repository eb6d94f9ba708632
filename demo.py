#!/usr/bin/env python
"""The end-to-end demo: ``bash demo.sh`` (or ``python demo.py``).

Renders the synthetic room (or takes ``--scene DIR --dataset_type T``), then runs the real entry
points one after the other with the tiny CPU configs of ``config/synthetic/``:

1. ``run_nefes.py``     NeFeS stage 1 (colour)
2. ``train_dfnet.py``   DFNet APR + feature extractor, rendering with the stage-1 NeFeS
3. ``run_nefes.py``     NeFeS stages 2+3 (features, fusion) with the new DFNet features
4. ``test_refinement.py`` APR + NeFeS refinement of the test queries; on a CPU as one torchrun rank per
   core (``--refine_ranks``), 1.4-1.6x faster on two cores than one process (docs/refinement_runs.md)

Everything (data, computed world setup, logs, checkpoints, results, plots) goes under ``--out``.
Each step resumes when the demo is rerun after an interruption.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from config.options import DATASET_TYPES
from core.errors import StepFailed, cli_main

REPO = Path(__file__).resolve().parent
CONFIGS = REPO / "config" / "synthetic"

#: the demo scene: a 7-Scenes-style room at 320x240 (working size 80x60 with df=4)
ROOM = dict(width=320, height=240, n_train_seq=12, frames_per_seq=30, n_test_seq=2, test_frames_per_seq=20)
#: sizes the tiny configs are tuned for; other scenes are subsampled / downscaled to match
WORKING_HEIGHT, NEFES_IMAGES, DFNET_IMAGES, QUERIES = 60, 180, 360, 20


def configs_fingerprint() -> str:
    """Short sha256 of the synthetic configs the demo trains and refines with (``demo_summary.json`` keeps
    it; :mod:`bench.scenes` warns when a cached scene was trained under other configs)."""
    h = hashlib.sha256()
    for path in sorted(CONFIGS.glob("*.txt")):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def refine_args(out: Path) -> list:
    """The refinement command-line arguments (without ``test_refinement.py``) of a finished demo in ``out``,
    from its ``demo_summary.json``: what the ``bench`` tools rerun, time and profile."""
    summary_file = Path(out) / "demo_summary.json"
    if not summary_file.is_file():
        raise SystemExit(f"error: {summary_file} not found: run demo.sh (or python -m bench.demo / bench.scenes) first")
    return json.loads(summary_file.read_text())["refine_command"][1:]


def scene_args(scene_dir: Path, dataset_type: str, meta_dir: Path) -> tuple[list, dict]:
    """Common CLI arguments for ``scene_dir``: df for a ~60 px high working image, skips for the tiny budget."""
    from config.options import parse_args
    from dataset_loaders import load_scene
    base = ["--datadir", str(scene_dir), "--dataset_type", dataset_type, "--meta_dir", str(meta_dir)]
    scene = load_scene(parse_args(base + ["--df", "1"]))
    df = max(1, round(scene.H_raw / WORKING_HEIGHT))
    n_train, n_test = len(scene.train), len(scene.test)
    info = dict(df=df, n_train=n_train, n_test=n_test, nefes_skip=max(1, round(n_train / NEFES_IMAGES)),
                dfnet_skip=max(1, round(n_train / DFNET_IMAGES)), testskip=max(1, n_test // QUERIES))
    extra = ["--df", str(df), "--testskip", str(info["testskip"])]
    if dataset_type == "Cambridge":   # as the paper's Cambridge configs
        extra += ["--no_verification_step"]
        if (scene_dir / "train" / "semantic").is_dir():
            extra += ["--semantic"]
    return base + extra, info


def refine_ranks(device: str, requested: int, queries: int) -> int:
    """Processes for the refinement step: ``requested`` when > 0; else one per CPU core (at most one per
    query) on a CPU and one on a GPU. A query's renders are too small to keep two threads busy: two
    one-thread ranks refine 1.4-1.6x faster than one two-thread process (two rooms, a street), with the same
    poses up to float rounding (``python -m bench.refine_ranks``, docs/refinement_runs.md)."""
    if requested > 0:
        return requested
    import torch
    from dm.distributed import available_cores
    on_gpu = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    return 1 if on_gpu else max(1, min(available_cores(), queries))


def launcher(ranks: int) -> tuple[list, dict]:
    """(command prefix, extra environment) that starts ``ranks`` refinement processes on this machine."""
    if ranks == 1:
        return [sys.executable], {}
    from dm.distributed import available_cores
    # torchrun would set 1 and warn; the ranks share the cores (dm.distributed.thread_share)
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, available_cores() // ranks))
    return ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"],
            {"OMP_NUM_THREADS": threads})


def refine_step(ranks: int, args: list, log: Path) -> float:
    """The refinement step (``args``: ``test_refinement.py`` and its arguments) on ``ranks`` processes. If
    the several-process run fails, it is retried once as one process: torchrun may be unable to start
    here (no local port), and the finished queries are in the journal, so nothing is refined twice; a
    real error fails again, with its own message. -> seconds, both tries together."""
    prefix, env = launcher(ranks)
    t0 = time.perf_counter()
    try:
        return run_step(f"APR + NeFeS refinement ({ranks} process{'es' if ranks > 1 else ''})", prefix + args, log, env)
    except StepFailed as e:
        if ranks == 1:
            raise
        print(f"\n{e}\nretrying the refinement as one process (demo.py --refine_ranks 1 skips the first try)", flush=True)
    return (time.perf_counter() - t0) + run_step("APR + NeFeS refinement (1 process)", [sys.executable] + args, log)


def run_step(name: str, cmd: list, log: Path, env: dict | None = None) -> float:
    """Run one entry point, streaming its output to the console and to ``log``; -> seconds."""
    print(f"\n=== {name}: {' '.join(str(c) for c in cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    env = {**os.environ, **(env or {}), "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as f:
        proc = subprocess.Popen([str(c) for c in cmd], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        for chunk in iter(lambda: proc.stdout.read1(4096), b""):
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
            f.write(chunk)
        if proc.wait() != 0:
            raise StepFailed(f"{name} failed (exit code {proc.returncode}); see {log}")
    return time.perf_counter() - t0


def run_demo(out: Path, scene_dir: Path | None = None, dataset_type: str | None = None,
             device: str = "auto", extra: dict | None = None, room: dict | None = None, ranks: int = 0) -> dict:
    """Run the whole pipeline under ``out``; returns the summary (also written to ``out/demo_summary.json``).

    ``extra``: additional CLI arguments per step ("stage1", "dfnet", "stage2", "refine"), appended
    last so they win (the tests use this for a seconds-long smoke run); ``room``: generator sizes;
    ``ranks``: refinement processes (0: :func:`refine_ranks` decides).
    """
    extra = extra or {}
    from models.trainer import latest_checkpoint
    out = out.resolve()
    logs, t_start, times = out / "logs", time.perf_counter(), {}
    if scene_dir is None:
        from data.synthetic import generate
        scene_dir, dataset_type = out / "data" / "room", "7Scenes"
        if not (scene_dir / "synthetic_info.json").is_file() or (scene_dir / ".synthetic_incomplete").exists():
            print(f"=== rendering the synthetic room into {scene_dir}", flush=True)
            t0 = time.perf_counter()
            generate("room", scene_dir, seed=0, overwrite=True, progress=sys.stdout.isatty(), **(room or ROOM))
            times["data"] = time.perf_counter() - t0
    scene_dir = Path(scene_dir).resolve()
    common, info = scene_args(scene_dir, dataset_type, out / "meta")
    common += ["--basedir", str(logs), "--device", device, "--strict_config"]
    py = sys.executable
    tag = re.sub(r"[^A-Za-z0-9_.-]", "_", scene_dir.name)    # experiment folders are named after the scene
    names = dict(stage1=f"nefes_{tag}_color_only", dfnet=f"dfnet_{tag}", stage2=f"nefes_{tag}", refine=f"DFNet_NeFeS50_{tag}")
    s1_dir, dfnet_dir, s2_dir, res_dir = (logs / names[k] for k in ("stage1", "dfnet", "stage2", "refine"))

    times["nefes_stage1"] = run_step("NeFeS stage 1 (colour)", [
        py, "run_nefes.py", "--config", CONFIGS / "config_room_stage1.txt", *common, "--expname", names["stage1"],
        "--trainskip", info["nefes_skip"], *extra.get("stage1", [])], logs / "stage1.log")
    s1 = latest_checkpoint(s1_dir)
    times["dfnet"] = run_step("DFNet (APR + feature extractor)", [
        py, "train_dfnet.py", "--config", CONFIGS / "config_room_dfnet.txt", *common, "--expname", names["dfnet"],
        "--trainskip", info["dfnet_skip"], "--ft_path", s1, *extra.get("dfnet", [])], logs / "dfnet.log")
    dfnet = dfnet_dir / "dfnet_best.pt"
    times["nefes_stage2"] = run_step("NeFeS stages 2+3 (features, fusion)", [
        py, "run_nefes.py", "--config", CONFIGS / "config_room_stage2.txt", *common, "--expname", names["stage2"],
        "--trainskip", info["nefes_skip"], "--ft_path", s1, "--pretrain_featurenet_path", dfnet,
        *extra.get("stage2", [])], logs / "stage2.log")
    refine_cmd = [py, "test_refinement.py", "--config", CONFIGS / "config_room_DFM.txt", *common,
                  "--expname", names["refine"], "--ft_path", latest_checkpoint(s2_dir), "--pretrain_model_path", dfnet,
                  "--pretrain_featurenet_path", dfnet, *extra.get("refine", [])]
    ranks = refine_ranks(device, ranks, -(-info["n_test"] // info["testskip"]))
    times["refinement"] = refine_step(ranks, refine_cmd[1:], logs / "refinement.log")

    summary = json.loads((res_dir / "summary.json").read_text())
    summary.update(scene_dir=str(scene_dir), scene_info=info, seconds=times, experiments=names,
                   total_seconds=time.perf_counter() - t_start, results_dir=str(res_dir),
                   refine_command=[str(c) for c in refine_cmd[1:]],   # rerun with overrides: bench.refine_ablation
                   configs=configs_fingerprint())
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _coverage_line(c: dict | None) -> list[str]:
    """How far the refined poses are from training views like them (a description of the queries, not a flag)."""
    if not c or c.get("median_m") is None:
        return []
    pct = 100 * c["median_m"] / c["train_spread_m"] if c["train_spread_m"] > 0 else float("nan")
    none = c["without_similar_view"]
    return [f"coverage: refined poses a median {c['median_m']:.3f} m ({pct:.1f} % of the training cameras' spread) "
            f"from a training camera looking the same way (within {c['within_deg']:g} deg)"
            + (f"; {none} with none" if none else "")]


def _trusted_line(t: dict | None, n: int) -> list[str]:
    """The same medians over the queries the refinement did not flag (render PSNR at the refined pose)."""
    if not t:
        return []
    if not t["n"]:
        return [f"trusted queries (render PSNR >= {t['threshold']:g} dB at the refined pose): none of {n}"]
    a, r = t["apr"], t["refined"]
    return [f"trusted queries (render PSNR >= {t['threshold']:g} dB at the refined pose): {t['n']} of {n}, "
            f"APR {a['median_t']:.3f} m / {a['median_r']:.2f} deg -> {r['median_t']:.3f} m / {r['median_r']:.2f} deg, "
            f"{100 * t['improved_both']:.0f} % improved in both"]


def format_summary(s: dict) -> str:
    from dm.refine_run import timing_line
    a, r = s["apr"], s["refined"]
    lines = [f"\n=== demo finished in {s['total_seconds'] / 60:.1f} min "
             f"({', '.join(f'{k} {v / 60:.1f}' for k, v in s['seconds'].items())} min)",
             f"scene {s['scene']} ({s['dataset_type']}), {s['n']} test queries, device {s['device']}",
             f"{'':22s}{'median t (m)':>14s}{'median r (deg)':>16s}",
             f"{'APR (DFNet)':22s}{a['median_t']:14.3f}{a['median_r']:16.2f}",
             f"{'APR + NeFeS refinement':22s}{r['median_t']:14.3f}{r['median_r']:16.2f}",
             f"{'ratio refined / APR':22s}{r['median_t'] / a['median_t']:14.2f}{r['median_r'] / a['median_r']:16.2f}",
             *([f"queries improved: {100 * s['improved']['both']:.0f} % in both t and r "
                f"({100 * s['improved']['t']:.0f} % in t, {100 * s['improved']['r']:.0f} % in r)"] if "improved" in s else []),
             *_trusted_line(s.get("trusted"), s["n"]),
             f"refinement: {timing_line(s)}",
             *_coverage_line(s.get("coverage")),
             f"results and plots: {s['results_dir']} (trajectories.png, error_cdf.png, summary.json)"]
    return "\n".join(lines)


@cli_main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scene", type=Path, default=None, help="existing scene folder (default: render the synthetic room)")
    p.add_argument("--dataset_type", choices=DATASET_TYPES, default=None)
    p.add_argument("--out", type=Path, default=REPO / "logs" / "demo", help="everything is written here")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
    p.add_argument("--refine_ranks", type=int, default=0,
                   help="refinement processes (torchrun ranks); 0: one per CPU core on a CPU, one on a GPU")
    a = p.parse_args(argv)
    if a.refine_ranks < 0:
        p.error("--refine_ranks must be 0 (automatic) or a positive number of processes")
    if a.scene is not None and a.dataset_type is None:
        p.error("--scene needs --dataset_type (7Scenes, 7Scenes_colmap or Cambridge)")
    if a.scene is not None and not a.scene.is_dir():
        p.error(f"--scene {a.scene}: folder not found")
    summary = run_demo(a.out, a.scene, a.dataset_type, a.device, ranks=a.refine_ranks)
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
