#!/usr/bin/env python
"""Refine APR poses with NeFeS: ``python test_refinement.py --config config_<scene>_DFM.txt``.

``pose_only=0``: evaluate the APR alone. ``pose_only=2``: APR + NeFeS (fine-tune a copy of the APR per
query, the paper's "DFNet + NeFeS50"). ``pose_only=3``: direct SE(3) pose refinement (Adam, the original's).
``pose_only=4``: direct pose refinement by Levenberg-Marquardt on the paper's loss (this project, dm/refine_lm.py).
``refine_batch`` queries are refined together. Writes to ``<basedir>/<expname>/``: ``<scene>_test_gt.txt``,
``<APR>_<scene>_results.txt`` and ``<APR>_<scene>_NeFeS<opt_iter>_{APR_pose,pose_pose,LM_pose}_results.txt`` (N×12 rows, row-major 3x4
camera-to-world, APR frame), ``summary.json``, ``trajectories.png`` and ``error_cdf.png``.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from config.options import apply_num_threads, get_device, parse_args, save_config, setup_logging
from core.errors import cli_main

_logger = logging.getLogger("test_refinement")


@torch.no_grad()
def predict_all(apr, split, device) -> np.ndarray:
    """APR predictions (N, 3, 4), SVD-orthonormalised, in loader order."""
    from dm.refine_apr import predict
    apr.eval()
    return np.stack([predict(apr, split[i]["img"][None].to(device), True).double().cpu().numpy()
                     for i in range(len(split))])


def build_refiner(args, scene, apr, featnet, device, apr_poses: np.ndarray):
    """``refine(indices) -> [((3, 4) pose, info), ...]`` for the test queries ``indices`` (``pose_only`` 2, 3 or 4).

    NeFeS is loaded once. The queries of one call are refined together in one batch (the caller
    chooses how many: ``refine_batch``); each query's result does not depend on the others.
    """
    from dm.refine_apr import APRCopies, APRRefineSettings, RenderCamera, refine_with_apr_batch
    from dm.refine_lm import LMSettings, refine_pose_lm_batch
    from dm.refine_pose import PoseRefineSettings, refine_pose_batch
    from models.nefes import load_nefes
    if not args.ft_path:
        raise ValueError("pose_only=2/3/4 needs a NeFeS checkpoint: set ft_path")
    nefes, _ = load_nefes(args.ft_path, device, args)
    nefes.requires_grad_(False)   # frozen; modules stay in train mode (fusion BN on batch statistics)
    h, w, f = scene.render_size(args.tinyscale)
    cam = RenderCamera(h, w, f, scene.near, scene.far, scene.world_setup, args.N_samples, args.N_importance,
                       args.transient_at_test, args.chunk, args.netchunk)
    apr_s = APRRefineSettings(args.opt_iter, args.learning_rate, args.svd_reg, args.per_pixel, crop=args.refine_crop,
                              verification=not args.no_verification_step)
    pose_s = PoseRefineSettings(args.opt_iter, args.lr_r, args.lr_t, args.per_pixel)
    lm_s = LMSettings(args.opt_iter, crop=args.refine_crop, blur=tuple(args.lm_blur), lambda_init=args.lm_lambda)
    copies = APRCopies(apr)

    def refine(indices):
        items = [scene.test[int(i)] for i in indices]
        imgs = torch.stack([it["img"] for it in items]).to(device)
        hists = torch.stack([it["hist"] for it in items]).to(device)
        init = torch.as_tensor(apr_poses[list(indices)], dtype=torch.float32, device=device)
        with torch.no_grad():   # DFNet level-0 features: working size (2, 4), render size (3)
            targets = featnet.extract_features(imgs, (h, w) if args.pose_only == 3 else None)
        if args.pose_only == 2:
            return refine_with_apr_batch(copies, nefes, imgs, hists, targets, cam, apr_s)
        if args.pose_only == 3:
            return refine_pose_batch(init, nefes, hists, targets, cam, pose_s)
        return refine_pose_lm_batch(init, nefes, hists, targets, cam, lm_s)

    # one-time process cost kept out of the per-query timings: the first torch.optim optimizer
    # imports torch._dynamo (~1.4 s on CPU)
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    return refine


def refine_all(args, scene, apr, featnet, device, apr_poses: np.ndarray) -> tuple[np.ndarray, list, list]:
    """Refine every test query, ``refine_batch`` at a time; returns (poses (N,3,4), per-query info,
    per-query seconds: a batch's time shared equally by its queries)."""
    refine = build_refiner(args, scene, apr, featnet, device, apr_poses)
    n, B = len(scene.test), max(1, int(args.refine_batch))
    refined, infos, seconds = [], [], []
    bar = tqdm(total=n, desc=f"refining (pose_only={args.pose_only})")
    for start in range(0, n, B):
        idx = list(range(start, min(n, start + B)))
        t0 = time.perf_counter()
        results = refine(idx)
        dt = (time.perf_counter() - t0) / len(idx)
        for pose, info in results:
            refined.append(pose.double().cpu().numpy())
            infos.append(info)
            seconds.append(dt)
        bar.update(len(idx))
        bar.set_postfix(loss=f"{infos[-1]['losses'][0]:.3f}->{infos[-1]['losses'][-1]:.3f}", s=f"{dt:.2f}")
    bar.close()
    return np.stack(refined), infos, seconds


@cli_main
def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging()
    apply_num_threads(args)
    from dataset_loaders import load_scene
    from dm import metrics, plots
    from dm.direct_pose_model import load_APR_and_FeatureNet
    device = get_device(args.device)
    if args.pose_only not in (0, 2, 3, 4):
        raise ValueError(f"pose_only={args.pose_only}: expected 0 (APR only), 2 (APR + NeFeS), 3 (pose refinement) "
                         "or 4 (Levenberg-Marquardt pose refinement)")
    scene = load_scene(args)
    apr, featnet = load_APR_and_FeatureNet(args, device)
    expdir = Path(args.basedir) / args.expname
    save_config(args, expdir)
    name, tag = scene.name, apr.name
    gt = scene.test.poses
    metrics.save_pose_file(expdir / f"{name}_test_gt.txt", gt)
    apr_poses = predict_all(apr, scene.test, device)
    metrics.save_pose_file(expdir / f"{tag}_{name}_results.txt", apr_poses)
    summary = {"scene": name, "dataset_type": args.dataset_type, "device": str(device), "pose_only": args.pose_only,
               "n": len(gt), "apr": metrics.summarize(*metrics.pose_errors(apr_poses, gt))}
    print(metrics.format_summary(summary["apr"], name=f"{tag} (APR)"))
    if args.pose_only in (2, 3, 4):
        refined, infos, seconds = refine_all(args, scene, apr, featnet, device, apr_poses)
        kind = {2: "APR_pose", 3: "pose_pose", 4: "LM_pose"}[args.pose_only]
        out = expdir / f"{tag}_{name}_NeFeS{args.opt_iter}_{kind}_results.txt"
        metrics.save_pose_file(out, refined)
        errs = metrics.pose_errors(refined, gt)
        summary["refined"] = metrics.summarize(*errs)
        summary.update(seconds_per_query=float(np.mean(seconds)), seconds_per_query_median=float(np.median(seconds)),
                       refined_file=str(out),
                       reverted=int(sum(i.get("reverted", False) for i in infos)))
        print(metrics.format_summary(summary["refined"], name=f"{tag} + NeFeS{args.opt_iter}"))
        print(f"refinement: {np.mean(seconds):.2f} s per query on {device}; results -> {out}")
        plots.plot_trajectories(expdir / "trajectories.png", gt, APR=apr_poses, refined=refined)
        plots.plot_error_cdf(expdir / "error_cdf.png", APR=metrics.pose_errors(apr_poses, gt), refined=errs)
    (expdir / "summary.json").write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
