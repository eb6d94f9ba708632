"""Convergence basin of the refinement: ``python -m bench.basin [--quick]``.

On the benchmark scenes of :mod:`bench.scenes` (synthetic rooms and streets with seeds the demo and
tests never use, both on-disk layouts; NeFeS and DFNet trained once per scene by the demo pipeline
and cached), every test query is refined from

* the true pose rotated about the camera centre by exactly 1, 2, 5, 10 degrees (random axis),
* the true pose shifted by exactly 1, 2, 5, 10 % of the camera spread (random direction; the spread
  is the diagonal of the training cameras' bounding box),
* both at once (5 degrees and 5 %),
* the APR's own prediction,

with each refinement mode (``--methods``; each is the scene's demo refinement command plus
overrides). Per start it prints the success rate, median initial and final errors and time per query.
``--set NAME=OVERRIDES`` adds a method; its ``ft_path`` must be a field trained with the scene's DFNet
(a pipeline's stage-2 field learns its own DFNet's features). To compare whole pipelines (another
world setup, another DFNet), point ``--root`` at a folder of ``<scene>/{data,demo}`` trained by
``demo.run_demo`` (links will do; docs/convergence.md, thirteenth pass).

**Success** (stated once, used everywhere): with the error size ``e = max(r / 1 deg, t / (1 % spread))``,
a refinement succeeds when it halves the size and ends below 1 (``e_final <= e_start / 2`` and
``e_final < 1``, i.e. within 1 degree and 1 % of the spread). A 1-degree start thus must end within
0.5 degrees and 0.5 % of the spread.

**Rendered queries**: refinement can only be as good as the field where it looks. Each query's field
PSNR at its true pose is measured once (``--field_ok``, default 25 dB, the line between the views a
field renders and those it smears, e.g. walls no training camera saw); the report gives the success
rate over all queries and, separately, over the queries rendered at or above that line (by the scene's
demo field, also for methods that override ``ft_path``), so that an
optimiser's failures are not confused with a field's. **Flagged**: refinements the run itself marks
as unreliable (with ``lm_polish``: render PSNR at the refined pose below
:data:`dm.refine_run.LOW_RENDER_PSNR`), and how many of them failed: how well that warning tells.
**Objective-bound failures**: a failed refinement whose final pose scores at least as well as the
true pose on the photometric objective the demo's polish minimises (rendered colour against the query
at the render size, ``refine_crop``, the polish's own fine samples; :func:`objective_psnr`): the
objective, i.e. the field, does not favour the truth over where the refinement stopped, so a better
optimiser of it is not the remedy. The other failures stopped above the truth's loss, where an optimiser
could still gain. The JSON keeps both values per query.
**Coverage**: per scene, the median distance of the queries to the nearest training camera and to the
nearest one looking the same way (:func:`dataset_loaders.inspect.view_coverage`); the JSON keeps the
second per query (``query_similar_view_m``) next to ``query_psnr`` and the errors, and the same distance
from each refined pose (``final_similar_view_m``: a refinement that drifts towards a training view ends
nearer one than the truth is).

``--quick`` uses two scenes (a room and a street), 8 queries, four starts and the methods ``paper`` and
``polish``: a few minutes once the scenes are trained (training a scene takes 10-25 minutes on this
CPU, once). Results:
``logs/bench/basin.{txt,json}`` and ``basin.png`` (``--out``).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import scenes as bench_scenes  # noqa: E402
from dataset_loaders.inspect import camera_spread, view_coverage  # noqa: E402
from dm.refine_run import LOW_RENDER_PSNR  # noqa: E402

#: name -> overrides of the scene's demo refinement command
# Every method states its project options (polish, Jacobian) explicitly: the scenes' refinement config is
# the synthetic demo's, whose defaults (lm_polish, lm_jacobian) would otherwise leak into every row.
METHODS = {
    "paper": ["--pose_only", "2", "--lm_polish", "0"],               # APR + NeFeS50 (demo settings)
    "pose_adam": ["--pose_only", "3", "--lm_polish", "0"],           # the original's direct pose refinement
    "lm": ["--pose_only", "4", "--opt_iter", "12", "--lm_jacobian", "fd", "--lm_polish", "0"],   # LM on the paper's loss
    "polish": ["--pose_only", "2", "--lm_polish", "6", "--lm_polish_start", "--lm_jacobian", "flow"],  # the demo's setting
}
STARTS = ("rot1", "rot2", "rot5", "rot10", "tr1", "tr2", "tr5", "tr10", "rot5+tr5", "apr")
QUICK = dict(scenes="room21,street23", queries=8, starts="rot1,rot5,tr5,apr", methods="paper,polish")


def parse_start(name: str) -> tuple[float, float]:
    """'rot5' -> (5 deg, 0), 'tr2' -> (0, 2 %), 'rot5+tr5' -> (5, 5)."""
    deg = pct = 0.0
    for part in name.split("+"):
        if part.startswith("rot"):
            deg = float(part[3:])
        elif part.startswith("tr"):
            pct = float(part[2:])
        else:
            raise ValueError(f"unknown start '{name}'")
    return deg, pct


def perturb(gt: np.ndarray, deg: float, metres: float, seed: int) -> np.ndarray:
    """(N, 3, 4) poses -> rotated about each camera centre by exactly ``deg`` and shifted by exactly
    ``metres`` (random axes and directions from ``seed``)."""
    from core import geometry
    rng = np.random.default_rng(seed)
    out = gt.copy()
    for i in range(len(gt)):
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        R = geometry.so3_exp(torch.as_tensor(axis * math.radians(deg))).numpy()
        d = rng.normal(size=3)
        out[i, :, :3] = R @ gt[i, :, :3]
        out[i, :, 3] = gt[i, :, 3] + metres * d / np.linalg.norm(d)
    return out


class OffsetAPR(torch.nn.Module):
    """An APR whose prediction for the current query is moved to a chosen start pose (a fixed left
    transform of its output), so APR fine-tuning (pose_only=2) can start from a controlled error."""

    def __init__(self, apr):
        super().__init__()
        self.apr, self.name = apr, apr.name
        self.register_buffer("offset", torch.eye(4))   # a buffer: refinement copies carry it along

    def set_start(self, img: torch.Tensor, start: np.ndarray) -> None:
        from dm.refine_apr import predict
        from core import geometry
        with torch.no_grad():
            p0 = geometry.to_homogeneous(predict(self.apr, img, True).double())
            s = geometry.to_homogeneous(torch.as_tensor(start, dtype=torch.float64))
            self.offset.copy_((s @ torch.linalg.inv(p0)).float())

    def forward(self, img):
        from core import geometry
        p = geometry.orthonormalize_pose(self.apr(img))                    # (B, 3, 4)
        R, t = self.offset[:3, :3], self.offset[:3, 3:]
        return torch.cat([R @ p[..., :3], R @ p[..., 3:] + t], -1)


@torch.no_grad()
def objective_psnr(nefes, cam, images: torch.Tensor, hists: torch.Tensor, poses: torch.Tensor, crop: int,
                   batch: int = 8) -> np.ndarray:
    """Per query, the photometric objective that the polish minimises (``lm_polish``:
    :class:`dm.refine_loss.ColorResidual` at the render size, working-size ``crop``) at ``poses`` (n, 3, 4),
    as a PSNR (dB; higher = lower loss). ``images`` (n, 3, H, W) at the working size, ``hists`` (n, 10).
    A failed refinement that ends at or above the truth's value has found a pose the objective prefers to
    the truth: a better optimiser of that objective is not the remedy."""
    from dm.refine_loss import ColorResidual
    res = ColorResidual(images, (cam.h, cam.w), crop, 0.0, 1.0)
    out = []
    for k in range(0, len(poses), batch):
        q = torch.arange(k, min(k + batch, len(poses)), device=images.device)
        rgb = cam.render(nefes, poses[q], hists[q], features=False)["rgb"]
        out += [ColorResidual.psnr(float(v)) for v in res.loss(res.residual(rgb.to(res.target.dtype), q))]
    return np.array(out)


class SceneContext:
    """A trained benchmark scene: its refinement arguments, data, APR and feature extractor."""

    def __init__(self, spec, device: str, queries: int | None, root: Path = bench_scenes.ROOT):
        from config.options import get_device, parse_args
        from dataset_loaders import load_scene
        from dm.direct_pose_model import load_APR_and_FeatureNet
        from test_refinement import predict_all
        summary = bench_scenes.ensure_trained(spec, root, device=device)
        self.spec, self.command = spec, [c for c in summary["refine_command"] if c != "test_refinement.py"]
        self.args = parse_args(self.command)
        self.device = get_device(device)
        self.scene = load_scene(self.args)
        self.apr, self.featnet = load_APR_and_FeatureNet(self.args, self.device)
        n = len(self.scene.test)
        self.idx = np.unique(np.linspace(0, n - 1, queries).round().astype(int)) if queries and queries < n else np.arange(n)
        self.gt = self.scene.test.poses[self.idx]
        items = [self.scene.test[int(i)] for i in self.idx]      # the queries, once (the objective reads them often)
        self.images = torch.stack([it["img"] for it in items]).to(self.device)
        self.hists = torch.stack([it["hist"] for it in items]).to(self.device)
        self.apr_poses = predict_all(self.apr, self.scene.test, self.device)[self.idx]
        self.spread = camera_spread(self.scene.train.poses)
        # how far each query is from the nearest training camera, and from the nearest one looking the same
        # way (% of the spread): the field is only as good as its coverage, and the table is read against it
        near, similar = view_coverage(self.scene.train.poses, self.gt)
        self.coverage = float(np.median(near) / self.spread * 100)
        self.coverage_similar = float(np.median(similar) / self.spread * 100)
        self.query_similar_m = similar
        from dm.refine_apr import RenderCamera
        from models.nefes import load_nefes
        self.nefes, _ = load_nefes(self.args.ft_path, self.device, self.args)
        self.cam = RenderCamera.for_scene(self.args, self.scene)
        self.query_psnr = self.true_pose_psnr()                    # (n,) dB per query
        self.field_psnr = float(np.median(self.query_psnr))

    @torch.no_grad()
    def true_pose_psnr(self) -> np.ndarray:
        """PSNR (dB) per query of NeFeS's colour at the true poses against the queries, at the render size:
        what refinement can hope for (a field that does not render the test views well has no sharp loss)."""
        import torch.nn.functional as F
        from models.losses import psnr
        out = []
        for k, i in enumerate(self.idx):
            item = self.scene.test[int(i)]
            rgb = self.cam.render(self.nefes, torch.as_tensor(self.gt[k], dtype=torch.float32, device=self.device)[None],
                                  item["hist"][None].to(self.device), features=False)["rgb"]
            ref = F.interpolate(item["img"][None].to(self.device), size=(self.cam.h, self.cam.w), mode="area")
            out.append(float(psnr(rgb.clamp(0, 1), ref)))
        return np.array(out)

    def objective_psnr(self, poses: np.ndarray, nefes, cam, crop: int) -> np.ndarray:
        """:func:`objective_psnr` of this scene's queries at ``poses`` (n, 3, 4) with a method's field and camera."""
        return objective_psnr(nefes, cam, self.images, self.hists,
                              torch.as_tensor(poses, dtype=torch.float32, device=self.device), crop)

    def start_poses(self, start: str) -> np.ndarray:
        if start == "apr":
            return self.apr_poses
        deg, pct = parse_start(start)
        return perturb(self.gt, deg, pct / 100 * self.spread, seed=zlib.crc32(f"{self.spec.seed}/{start}".encode()))   # not hash(): str hashes change per process

    def scene_for(self, args):
        """The scene as a method's arguments load it: a method that overrides ``meta_dir`` renders its field
        under that folder's world setup (a field trained with another far bound); the queries, their
        ground truth and the APR frame must stay the same."""
        if (args.meta_dir, args.datadir) == (self.args.meta_dir, self.args.datadir):
            return self.scene
        from dataset_loaders import load_scene
        scene = load_scene(args)
        if not np.allclose(scene.test.poses, self.scene.test.poses, atol=1e-6):
            raise SystemExit(f"error: meta_dir {args.meta_dir} changes the APR frame of the test poses "
                             "(another pose_avg_stats.txt): the method cannot be compared on these queries")
        return scene

    def refine(self, overrides: list, starts: np.ndarray, batch: int) -> tuple[np.ndarray, float, list, dict]:
        """Refine the queries from ``starts``; -> (poses (n, 3, 4), seconds per query, infos, the photometric
        objective (:func:`objective_psnr`, this method's field) at the truth and at the refined poses)."""
        from config.options import parse_args
        from test_refinement import build_refiner
        args = parse_args(self.command + list(overrides) + ["--refine_batch", str(batch)])
        full = np.zeros((len(self.scene.test), 3, 4))
        full[self.idx] = starts
        apr = self.apr
        if args.pose_only == 2:
            apr = OffsetAPR(self.apr).to(self.device)
            batch = 1   # one start offset per APR: one query at a time
        refine = build_refiner(args, self.scene_for(args), apr, self.featnet, self.device, full)
        out, infos, t0 = [], [], time.perf_counter()
        for k in range(0, len(self.idx), batch):
            chunk = self.idx[k:k + batch]
            if args.pose_only == 2:
                apr.set_start(self.scene.test[int(chunk[0])]["img"][None].to(self.device), starts[k])
            for pose, info in refine(list(chunk)):
                out.append(pose.double().cpu().numpy())
                infos.append(info)
        poses, seconds = np.stack(out), (time.perf_counter() - t0) / len(self.idx)
        # the polish's objective with this method's own field and sampling (overrides may change ft_path,
        # N_importance, lm_polish_N_importance)
        objective = {k: self.objective_psnr(p, refine.nefes, refine.polish_cam, args.refine_crop)
                     for k, p in (("truth", self.gt), ("final", poses))}
        return poses, seconds, infos, objective


def errors(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from dm.metrics import pose_errors
    return pose_errors(pred, gt)


def summarize(t0, r0, t1, r1, spread: np.ndarray, rendered: np.ndarray | None = None,
              flagged: np.ndarray | None = None, objective_bound: np.ndarray | None = None) -> dict:
    """Success rate and medians over queries (arrays over all queries of all scenes); ``rendered``: mask
    of the queries the field renders well (success over them: ``success_rendered``, of ``n_rendered``);
    ``flagged``: mask of the refinements the run itself flags as unreliable (``n_flagged``, of which
    ``flagged_failed`` failed); ``objective_bound``: mask of the refinements that end where the photometric
    objective is at least as low as at the truth (``failed_objective_bound``: the failures among them,
    of ``n_failed``)."""
    unit_t = spread / 100
    e0 = np.maximum(r0 / 1.0, t0 / unit_t)
    e1 = np.maximum(r1 / 1.0, t1 / unit_t)
    ok = (e1 <= e0 / 2) & (e1 < 1.0)
    rendered = np.ones(len(ok), dtype=bool) if rendered is None else np.asarray(rendered, dtype=bool)
    flagged = np.zeros(len(ok), dtype=bool) if flagged is None else np.asarray(flagged, dtype=bool)
    bound = np.zeros(len(ok), dtype=bool) if objective_bound is None else np.asarray(objective_bound, dtype=bool)
    return dict(n=int(len(ok)), success=float(ok.mean()), n_failed=int((~ok).sum()),
                failed_objective_bound=int((bound & ~ok).sum()), n_rendered=int(rendered.sum()),
                success_rendered=float(ok[rendered].mean()) if rendered.any() else None,   # None: JSON null
                improved=float(((t1 < t0) | (t0 == 0)).mean()),
                n_flagged=int(flagged.sum()), flagged_failed=int((flagged & ~ok).sum()),
                t0=float(np.median(t0)), r0=float(np.median(r0)), t1=float(np.median(t1)), r1=float(np.median(r1)),
                t1_rel=float(np.median(t1 / unit_t)), r1_max=float(np.max(r1)))


def report(rows: list) -> str:
    head = (f"{'method':10s} {'start':9s} {'n':>4s} {'success':>8s} {'start t/r':>16s} {'final t / r (median)':>22s} "
            f"{'final t %sprd':>13s} {'s/query':>8s} {'rendered: success':>18s} {'flagged (failed)':>16s} "
            f"{'failed: objective-bound':>23s}")
    lines = [head]
    for m in rows:
        s = m["summary"]
        lines.append(f"{m['method']:10s} {m['start']:9s} {s['n']:4d} {100 * s['success']:7.0f}% "
                     f"{s['t0']:7.3f}m/{s['r0']:5.2f}d {s['t1']:10.4f} m / {s['r1']:6.3f} deg {s['t1_rel']:12.2f}% "
                     f"{m['seconds_per_query']:8.2f} "
                     + (f"{100 * s['success_rendered']:9.0f}% of {s['n_rendered']:2d}" if s.get("n_rendered") else f"{'-':>9s}  of  0")
                     + f" {s.get('n_flagged', 0):11d} ({s.get('flagged_failed', 0):2d})"
                     + f" {s.get('failed_objective_bound', 0):16d} of {s.get('n_failed', 0):3d}")
    return "\n".join(lines)


def plot(rows: list, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for method in dict.fromkeys(r["method"] for r in rows):
        for ax, prefix in zip(axes, ("rot", "tr")):
            pts = [(parse_start(r["start"])[0 if prefix == "rot" else 1], r["summary"]["success"])
                   for r in rows if r["method"] == method and r["start"].startswith(prefix) and "+" not in r["start"]]
            if pts:
                x, y = zip(*sorted(pts))
                ax.plot(x, 100 * np.array(y), "o-", label=method)
    for ax, xl in zip(axes, ("start rotation error (deg)", "start translation error (% of camera spread)")):
        ax.set_xlabel(xl)
        ax.set_ylabel("success (%)")
        ax.set_ylim(-5, 105)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("convergence basin (success: error halved and within 1 deg / 1 % spread)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help=f"two scenes, few queries and starts ({QUICK})")
    p.add_argument("--scenes", default=",".join(bench_scenes.TUNE), help="benchmark scenes (bench/scenes.py)")
    p.add_argument("--methods", default=None, help=f"comma-separated subset of {', '.join(METHODS)} (default: all; --quick: paper, polish)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=OVERRIDES",
                   help="define or replace a method, e.g. --set 'lm_blur=--pose_only 4 --lm_blur 2 0'")
    p.add_argument("--starts", default=",".join(STARTS))
    p.add_argument("--queries", type=int, default=0, help="queries per scene (0: all)")
    p.add_argument("--batch", type=int, default=4, help="refine_batch for pose_only 3 and 4")
    p.add_argument("--field_ok", type=float, default=25.0,
                   help="dB: queries whose field PSNR at the true pose reaches this are 'rendered' (separate success column)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=REPO / "logs" / "bench")
    p.add_argument("--tag", default="basin", help="output file names: <tag>.txt/.json/.png")
    p.add_argument("--root", type=Path, default=bench_scenes.ROOT,
                   help="where the trained scenes live (<root>/<scene>/{data,demo}; default: the bench cache); "
                        "another root compares whole pipelines, each with its own field and DFNet")
    a = p.parse_args(argv)
    if a.quick:
        a.scenes, a.queries, a.starts = QUICK["scenes"], a.queries or QUICK["queries"], QUICK["starts"]
        a.methods = a.methods or QUICK["methods"]
    a.methods = a.methods or ",".join(METHODS)
    methods = dict(METHODS)
    for item in a.set:
        name, _, ov = item.partition("=")
        methods[name] = ov.split()
    names = [m for m in a.methods.split(",") if m]
    for m in names:
        if m not in methods:
            p.error(f"unknown method {m}; known: {', '.join(methods)}")
    starts = [s for s in a.starts.split(",") if s]
    if a.root.resolve() != bench_scenes.ROOT.resolve():      # another root holds finished pipelines only: never train there
        missing = [s for s in a.scenes.split(",") if not (a.root / s / "demo" / "demo_summary.json").is_file()]
        if missing:
            p.error(f"--root {a.root}: no trained scene {', '.join(missing)} (expected <root>/<scene>/demo/demo_summary.json)")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    contexts = [SceneContext(bench_scenes.ALL[s], a.device, a.queries, a.root) for s in a.scenes.split(",")]
    rows = []
    for method in names:
        for start in starts:
            t0, r0, t1, r1, spread, rendered, flagged, bound, secs, per_scene, infos_all = [], [], [], [], [], [], [], [], [], {}, []
            for ctx in contexts:
                init = ctx.start_poses(start)
                refined, sec, infos, objective = ctx.refine(methods[method], init, a.batch)
                e0, e1 = errors(init, ctx.gt), errors(refined, ctx.gt)
                t0.append(e0[0]), r0.append(e0[1]), t1.append(e1[0]), r1.append(e1[1])
                spread.append(np.full(len(init), ctx.spread))
                rendered.append(ctx.query_psnr >= a.field_ok)
                render_psnr = np.array([i.get("render_psnr", math.inf) for i in infos])   # from lm_polish
                flagged.append(render_psnr < LOW_RENDER_PSNR)
                _, final_similar = view_coverage(ctx.scene.train.poses, refined)   # does a failure drift to a training view?
                bound.append(objective["final"] >= objective["truth"])
                secs.append(sec)
                infos_all.append(infos)
                per_scene[ctx.spec.name] = dict(summarize(e0[0], e0[1], e1[0], e1[1], np.full(len(init), ctx.spread),
                                                          rendered[-1], flagged[-1], bound[-1]),
                                                field_psnr=ctx.field_psnr, spread_m=ctx.spread, coverage_pct=ctx.coverage,
                                                coverage_similar_pct=(ctx.coverage_similar if math.isfinite(ctx.coverage_similar)
                                                                      else None),
                                                queries=[int(i) for i in ctx.idx],   # per query, for failure analysis
                                                query_psnr=[round(float(v), 2) for v in ctx.query_psnr],
                                                query_similar_view_m=[round(float(v), 4) if math.isfinite(v) else None
                                                                      for v in ctx.query_similar_m],
                                                final_similar_view_m=[round(float(v), 4) if math.isfinite(v) else None
                                                                      for v in final_similar],
                                                render_psnr=[round(float(v), 2) if math.isfinite(v) else None for v in render_psnr],
                                                objective_psnr={k: [round(float(v), 3) for v in o] for k, o in objective.items()},
                                                errors={k: [round(float(v), 5) for v in e] for k, e in
                                                        zip(("t0", "r0", "t1", "r1"), (*e0, *e1))})
            all_infos = [i for ctx_infos in infos_all for i in ctx_infos]
            row = dict(method=method, overrides=" ".join(methods[method]), start=start,
                       accepted_steps={k: float(np.median([i[k] for i in all_infos]))
                                       for k in ("steps", "polish_steps") if all_infos and k in all_infos[0]},
                       summary=summarize(*(np.concatenate(v) for v in (t0, r0, t1, r1, spread, rendered, flagged, bound))),
                       per_scene=per_scene, seconds_per_query=float(np.mean(secs)))
            rows.append(row)
            print(report([row]).splitlines()[-1], "  |", "  ".join(f"{k} {100 * v['success']:.0f}%"
                                                               for k, v in per_scene.items()),
                  "".join(f"  median {k} {v:g}" for k, v in row["accepted_steps"].items()), flush=True)
    text = report(rows)
    text += "\nscenes: " + ", ".join(f"{c.spec.name} ({c.spec.dataset_type}, spread {c.spread:.2f} m, {len(c.idx)} queries, "
                                     f"field {c.field_psnr:.1f} dB at the true poses (median; "
                                     f"{int((c.query_psnr >= a.field_ok).sum())} queries at >= {a.field_ok:g} dB), nearest training camera "
                                     f"{c.coverage:.1f} % of the spread, the nearest looking the same way "
                                     f"{c.coverage_similar:.1f} %)" for c in contexts)
    text += "\nmethods: " + "; ".join(f"{m} = {' '.join(methods[m])}" for m in names)
    print("\n" + text)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"{a.tag}.txt").write_text(text + "\n")
    (a.out / f"{a.tag}.json").write_text(json.dumps(rows, indent=2))
    plot(rows, a.out / f"{a.tag}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
