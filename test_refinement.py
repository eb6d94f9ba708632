#!/usr/bin/env python
"""Refine APR poses with NeFeS: ``python test_refinement.py --config config_<scene>_DFM.txt``.

``pose_only=0``: evaluate the APR alone. ``pose_only=2``: APR + NeFeS (fine-tune a copy of the APR per
query, the paper's "DFNet + NeFeS50"). ``pose_only=3``: direct SE(3) pose refinement.
Writes to ``<basedir>/<expname>/``: ``<scene>_test_gt.txt``, ``<APR>_<scene>_results.txt`` and
``<APR>_<scene>_NeFeS<opt_iter>_{APR_pose,pose_pose}_results.txt`` (N×12 rows, row-major 3x4
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
    """``refine(i) -> ((3, 4) pose, info)`` for test query ``i`` (``pose_only`` 2 or 3), NeFeS loaded once."""
    from dm.refine_apr import APRRefineSettings, RenderCamera, refine_with_apr
    from dm.refine_pose import PoseRefineSettings, refine_pose
    from models.nefes import load_nefes
    if not args.ft_path:
        raise ValueError("pose_only=2/3 needs a NeFeS checkpoint: set ft_path")
    nefes, _ = load_nefes(args.ft_path, device, args)
    nefes.requires_grad_(False)   # frozen; modules stay in train mode (fusion BN on batch statistics)
    h, w, f = scene.render_size(args.tinyscale)
    cam = RenderCamera(h, w, f, scene.near, scene.far, scene.world_setup, args.N_samples, args.N_importance,
                       args.transient_at_test, args.chunk, args.netchunk)
    apr_s = APRRefineSettings(args.opt_iter, args.learning_rate, args.svd_reg, args.per_pixel, crop=args.refine_crop,
                              verification=not args.no_verification_step)
    pose_s = PoseRefineSettings(args.opt_iter, args.lr_r, args.lr_t, args.per_pixel)

    def refine(i: int):
        item = scene.test[i]
        img, hist = item["img"][None].to(device), item["hist"].to(device)
        if args.pose_only == 2:
            with torch.no_grad():
                target = featnet.extract_features(img)                         # (1, 128, H, W)
            return refine_with_apr(apr, nefes, img, hist, target, cam, apr_s)
        with torch.no_grad():
            target = featnet.extract_features(img, (h, w))                     # (1, 128, h, w)
        init = torch.as_tensor(apr_poses[i], dtype=torch.float32, device=device)
        return refine_pose(init, nefes, hist, target, cam, pose_s)

    # one-time process cost kept out of the per-query timings: the first torch.optim optimizer
    # imports torch._dynamo (~1.4 s on CPU)
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    return refine


def refine_all(args, scene, apr, featnet, device, apr_poses: np.ndarray) -> tuple[np.ndarray, list, list]:
    """Refine every test query; returns (poses (N,3,4), per-query info, per-query seconds)."""
    refine = build_refiner(args, scene, apr, featnet, device, apr_poses)
    refined, infos, seconds = [], [], []
    bar = tqdm(range(len(scene.test)), desc=f"refining (pose_only={args.pose_only})")
    for i in bar:
        t0 = time.perf_counter()
        pose, info = refine(i)
        seconds.append(time.perf_counter() - t0)
        refined.append(pose.double().cpu().numpy())
        infos.append(info)
        bar.set_postfix(loss=f"{info['losses'][0]:.3f}->{info['losses'][-1]:.3f}", s=f"{seconds[-1]:.2f}")
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
    if args.pose_only not in (0, 2, 3):
        raise ValueError(f"pose_only={args.pose_only}: expected 0 (APR only), 2 (APR + NeFeS) or 3 (pose refinement)")
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
    if args.pose_only in (2, 3):
        refined, infos, seconds = refine_all(args, scene, apr, featnet, device, apr_poses)
        kind = "APR_pose" if args.pose_only == 2 else "pose_pose"
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
