#!/usr/bin/env python
"""Train NeFeS on one scene: ``python run_nefes.py --config CFG``.

``new_schedule=1``: stage 1 (colour only). ``new_schedule=2``: stages 2+3 from ``ft_path``.
Rerunning an interrupted run resumes from its own last checkpoint (``--no_reload`` starts over);
Ctrl-C / SIGTERM keep the last completed epoch in ``interrupted.tar`` (see ``models/trainer.py``).
``--render_test``: render the train/test views of the last checkpoint and print PSNR/SSIM.
"""
from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

from config.options import apply_num_threads, get_device, parse_args, save_config, setup_logging
from core.errors import EXIT_INTERRUPTED, TrainingError, cli_main

_logger = logging.getLogger("run_nefes")


def load_feature_extractor(args, device):
    """Frozen DFNet for the feature targets; seeded random init (with a warning) when no checkpoint is given."""
    from models.dfnet import frozen_dfnet
    if not args.pretrain_featurenet_path:
        _logger.warning("no pretrain_featurenet_path: using a RANDOMLY INITIALISED DFNet (width %g) as feature "
                        "extractor; train one with train_dfnet.py for meaningful features", args.dfnet_width)
    return frozen_dfnet(args.pretrain_featurenet_path, device, width=args.dfnet_width, seed=args.seed,
                        trust=args.trust_checkpoint)


def render_test(args, scene, device, expdir: Path) -> None:
    """Render every 10th training view and all test views of the last checkpoint; print PSNR/SSIM."""
    from models.nefes import load_nefes
    from models.trainer import build_targets, latest_checkpoint, render_views
    ckpt = latest_checkpoint(expdir) or (Path(args.ft_path) if args.ft_path else None)
    if ckpt is None:
        raise TrainingError(f"no checkpoint in {expdir} and no ft_path to render")
    model, meta = load_nefes(ckpt, device, args)
    model.eval()
    out = expdir / f"render_test_{int(meta.get('global_step', 0)):06d}"
    for name, split in (("train", scene.train), ("test", scene.test)):
        t = build_targets(split, scene, args.tinyscale, None, device)
        if name == "train":
            keep = list(range(0, len(t.c2w_nerf), 10))
            t.c2w_nerf, t.hists, t.rgb = t.c2w_nerf[keep], t.hists[keep], t.rgb[keep]
        res = render_views(model, t, args, out / name, fuse=True, desc=f"render {name}")
        print(f"{name}: PSNR {res['psnr']:.2f} dB  SSIM {res['ssim']:.3f}  ({res['n']} views) -> {out / name}")


@cli_main
def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging()
    apply_num_threads(args)
    from dataset_loaders import load_scene
    from dataset_loaders.scene import save_pose_avg_stats
    from models.trainer import check_resume_identity, train
    device = get_device(args.device)
    try:
        if args.save_pose_avg_stats:
            print(f"wrote {save_pose_avg_stats(args)}")
            return 0
        scene = load_scene(args)
        _logger.info("%s", scene.summary())
        expdir = Path(args.basedir) / args.expname
        if args.render_test:
            render_test(args, scene, device, expdir)
            return 0
        check_resume_identity(args, scene, expdir)
        save_config(args, expdir)
        featnet = load_feature_extractor(args, device) if (args.new_schedule == 2 or not args.stage1_color_only) else None
        result = train(args, scene, featnet, device, expdir)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume from the last completed epoch", file=sys.stderr)
        return EXIT_INTERRUPTED
    if result:
        print(f"final validation: PSNR {result['psnr']:.2f} dB, SSIM {result['ssim']:.3f} ({result['n']} views)")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)   # SIGTERM also saves and exits cleanly
    sys.exit(main())
