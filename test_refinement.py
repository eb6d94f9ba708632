#!/usr/bin/env python
"""Refine APR poses with NeFeS: ``python test_refinement.py --config config_<scene>_DFM.txt``.

``pose_only=0``: evaluate the APR alone. ``pose_only=2``: APR + NeFeS (fine-tune a copy of the APR per
query, the paper's "DFNet + NeFeS50"). ``pose_only=3``: direct SE(3) pose refinement (Adam, the original's).
``pose_only=4``: direct pose refinement by Levenberg-Marquardt on the paper's loss (this project, dm/refine_lm.py).
``refine_batch`` queries are refined together. Writes to ``<basedir>/<expname>/``: ``<scene>_test_gt.txt``,
``<scene>_test_frames.txt``, ``<APR>_<scene>_results.txt`` and
``<APR>_<scene>_NeFeS<opt_iter>_{APR_pose,pose_pose,LM_pose}_results.txt`` (N×12 rows, row-major 3x4
camera-to-world, APR frame), ``summary.json``, ``trajectories.png``, ``error_cdf.png`` and ``previews.png``,
all at the end. Finished queries are journalled under ``journal/``: rerunning the same command resumes.
``torchrun --nproc_per_node=N test_refinement.py ...`` shards the queries (docs/refinement_runs.md; the job
itself: :mod:`dm.refine_run`).
"""
from __future__ import annotations

import dataclasses
import logging
import sys

import numpy as np
import torch

from config.options import parse_args, setup_logging
from core.errors import cli_main

_logger = logging.getLogger("test_refinement")


@torch.no_grad()
def predict_all(apr, split, device, indices=None) -> np.ndarray:
    """APR predictions (len(indices), 3, 4) (default: every query), SVD-orthonormalised, in loader order."""
    from dm.refine_apr import predict
    apr.eval()
    indices = range(len(split)) if indices is None else indices
    return np.stack([predict(apr, split[i]["img"][None].to(device), True).double().cpu().numpy()
                     for i in indices])


def build_refiner(args, scene, apr, featnet, device, apr_poses: np.ndarray):
    """``refine(indices) -> [((3, 4) pose, info), ...]`` for the test queries ``indices`` (``pose_only`` 2, 3 or 4).

    NeFeS is loaded once. The queries of one call are refined together in one batch (the caller
    chooses how many: ``refine_batch``); each query's result does not depend on the others.
    """
    from dm.refine_apr import APRCopies, APRRefineSettings, RenderCamera, refine_with_apr_batch
    from dm.refine_lm import LMSettings, refine_pose_lm_batch
    from dm.refine_loss import ColorResidual
    from dm.refine_pose import PoseRefineSettings, refine_pose_batch
    from models import hashgrid_cpu
    from models.hashgrid import HashGridEncoding
    from models.nefes import load_nefes
    if not args.ft_path:
        raise ValueError("pose_only=2/3/4 needs a NeFeS checkpoint: set ft_path")
    nefes, _ = load_nefes(args.ft_path, device, args)
    nefes.requires_grad_(False)   # frozen; modules stay in train mode (fusion BN on batch statistics)
    if torch.device(device).type == "cpu" and any(isinstance(m, HashGridEncoding) for m in nefes.modules()):
        hashgrid_cpu.get()   # build / load the fused kernel now, not inside the first query's time (~30 s once)
    cam = RenderCamera.for_scene(args, scene)
    # the polish may render more fine samples than the paper's mode (it renders colour only, without autograd)
    polish_cam = dataclasses.replace(cam, N_importance=args.lm_polish_N_importance) \
        if args.lm_polish_N_importance > 0 else cam
    if args.lm_polish_tinyscale > 0:        # ... and at another size (more pixels: a finer photometric objective)
        h, w, f = scene.render_size(args.lm_polish_tinyscale)
        polish_cam = dataclasses.replace(polish_cam, h=h, w=w, focal=f)
    apr_s = APRRefineSettings(args.opt_iter, args.learning_rate, args.svd_reg, args.per_pixel, crop=args.refine_crop,
                              verification=not args.no_verification_step)
    pose_s = PoseRefineSettings(args.opt_iter, args.lr_r, args.lr_t, args.per_pixel)
    lm_s = LMSettings(args.opt_iter, crop=args.refine_crop, blur=tuple(args.lm_blur), lambda_init=args.lm_lambda,
                      feature=args.lm_feature, color=args.lm_color, jacobian=args.lm_jacobian)
    copies = APRCopies(apr)

    def refine(indices):
        items = [scene.test[int(i)] for i in indices]
        imgs = torch.stack([it["img"] for it in items]).to(device)
        hists = torch.stack([it["hist"] for it in items]).to(device)
        init = torch.as_tensor(apr_poses[list(indices)], dtype=torch.float32, device=device)
        with torch.no_grad():   # DFNet level-0 features: working size (2, 4), render size (3)
            targets = featnet.extract_features(imgs, (cam.h, cam.w) if args.pose_only == 3 else None)
        if args.pose_only == 2:
            out = refine_with_apr_batch(copies, nefes, imgs, hists, targets, cam, apr_s)
        elif args.pose_only == 3:
            out = refine_pose_batch(init, nefes, hists, targets, cam, pose_s)
        else:
            out = refine_pose_lm_batch(init, nefes, hists, targets, cam, lm_s, images=imgs)
        return polish(out, init, imgs, hists, targets) if args.lm_polish > 0 else out

    def polish(results, init, imgs, hists, targets):
        """``lm_polish``: photometric Levenberg-Marquardt from each refined pose (this project); with
        ``lm_polish_start`` also from the initial pose, keeping per query the lower final loss."""
        poses = torch.stack([p for p, _ in results]).to(device)
        B, k = len(results), 2 if args.lm_polish_start else 1
        s = LMSettings(args.lm_polish, crop=args.refine_crop, lambda_init=args.lm_lambda, feature=0.0, color=1.0,
                       jacobian=args.lm_jacobian)
        starts = torch.cat([poses, init.to(poses)][:k])                 # hypothesis i of query b: row b + i * B
        polished = refine_pose_lm_batch(starts, nefes, torch.cat([hists] * k), torch.cat([targets] * k), polish_cam, s,
                                        images=torch.cat([imgs] * k))
        out = []
        for b, (_, info) in enumerate(results):
            j = min((b + i * B for i in range(k)), key=lambda j: polished[j][1]["losses"][-1])
            pose, info2 = polished[j]
            out.append((pose, {**info, "polish_losses": info2["losses"], "polish_steps": info2["steps"],
                               "render_psnr": ColorResidual.psnr(info2["losses"][-1]),   # at the render size, cropped
                               "polish_from": "refined" if j < B else "start"}))
        return out

    # one-time process cost kept out of the per-query timings: the first torch.optim optimizer
    # imports torch._dynamo (~1.4 s on CPU)
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    refine.nefes, refine.cam = nefes, cam   # for previews.png (dm.previews renders a few queries at the end)
    refine.polish_cam = polish_cam          # the photometric objective's renders (bench.basin scores poses with it)
    return refine


@cli_main
def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging()
    from dm import distributed, refine_run
    try:
        dist = distributed.from_env()
    except distributed.DistributedError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not dist.is_main:   # one set of progress and info lines per job; warnings from every rank
        logging.getLogger().setLevel(logging.WARNING)
    try:
        return refine_run.run(args, dist, build_refiner, predict_all)
    except refine_run.StopRun as e:   # a set-up error on some rank: every rank stops, rank 0 says why
        if e.message:
            print(f"error: {e.message}", file=sys.stderr)
        return 2
    except refine_run.USER_ERRORS as e:
        print(f"error: {e}" if dist.world_size == 1 else f"error: rank {dist.rank}: {e}", file=sys.stderr)
        return 2
    finally:
        dist.close()


if __name__ == "__main__":
    sys.exit(main())
