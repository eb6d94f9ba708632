"""A refinement run as a batch job: shard the test queries over torchrun ranks, journal every finished
query, resume after an interruption, gather on rank 0 and write the final files there.

Flow (every rank, one process being the case ``world_size == 1``):

1. set-up: device and threads, the scene and the models, the output folder; APR predictions, sharded
   over the ranks and all-gathered; NeFeS. An error on any rank stops every rank with one line (printed
   by rank 0) before anything in the experiment folder changes;
2. rank 0 removes a previous run's results and writes ``args.txt``; each node's local rank 0 keeps or
   discards the journal (:mod:`dm.refine_journal`);
3. the queries no rank has journalled are dealt round-robin to the ranks; each refines its share
   ``refine_batch`` at a time and journals each query as it finishes;
4. every rank sends rank 0 what it refined plus the journal entries it owns (``gather_object``: no shared
   folder needed); rank 0 orders them by query index (loader order) and writes the finals.

Each query's refinement depends only on that query, so the files equal those of one process.
"""
from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from dm import distributed, metrics, result_files
from dm.refine_journal import Journal, fingerprint

_logger = logging.getLogger(__name__)

REFINE_MODES = (2, 3, 4)
USER_ERRORS = (ValueError, FileNotFoundError)   # dataset, checkpoint, config and output errors


class StopRun(Exception):
    """A set-up error somewhere in the job: every rank stops; ``message`` is printed by rank 0 only."""

    def __init__(self, message: str | None):
        super().__init__(message or "")
        self.message = message


def agree(dist: distributed.Dist, fn: Callable):
    """``fn()`` on every rank; if it fails on any rank, all ranks raise :class:`StopRun` (no rank is left
    waiting at a later collective)."""
    err, value = None, None
    try:
        value = fn()
    except USER_ERRORS as e:
        err = str(e)
    errors = dist.all_gather(err)
    failed = [(r, m) for r, m in enumerate(errors) if m is not None]
    if failed:
        r, m = next(((r, m) for r, m in failed if r == dist.rank), failed[0])
        show = dist.is_main
        raise StopRun((m if r == dist.rank or dist.world_size == 1 else f"rank {r}: {m}") if show else None)
    return value


def plan(n: int, done_by_rank: list, world_size: int) -> tuple[list[list[int]], dict[int, int]]:
    """Which queries each rank refines, and which rank sends each journalled query to rank 0.

    ``done_by_rank[r]``: indices journalled in rank r's folder (ranks of one node see the same folder,
    nodes without a shared folder see different ones). Returns (per-rank lists of queries to refine,
    index -> owning rank for the journalled ones: the lowest rank that has it)."""
    owner: dict[int, int] = {}
    for r, done in enumerate(done_by_rank):
        for i in done:
            owner.setdefault(int(i), r)
    todo = [i for i in range(n) if i not in owner]
    return [todo[r::world_size] for r in range(world_size)], owner


def merge(parts: list[dict], n: int) -> list[dict]:
    """Rank 0: the gathered ``{index: entry}`` parts -> entries in loader order (each query exactly once)."""
    entries: dict[int, dict] = {}
    for part in parts:
        for i, e in part.items():
            if i in entries:
                raise RuntimeError(f"query {i} was sent to rank 0 twice")
            entries[i] = e
    missing = sorted(set(range(n)) - set(entries))
    if missing:
        raise RuntimeError(f"{len(missing)} queries missing after the gather (first: {missing[:5]})")
    return [entries[i] for i in range(n)]


def refine_queries(refine, indices: list[int], batch: int, journal: Journal, desc: str, show: bool) -> dict[int, dict]:
    """Refine ``indices`` ``batch`` at a time, journalling each; -> {index: entry}. Per-query seconds: a
    batch's time shared equally by its queries."""
    out: dict[int, dict] = {}
    B = max(1, int(batch))
    with tqdm(total=len(indices), desc=desc, disable=not show) as bar:
        for start in range(0, len(indices), B):
            idx = indices[start:start + B]
            t0 = time.perf_counter()
            results = refine(idx)
            dt = (time.perf_counter() - t0) / len(idx)
            with result_files.writing(journal.folder):
                for i, (pose, info) in zip(idx, results):
                    out[i] = journal.record(i, pose, info, dt)
            bar.update(len(idx))
            last = out[idx[-1]]["info"].get("losses") or [float("nan")]
            bar.set_postfix(loss=f"{last[0]:.3f}->{last[-1]:.3f}", s=f"{dt:.2f}")
    return out


def predict_sharded(predict_all, apr, split, device, dist: distributed.Dist) -> np.ndarray:
    """(N, 3, 4) APR predictions: each rank predicts every world_size-th query, then all-gather."""
    n = len(split)
    mine = list(range(dist.rank, n, dist.world_size))
    part = agree(dist, lambda: predict_all(apr, split, device, mine) if mine else np.zeros((0, 3, 4)))
    out = np.empty((n, 3, 4), dtype=np.float64)
    for r, p in enumerate(dist.all_gather(part)):
        out[r::dist.world_size] = p
    return out


@dataclass
class Setup:
    expdir: Path
    scene: object
    apr: object
    featnet: object
    files: result_files.RunFiles
    journal: Journal | None
    previews: list[int]


def _setup(args, device) -> Setup:
    from dataset_loaders import load_scene
    from dm import previews
    from dm.direct_pose_model import load_APR_and_FeatureNet
    if args.pose_only not in REFINE_MODES and args.pose_only != 0:
        raise ValueError(f"pose_only={args.pose_only}: expected 0 (APR only), 2 (APR + NeFeS), 3 (pose refinement) "
                         "or 4 (Levenberg-Marquardt pose refinement)")
    expdir = result_files.check_writable(Path(args.basedir) / args.expname)
    scene = load_scene(args)
    apr, featnet = load_APR_and_FeatureNet(args, device)
    files = result_files.RunFiles(expdir, scene.name, apr.name, args.opt_iter, args.pose_only)
    refining = args.pose_only in REFINE_MODES
    journal = Journal(files.journal, fingerprint(args, scene), scene.test.names) if refining else None
    rows = previews.pick_queries(len(scene.test), args.preview_queries) if refining else []
    return Setup(expdir, scene, apr, featnet, files, journal, rows)


def _prepare_folder(args, s: Setup, dist: distributed.Dist) -> None:
    from config.options import save_config
    with result_files.writing(s.expdir):
        if dist.is_main:
            result_files.remove_stale(s.expdir)
            save_config(args, s.expdir)
        if s.journal is not None and dist.is_local_main:
            s.journal.prepare(restart=args.restart)


def run(args: argparse.Namespace, dist: distributed.Dist, build_refiner: Callable, predict_all: Callable) -> int:
    """The whole job on this rank (see the module docstring); returns the exit code."""
    device = distributed.pick_device(args.device, dist)
    if dist.world_size > 1 or args.num_threads > 0:
        torch.set_num_threads(distributed.thread_share(args.num_threads, dist.local_world_size))
    dist.init(device)
    s = agree(dist, lambda: _setup(args, device))
    apr_poses = predict_sharded(predict_all, s.apr, s.scene.test, device, dist)
    refining = args.pose_only in REFINE_MODES
    # NeFeS is loaded before the folder is touched: a bad checkpoint leaves the last run's files and journal
    refine = agree(dist, lambda: build_refiner(args, s.scene, s.apr, s.featnet, device, apr_poses)) if refining else None
    agree(dist, lambda: _prepare_folder(args, s, dist))
    entries, wall = _refine_all(args, s, dist, refine) if refining else (None, None)
    if dist.is_main:
        write_finals(args, s, device, dist, apr_poses, entries, refine, wall)
    return 0


def _refine_all(args, s: Setup, dist: distributed.Dist, refine) -> tuple[list[dict] | None, dict | None]:
    """Steps 3 and 4: -> (the entries of every query in loader order, the refinement's wall clock) on
    rank 0, (None, None) on the others. The wall clock runs from the shared start (every rank has just
    agreed on the output folder) to the gather, which waits for the slowest rank: with R ranks it is what
    the user waits, where each entry's ``seconds`` is one query's own time on its rank."""
    t0 = time.perf_counter()
    n = len(s.scene.test)
    done = s.journal.load()
    todo, owner = plan(n, dist.all_gather(sorted(done)), dist.world_size)
    mine = todo[dist.rank]
    if dist.is_main:
        _logger.info("%d of %d queries already in the journal; refining %d on %d rank(s)", len(owner), n,
                     sum(map(len, todo)), dist.world_size)
    who = f", rank {dist.rank} of {dist.world_size}" if dist.world_size > 1 else ""
    computed = refine_queries(refine, mine, args.refine_batch, s.journal,
                              f"refining (pose_only={args.pose_only}{who})", dist.is_main) if mine else {}
    part = {i: {**e, "resumed": True} for i, e in done.items() if owner.get(i) == dist.rank}
    part.update(computed)
    parts = dist.gather(part)
    if not dist.is_main:
        return None, None
    refined = sum(map(len, todo))
    wall = time.perf_counter() - t0
    return merge(parts, n), {"refine_wall_seconds": wall,
                             "wall_seconds_per_query": wall / refined if refined else None}


def _pose_writer(poses: np.ndarray):
    return lambda tmp: metrics.save_pose_file(tmp, poses)


#: render PSNR (dB, at the render size, after the photometric polish) below which a refined pose is
#: flagged as unreliable. Set from room22, whose queries rendered at 16-22 dB at the truth fail from every
#: start; on the six benchmark scenes 67 of the 73 flagged refinements failed and 60 of the 71 others
#: succeeded (docs/convergence.md). Synthetic scenes only: not calibrated on real images.
LOW_RENDER_PSNR = 22.0


def render_psnr_summary(entries: list[dict], names) -> dict:
    """Per query, how well the field renders the query at its refined pose (``lm_polish`` records it):
    a low value means a view the field cannot render, where no refinement can be trusted. ``per_query``
    follows ``entries``, i.e. loader order (the order of the pose files)."""
    found = [(e["index"], e["info"]["render_psnr"]) for e in entries if "render_psnr" in e.get("info", {})]
    if not found:
        return {}
    values = [v for _, v in found]
    low = [names[i] for i, v in found if v < LOW_RENDER_PSNR]
    return {"render_psnr": {"median": float(np.median(values)), "threshold": LOW_RENDER_PSNR, "below": len(low),
                            "queries_below": low, "per_query": [round(float(v), 2) for v in values]}}


def trusted_summary(apr_errs, refined_errs, per_query_psnr) -> dict:
    """The errors over the queries the run trusts (render PSNR at the refined pose at least
    :data:`LOW_RENDER_PSNR`), APR against refined: what the refinement achieves where it does not flag
    itself. The split uses only the run's own renders, never the ground truth (the errors are only
    reported). On five synthetic streets, 45 of the 46 trusted queries improved against 14 of the 54
    flagged ones (docs/convergence.md, fourteenth pass)."""
    ok = np.asarray(per_query_psnr, dtype=np.float64) >= LOW_RENDER_PSNR
    if not ok.any():
        return {"trusted": {"n": 0, "threshold": LOW_RENDER_PSNR}}
    (ta, ra), (tr, rr) = ([np.asarray(e)[ok] for e in errs] for errs in (apr_errs, refined_errs))
    return {"trusted": {"n": int(ok.sum()), "threshold": LOW_RENDER_PSNR, "apr": metrics.summarize(ta, ra),
                        "refined": metrics.summarize(tr, rr), "improved_both": float(metrics.improved((ta, ra), (tr, rr)).mean())}}


def coverage_summary(train_poses: np.ndarray, refined: np.ndarray) -> dict:
    """Per query (loader order), the distance (m) from the refined pose to the nearest training camera looking
    the same way (:func:`dataset_loaders.inspect.view_coverage`; None: no such camera). It describes the
    queries, it does not flag them: on the held-out benchmark scenes it did not tell which refinements
    failed (docs/convergence.md, fifth pass), because a refinement the field misleads tends to end near a
    training view (sixth pass); ``render_psnr`` is the per-query flag."""
    from dataset_loaders.inspect import SIMILAR_VIEW_DEG, camera_spread, view_coverage
    _, similar = view_coverage(train_poses, refined)
    finite = similar[np.isfinite(similar)]
    return {"coverage": {"within_deg": SIMILAR_VIEW_DEG, "train_spread_m": round(camera_spread(train_poses), 4),
                         "median_m": float(np.median(finite)) if finite.size else None,
                         "without_similar_view": int((~np.isfinite(similar)).sum()),
                         "per_query_m": [round(float(v), 4) if np.isfinite(v) else None for v in similar]}}


def waited_per_query(summary: dict) -> float:
    """Seconds the user waited per refined query: the wall clock over the ranks, or each query's own mean
    time where the summary has no wall clock (written before it was recorded, or a run that only resumed)."""
    return summary.get("wall_seconds_per_query") or summary["seconds_per_query"]


def timing_line(summary: dict) -> str:
    """'2.56 s per query (wall, cpu x 2 ranks x 1 thread; 5.07 s each)': the wall clock per query first (what
    the user waits), then each query's own time; one process: '3.51 s per query (cpu, 2 threads)'."""
    ranks, threads, own = summary.get("world_size", 1), summary.get("threads_per_rank"), summary["seconds_per_query"]
    th = f"{threads} thread{'s' if threads != 1 else ''}" if threads else "threads unknown"
    wall = summary.get("wall_seconds_per_query")
    if ranks > 1 and wall is not None:
        return f"{wall:.2f} s per query (wall, {summary.get('device', '')} x {ranks} ranks x {th}; {own:.2f} s each)"
    return f"{own:.2f} s per query ({summary.get('device', '')}, {th})"


def write_finals(args, s: Setup, device, dist: distributed.Dist, apr_poses: np.ndarray, entries: list[dict] | None,
                 refine, wall: dict | None = None) -> None:
    """Rank 0: summaries on stdout; GT, frame names, APR and refined poses, plots, previews and
    ``summary.json`` into the experiment folder (:func:`dm.result_files.publish`)."""
    import json
    from dm import plots, previews
    scene, files, tag = s.scene, s.files, s.apr.name
    gt = scene.test.poses
    summary = {"scene": scene.name, "dataset_type": args.dataset_type, "device": str(device),
               "pose_only": args.pose_only, "n": len(gt), "world_size": dist.world_size,
               "threads_per_rank": torch.get_num_threads(),
               "apr": metrics.summarize(*metrics.pose_errors(apr_poses, gt))}
    print(metrics.format_summary(summary["apr"], name=f"{tag} (APR)"))
    texts = {files.gt: _pose_writer(gt), files.frames: lambda tmp: Path(tmp).write_text("".join(
        f"{n}\n" for n in scene.test.names)), files.apr_results: _pose_writer(apr_poses)}
    figures = {}
    if entries is not None:
        refined = np.array([e["pose"] for e in entries], dtype=np.float64).reshape(-1, 3, 4)
        seconds = [e["seconds"] for e in entries]
        errs = metrics.pose_errors(refined, gt)
        summary["refined"] = metrics.summarize(*errs)
        e0 = metrics.pose_errors(apr_poses, gt)
        better_t, better_r = errs[0] < e0[0], errs[1] < e0[1]
        summary["improved"] = {"t": float(better_t.mean()), "r": float(better_r.mean()),
                               "both": float(metrics.improved(e0, errs).mean())}   # fraction of queries closer than the APR
        summary.update(seconds_per_query=float(np.mean(seconds)), seconds_per_query_median=float(np.median(seconds)),
                       refined_file=str(files.refined), reverted=int(sum(e["info"].get("reverted", False) for e in entries)),
                       resumed_queries=int(sum(e.get("resumed", False) for e in entries)), previews=s.previews,
                       query_seconds=seconds, **(wall or {}))
        summary.update(render_psnr_summary(entries, scene.test.names))
        if len(summary.get("render_psnr", {}).get("per_query", [])) == len(entries):
            summary.update(trusted_summary(e0, errs, summary["render_psnr"]["per_query"]))
        if len(scene.train):
            summary.update(coverage_summary(scene.train.poses, refined))
        texts[files.refined] = _pose_writer(refined)
        figures[files.figure("trajectories")] = lambda p: plots.plot_trajectories(p, gt, APR=apr_poses, refined=refined)
        figures[files.figure("error_cdf")] = lambda p: plots.plot_error_cdf(p, APR=metrics.pose_errors(apr_poses, gt),
                                                                            refined=errs)
        nefes, cam = getattr(refine, "nefes", None), getattr(refine, "cam", None)
        if s.previews and (nefes is None or cam is None):
            _logger.warning("no previews.png: the refiner does not expose its NeFeS model and camera (nefes, cam)")
        elif s.previews:
            rows = previews.render_rows(nefes, cam, s.featnet, scene.test, s.previews, apr_poses, refined, device)
            figures[files.figure("previews")] = lambda p: previews.plot_previews(p, rows, gt, apr_poses, refined)
    texts[files.summary] = lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2) + "\n")
    result_files.publish(s.expdir, figures, texts)
    if entries is not None:
        print(metrics.format_summary(summary["refined"], name=f"{tag} + NeFeS{args.opt_iter}"))
        print(f"refinement: {timing_line(summary)}; results -> {files.refined}")
        rp = summary.get("render_psnr")
        if rp and rp["below"]:
            print(f"render PSNR at the refined poses: median {rp['median']:.1f} dB; {rp['below']} of {len(entries)} "
                  f"queries below {rp['threshold']:g} dB, views the field does not render well: treat their poses as "
                  f"unreliable ({', '.join(rp['queries_below'][:3])}{', ...' if rp['below'] > 3 else ''}; all in summary.json)")
        tr = summary.get("trusted")
        if tr and tr["n"]:
            print(f"the {tr['n']} trusted queries (render PSNR >= {tr['threshold']:g} dB): APR {tr['apr']['median_t']:.4f} m / "
                  f"{tr['apr']['median_r']:.3f}° -> refined {tr['refined']['median_t']:.4f} m / {tr['refined']['median_r']:.3f}° "
                  f"(median), {100 * tr['improved_both']:.0f} % improved in both")
