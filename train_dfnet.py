"""Train the DFNet APR + feature extractor, rendering with a stage-1 NeFeS (spec §2.1).

    python train_dfnet.py --config CFG [--ft_path logs/<exp>/<nefes checkpoint>]

Reads the scene with the project's loaders (APR-frame poses), renders the training poses and the
random views with the NeFeS from ``ft_path`` (APR -> NeRF frame, render at working size / tinyscale,
ACT colour, bilinear upsampling to the working size) and runs :func:`models.dfnet_training.train_dfnet`.
Validation (early stopping, best model) uses the test split, as the original DFNet training did.

Writes ``<basedir>/<expname>/dfnet_best.pt`` (use it as ``pretrain_model_path`` and
``pretrain_featurenet_path``), ``dfnet_last.tar`` (resume: re-run the same command), ``val_log.txt``. Interrupts are safe: checkpoints
are written only at the end of an epoch (atomically), so Ctrl-C / SIGTERM loses the unfinished epoch and
nothing else, and the resumed run reproduces the uninterrupted one (seeded per epoch).
With ``combine_loss_w 1 0 0`` and ``rvs_loss_w 0`` no renderer is needed (plain pose regression).
"""
from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from config.options import apply_num_threads, get_device, parse_args, save_config, setup_logging
from core.errors import EXIT_INTERRUPTED, TrainingError, cli_main
from core.frames import apr_to_nerf
from models.dfnet import DFNet
from models.dfnet_training import (DFNetTrainConfig, DFNetTrainData, RenderFn, check_resume_identity, train_dfnet,
                                   translation_scale)

_logger = logging.getLogger("train_dfnet")


def make_nefes_render_fn(model, scene, args, device) -> RenderFn:
    """``render_fn(c2w_apr (B,3,4), hist (B,10)) -> (B,3,H,W)`` in [0, 1] at the working size."""
    from models.renderer import render_image  # lazy: only needed when views are rendered

    h, w, focal = scene.render_size(args.tinyscale)
    H, W = scene.H, scene.W
    model.eval()

    @torch.no_grad()
    def render(c2w_apr: torch.Tensor, hist: torch.Tensor) -> torch.Tensor:
        c2w_nerf = apr_to_nerf(c2w_apr.to(device=device, dtype=torch.float32), scene.world_setup)
        out = render_image(model, c2w_nerf, h, w, focal, scene.near, scene.far, hist.to(device), fuse=False,
                           N_samples=args.N_samples, N_importance=args.N_importance,
                           transient=args.transient_at_test, chunk=args.chunk, netchunk=args.netchunk)
        rgb = out["rgb"]  # (B, 3, h, w) after the ACT
        if (h, w) != (H, W):
            rgb = F.interpolate(rgb, size=(H, W), mode="bilinear", align_corners=False)
        return rgb.clamp(0, 1)

    return render


def _scene_data(scene) -> DFNetTrainData:
    as_t = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    return DFNetTrainData(scene.train.images(), as_t(scene.train.poses), as_t(scene.train.hists),
                          scene.test.images(), as_t(scene.test.poses))


def run(args) -> dict:
    device = get_device(args.device)
    torch.manual_seed(args.seed)
    cfg = DFNetTrainConfig.from_args(args)
    if cfg.learning_rate < 1e-4:  # the shared key defaults to the refinement value (1e-5)
        _logger.warning("learning_rate=%g is low for DFNet training (the original used 1e-4; slim CPU nets 5e-4..1e-3)",
                        cfg.learning_rate)
    out_dir = Path(args.basedir) / args.expname
    from dataset_loaders import load_scene  # lazy: the loaders are a separate module family
    scene = load_scene(args)
    identity = {"scene": str(getattr(scene, "name", "")), "dataset_type": str(args.dataset_type), "df": float(args.df),
                "dfnet_width": float(args.dfnet_width)}
    if not args.no_reload:
        check_resume_identity(out_dir, identity)   # before args.txt is rewritten
    save_config(args, out_dir)
    data = _scene_data(scene)
    if args.pose_loss_t_scale == "auto":
        cfg.t_scale = translation_scale(data.train_poses)
        _logger.info("pose loss: translation in units of %.3f m (RMS distance of the training cameras from their centroid)",
                     cfg.t_scale)
    _logger.info("DFNet training on %d frames (%dx%d), validating on %d", len(data.train_images),
                 scene.H, scene.W, len(data.val_images))

    render_fn = None
    if cfg.uses_renders or cfg.rvs_loss_w > 0:
        if not args.ft_path or not Path(args.ft_path).is_file():
            raise TrainingError(f"ft_path='{args.ft_path or ''}': a stage-1 NeFeS checkpoint is needed to render "
                             "training views (or train without renders: --combine_loss_w 1 0 0 --rvs_loss_w 0)")
        from models.nefes import load_nefes
        nefes, _ = load_nefes(args.ft_path, device, args)
        render_fn = make_nefes_render_fn(nefes, scene, args, device)

    net = DFNet(width=args.dfnet_width, imagenet_init=args.imagenet_init)
    res = train_dfnet(net, data, render_fn, cfg, out_dir, device=device, identity=identity, resume=not args.no_reload)
    b = res["best_val"]
    print(f"DFNet: best epoch {res['best_epoch']} of {res['epochs_run']}: median "
          f"{b.get('median_t', float('nan')):.3f} m / {b.get('median_r', float('nan')):.2f} deg"
          + (f" ({res['stopped']})" if res["stopped"] else ""))
    print(f"use --pretrain_model_path {res['best_path']} --pretrain_featurenet_path {res['best_path']}")
    return res


@cli_main
def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging()
    apply_num_threads(args)
    try:
        run(args)
    except KeyboardInterrupt:
        print("interrupted: re-run the same command to resume from the last checkpoint", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)   # SIGTERM stops like Ctrl-C
    sys.exit(main())
