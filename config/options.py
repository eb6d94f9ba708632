"""The one configuration parser for every script (training, refinement, evaluation, tools).

Config files are the original's configargparse text files: ``key=value`` lines, ``#`` comments
(also inline), ``True``/``False`` for flags. The original NeFeS configs run unchanged:

* keys of the original that have no effect here (``num_workers``, ``dfnet``, ``NeRFW``, ...) are accepted
  (:data:`LEGACY_KEYS`); one warning per key names it when it is set to anything but its silent value
  (the value the original configs use), and the key is dropped from the namespace so nothing can read it;
* an unknown key in a config file gets a warning naming it and the nearest known key ("did you mean
  learning_rate?"); ``--strict_config`` makes it an error (the demo and the tests run strict); a typo on
  the command line is always an error;
* a value of the wrong type is an error naming the key and the value;
* relative paths written for the original's ``script/`` working directory (``../data/...``,
  ``../logs``) are resolved against the repository root when run from there (see :func:`resolve_path`).

Defaults shared with code that runs without the parser (hash grid, chunk sizes, ``svd_reg``) come from
``core/defaults.py``. Bad values raise :class:`core.errors.ConfigError`; the entry points print one line.
"""
from __future__ import annotations

import argparse
import difflib
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import configargparse

from core import defaults
from core.errors import ConfigError

_logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent

DATASET_TYPES = ("7Scenes", "7Scenes_colmap", "Cambridge")
FIELD_TYPES = ("auto", "hashgrid", "nefes_mlp")


def _bool(v) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("1", "true", "yes", "y", "on"):
        return True
    if s in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {v!r}")


def _t_scale(v) -> str:
    """``pose_loss_t_scale``: 'auto' or a positive number of metres (kept as text; resolved by the trainer)."""
    s = str(v).strip().lower()
    if s == "auto":
        return s
    try:
        ok = float(s) > 0
    except ValueError:
        ok = False
    if not ok:
        raise argparse.ArgumentTypeError(f"expected auto or a positive number of metres, got {v!r}")
    return s


@dataclass(frozen=True)
class Legacy:
    """A key of the original that is accepted and has no effect here.

    ``silent``: the value at which no warning is logged (what the original configs use); ``why``: shown
    in ``--help`` and in the warning (keys without one are hidden from ``--help``).
    """
    silent: object = None
    type: object = str
    nargs: str | None = "?"
    why: str = ""


_FLAG = dict(type=_bool, nargs="?")
#: Every legacy key: the one mechanism for "accepted for compatibility, no effect".
LEGACY_KEYS: dict[str, Legacy] = {
    "val_batch_size": Legacy(1, int, None, "validation renders one view at a time"),
    "num_workers": Legacy(0, int, None, "there is no DataLoader: images are decoded once by a thread pool and "
                                        "training batches are drawn from tensors in memory"),
    "i_embed": Legacy(0, int, None, "field_type chooses the field and its encoding"),
    "use_viewdirs": Legacy(True, why="colour is always view-dependent", **_FLAG),
    "white_bkgd": Legacy(False, why="scenes have no background to whiten", **_FLAG),
    "color_feat_fusion_nerfw_loss": Legacy(True, why="the NeRF-W colour + L1 feature + fusion losses are the only "
                                                     "losses implemented", **_FLAG),
    "dfnet": Legacy(True, why="feature targets always come from a DFNet", **_FLAG),
    "model_name": Legacy("DFM_NFF_APR", nargs=None, why="the experiment family of the original"),
    "feature_matching_lvl": Legacy([0], int, "*", "refinement matches DFNet level 0, as the paper"),
    "eval": Legacy(False, why="test_refinement.py always evaluates", **_FLAG),
    **{key: Legacy() for key in (   # dead options and CUDA-only switches of the original code base
        "fff", "tcnn", "ffmlp", "multi_gpu", "feature_dim", "in_channels_a", "in_channels_t", "N_vocab",
        "NeRFW", "nerfh_nff", "encode_hist", "sh_tcnn", "sh_nff", "ngp_nefes", "nerfh_nff2", "NFF",
        "reduce_embedding", "use_sv", "n_blocks", "min_feat", "tvloss", "depth", "l1normloss",
        "sigma_sparsity_loss", "encode_appearance", "bound", "train_local_nerf", "render_video",
        "render_factor", "frame_idx", "no_grad_update", "lietorch", "i_embed_views", "netdepth_fine",
        "netwidth_fine", "use_fine_only", "epochToMaxFreq", "DFNet", "random_view_synthesis")},
}


def _add_legacy(g, key: str, spec: Legacy) -> None:
    kw = dict(type=spec.type, default=spec.silent)
    if spec.nargs is not None:
        kw["nargs"] = spec.nargs
    if spec.nargs == "?":
        kw["const"] = True if spec.type is _bool else "True"
    g.add_argument(f"--{key}", **kw, help=f"no effect: {spec.why}" if spec.why else argparse.SUPPRESS)


def warn_legacy(args: argparse.Namespace) -> None:
    """One warning per legacy key set to a non-silent value; then the key leaves the namespace."""
    for key, spec in LEGACY_KEYS.items():
        if not hasattr(args, key):
            continue
        if getattr(args, key) != spec.silent:
            why = f" ({spec.why})" if spec.why else ""
            _logger.warning("'%s' is accepted for compatibility with the original configs and has no effect%s",
                            key, why)
        delattr(args, key)


class _Parser(configargparse.ArgumentParser):
    """Errors as one line naming the key (the full usage of ~100 options hides the problem)."""

    def error(self, message):
        self.exit(2, f"error: {message} (see --help)\n")


def config_parser() -> configargparse.ArgumentParser:
    p = _Parser(
        description="nefes: NeFeS training, APR training and pose refinement",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        config_file_parser_class=configargparse.DefaultConfigFileParser,
    )
    p.add_argument("--config", is_config_file=True, help="config file path (key=value lines)")

    g = p.add_argument_group("general")
    g.add_argument("--expname", type=str, default="nefes_exp", help="experiment name (log sub-folder)")
    g.add_argument("--basedir", type=str, default="./logs", help="where logs and checkpoints are stored")
    g.add_argument("--device", type=str, default="auto", help="'auto' (cuda if available, else cpu), 'cpu', 'cuda', 'cuda:1', ...")
    g.add_argument("--seed", type=int, default=0, help="base random seed")
    g.add_argument("--num_threads", type=int, default=0, help="torch CPU threads (0: torch default; under torchrun: the cores divided by the ranks on this machine)")
    g.add_argument("--strict_config", type=_bool, nargs="?", const=True, default=False,
                   help="an unknown key in the config file is an error (default: a warning, so the original's configs keep working)")
    g.add_argument("--trust_checkpoint", type=_bool, nargs="?", const=True, default=False,
                   help="load checkpoints that hold Python objects beyond tensors (they can run code: only files from a source you trust)")

    g = p.add_argument_group("data")
    g.add_argument("--datadir", type=str, default=None, help="scene folder (meta files; images too, or under ../deepslam_data)")
    g.add_argument("--dataset_type", type=str, default="7Scenes_colmap", choices=DATASET_TYPES, help="dataset layout / ground truth")
    g.add_argument("--df", type=float, default=1.0, help="image down-scale factor (working size = raw size // df)")
    g.add_argument("--trainskip", type=int, default=1, help="keep every n-th training frame")
    g.add_argument("--testskip", type=int, default=1, help="keep every n-th test frame")
    g.add_argument("--load_pose_avg_stats", type=_bool, nargs="?", const=True, default=False, help="use the shipped pose_avg_stats file")
    g.add_argument("--save_pose_avg_stats", type=_bool, nargs="?", const=True, default=False, help="write pose_avg_stats from the training poses, then exit")
    g.add_argument("--semantic", type=_bool, nargs="?", const=True, default=False, help="Cambridge: restrict NeFeS losses to static pixels (semantic masks)")
    g.add_argument("--hist_bin", type=int, default=10, help="luminance histogram bins (only 10 is supported by the ACT)")
    g.add_argument("--set_near_far", type=_bool, nargs="?", const=True, default=False, help="override near/far with --near_far")
    g.add_argument("--near_far", type=float, nargs=2, default=[0.5, 2.5], help="near and far bounds (NeRF units)")
    g.add_argument("--focal", type=float, default=None, help="override the focal length (pixels, at the raw image size)")
    g.add_argument("--batch_size", type=int, default=4, help="images per training iteration")
    g.add_argument("--meta_dir", type=str, default=None, help="where computed world_setup.json / pose_avg_stats go when datadir has none (default: datadir)")
    g.add_argument("--cache_images", type=_bool, nargs="?", const=True, default=True, help="keep decoded working-size images in memory (uint16, 6 bytes/pixel) after first use")

    g = p.add_argument_group("NeFeS field and renderer")
    g.add_argument("--field_type", type=str, default="hashgrid", choices=FIELD_TYPES,
                   help="hashgrid (fast, default for new scenes) or nefes_mlp (the paper's released architecture); checkpoints are detected automatically")
    g.add_argument("--netdepth", type=int, default=8, help="nefes_mlp: trunk layers")
    g.add_argument("--netwidth", type=int, default=128, help="nefes_mlp: trunk width")
    g.add_argument("--multires", type=int, default=10, help="nefes_mlp: log2 of max position frequency")
    g.add_argument("--multires_views", type=int, default=4, help="log2 of max view-direction frequency")
    hg = defaults.HASHGRID
    g.add_argument("--hash_level", type=int, default=hg["hash_level"], help="hashgrid: number of levels")
    g.add_argument("--hash_features", type=int, default=hg["hash_features"], help="hashgrid: features per level")
    g.add_argument("--log2_hashmap_size", type=int, default=hg["log2_hashmap_size"], help="hashgrid: log2 of the table size per level")
    g.add_argument("--base_resolution", type=int, default=hg["base_resolution"], help="hashgrid: coarsest grid resolution")
    g.add_argument("--finest_resolution", type=int, default=hg["finest_resolution"], help="hashgrid: finest grid resolution")
    g.add_argument("--hg_hidden", type=int, default=hg["hg_hidden"], help="hashgrid: width of the MLP heads")
    g.add_argument("--use_tcnn", type=str, default="auto", choices=("auto", "never", "always"), help="use tiny-cuda-nn for the hash grid when it imports and the device is CUDA")
    g.add_argument("--hg_geo_dim", type=int, default=hg["hg_geo_dim"], help="hashgrid: geometry feature width passed from the density MLP to the colour/feature branches")
    g.add_argument("--hg_coarse_level", type=int, default=hg["hg_coarse_level"], help="hashgrid: levels of the (density-oriented) coarse grid")
    g.add_argument("--hg_coarse_log2_hashmap_size", type=int, default=hg["hg_coarse_log2_hashmap_size"], help="hashgrid: log2 table size per level of the coarse grid")
    g.add_argument("--hg_coarse_finest_resolution", type=int, default=hg["hg_coarse_finest_resolution"], help="hashgrid: finest resolution of the coarse grid")
    g.add_argument("--hg_coarse_hidden", type=int, default=hg["hg_coarse_hidden"], help="hashgrid: MLP width of the coarse field")
    g.add_argument("--hg_fine_only", type=_bool, nargs="?", const=True, default=True, help="hashgrid: the fine field renders the N_importance samples only (not the union with the coarse samples); stored in the checkpoint")
    g.add_argument("--pixel_center", type=float, default=0.0, help="where a pixel's ray passes, in pixels from its integer coordinate: 0 (the original) or 0.5 (the pixel centre of a downsampled image; this project, models/rays.py); a new field stores it in its checkpoints, which then decide")
    g.add_argument("--N_samples", type=int, default=64, help="coarse samples per ray")
    g.add_argument("--N_importance", type=int, default=64, help="extra fine samples per ray (inverse CDF)")
    g.add_argument("--perturb", type=float, default=1.0, help="stratified sampling jitter during training (0 or 1)")
    g.add_argument("--raw_noise_std", type=float, default=0.0, help="density noise during training")
    g.add_argument("--distortion_loss_w", type=float, default=0.0, help="NeFeS training: weight of mip-NeRF 360's distortion loss on both fields' ray weights (against floaters; 0: off, as the original; this project)")
    g.add_argument("--sparse_depth_w", type=float, default=0.0, help="NeFeS training: weight of a depth loss on SIFT keypoints of the training views triangulated at their known poses (core/triangulation.py; 0: off, as the original; this project)")
    g.add_argument("--sparse_depth_rays", type=int, default=64, help="with sparse_depth_w: keypoint rays per training image and iteration")
    g.add_argument("--lindisp", type=_bool, nargs="?", const=True, default=False, help="sample linearly in inverse depth")
    g.add_argument("--chunk", type=int, default=defaults.CHUNK, help="rays per rendering chunk (memory only)")
    g.add_argument("--netchunk", type=int, default=defaults.NETCHUNK, help="points per network chunk (memory only)")
    g.add_argument("--tinyscale", type=float, default=4.0, help="NeFeS renders at working size / tinyscale")
    g.add_argument("--transient_at_test", type=_bool, nargs="?", const=True, default=False, help="keep the transient branch when rendering at test time")
    g.add_argument("--use_fusion_res", type=_bool, nargs="?", const=True, default=False, help="fusion CNN adds the rendered features as a residual")
    g.add_argument("--no_fusion_BN", type=_bool, nargs="?", const=True, default=False, help="fusion CNN without the final BatchNorm")

    g = p.add_argument_group("NeFeS training (run_nefes.py)")
    g.add_argument("--epochs", type=int, default=600, help="epochs per stage run")
    g.add_argument("--N_rand", type=int, default=1536, help="random rays per image (random-ray mode)")
    g.add_argument("--lrate", type=float, default=5e-4, help="NeFeS learning rate")
    g.add_argument("--lrate_decay", type=float, default=0.754, help="LR decays x0.1 every lrate_decay*1000 epochs")
    g.add_argument("--new_schedule", type=int, default=1, help="1: stage-1 run (colour only); 2: stages 2+3 (feature, then fusion)")
    g.add_argument("--ft_path", type=str, default=None, help="checkpoint to start from (stage 2: the stage-1 checkpoint)")
    g.add_argument("--no_reload", type=_bool, nargs="?", const=True, default=False, help="start over, ignoring existing checkpoints")
    g.add_argument("--i_weights", type=int, default=200, help="checkpoint every n epochs")
    g.add_argument("--i_testset", type=int, default=200, help="validation renders every n epochs")
    g.add_argument("--i_print", type=int, default=10, help="log every n epochs")
    g.add_argument("--render_test", type=_bool, nargs="?", const=True, default=False, help="render train/test views from a checkpoint and exit")
    g.add_argument("--pretrain_featurenet_path", type=str, default="", help="DFNet feature-extractor checkpoint (.pt)")
    g.add_argument("--epoch_to_fusion", type=int, default=None, help="stage-2 run: epoch at which patch/fusion training starts (default 200, as the original)")
    g.add_argument("--stage1_color_only", type=_bool, nargs="?", const=True, default=False,
                   help="stage-1 run ends after epoch epochs-1 (the original runs one more epoch that adds 0.04*L_feat)")
    g.add_argument("--per_image_patches", type=_bool, nargs="?", const=True, default=False,
                   help="stage 3: draw patch positions per image (the original shares them across the batch)")

    g = p.add_argument_group("DFNet / APR")
    g.add_argument("--pretrain_model_path", type=str, default="", help="APR checkpoint (.pt)")
    g.add_argument("--PoseEstimatorType", type=str, default="DFNet", help="APR registered in dm/direct_pose_model.py")
    g.add_argument("--dfnet_width", "--width", type=float, default=1.0, help="DFNet channel multiplier (1.0 = the paper's VGG16)")
    g.add_argument("--imagenet_init", type=_bool, nargs="?", const=True, default=False, help="initialise VGG16 from ImageNet weights found in the local torch cache")
    g.add_argument("--resnet34", type=_bool, nargs="?", const=True, default=False, help="PoseNet APR with a ResNet34 backbone")
    g.add_argument("--efficientnet", type=_bool, nargs="?", const=True, default=False, help="PoseNet APR with an EfficientNet-B3 backbone")
    g.add_argument("--combine_loss_w", type=float, nargs=3, default=[1.0, 1.0, 1.0], help="DFNet training weights: real pose, rendered pose, triplet feature")
    g.add_argument("--rvs_refresh_rate", type=int, default=20, help="re-render random view synthesis poses every n epochs")
    g.add_argument("--rvs_trans", type=float, default=5.0, help="random view synthesis: max translation jitter (m)")
    g.add_argument("--rvs_rotation", type=float, default=1.2, help="random view synthesis: max rotation jitter (deg)")
    g.add_argument("--d_max", type=float, default=1.0, help="random view synthesis: bbox margin (m)")
    g.add_argument("--patience", type=int, nargs=2, default=[200, 50], help="early stopping and LR-plateau patience (epochs)")
    g.add_argument("--rvs_loss_w", type=float, default=1.0, help="DFNet training: weight of the random-view-synthesis pose loss (0: no RVS rendering)")
    g.add_argument("--rvs_count", type=int, default=0, help="random views rendered per refresh (0: as many as training frames)")
    g.add_argument("--triplet_levels", type=int, nargs="*", default=[0, 1, 2], help="DFNet feature levels in the triplet loss (NeFeS uses level 0; fewer levels train faster)")
    g.add_argument("--triplet_crop", type=int, nargs=2, default=[0, 0], help="DFNet training: triplet loss on a random HxW feature window per batch (0 0: full image; the level-0 head at full resolution dominates CPU cost)")
    g.add_argument("--dfnet_val_every", type=int, default=1, help="DFNet training: validate (LR plateau, early stopping, best model) every n epochs")
    g.add_argument("--dfnet_save_every", type=int, default=1, help="DFNet training: write the resume checkpoint every n epochs")
    g.add_argument("--pose_loss_t_scale", type=_t_scale, default="1", help="DFNet training: translation errors are divided by this (metres) in the pose MSE; 1: the original's loss in metres; auto: the RMS distance of the training cameras from their centroid (rotation and translation weigh alike on any scene size)")
    g.add_argument("--dfnet_lr_schedule", type=str, default="plateau", choices=("plateau", "cosine"), help="DFNet training: plateau (the original's ReduceLROnPlateau) or cosine (decay to 1 %% of learning_rate over epochs: a settled model from a short fixed budget)")
    g.add_argument("--dfnet_select_from", type=float, default=0.0, help="DFNet training: validations before this fraction of epochs are logged but never chosen as the best model nor counted for early stopping (0: the original, every validation counts)")
    g.add_argument("--dfnet_time_budget", type=float, default=0.0, help="DFNet training: stop and save after this many minutes (0: no limit)")
    g.add_argument("--apr_random_init", type=_bool, nargs="?", const=True, default=False, help="tests/demos only: build a randomly initialised APR / feature DFNet when a checkpoint path is empty")

    g = p.add_argument_group("refinement (test_refinement.py)")
    g.add_argument("--pose_only", type=int, default=0, help="0: APR only; 2: APR + NeFeS (fine-tune the APR); 3: direct SE(3) pose refinement (Adam); 4: direct pose refinement by Levenberg-Marquardt on the paper's loss (this project)")
    g.add_argument("--learning_rate", type=float, default=1e-5, help="APR fine-tuning (pose_only=2) / APR training learning rate")
    g.add_argument("--opt_iter", type=int, default=50, help="refinement iterations per query")
    g.add_argument("--svd_reg", type=_bool, nargs="?", const=True, default=defaults.SVD_REG, help="orthonormalise APR rotations by SVD (projection to SO(3))")
    g.add_argument("--freezeBN", type=_bool, nargs="?", const=True, default=False, help="freeze the APR's BatchNorm affine parameters")
    g.add_argument("--per_pixel", type=_bool, nargs="?", const=True, default=False, help="cosine feature loss per pixel instead of per channel")
    g.add_argument("--refine_crop", type=int, default=10, help="pose_only=2: pixels dropped on every border of the feature maps (and of the images checked by the verification step) at the working resolution; the original's 10 is for 240-px-high working images, smaller images want proportionally less")
    g.add_argument("--no_verification_step", type=_bool, nargs="?", const=True, default=False, help="skip the PSNR/SSIM fallback to the APR pose")
    g.add_argument("--refine_batch", type=int, default=1, help="test queries refined together in one batch (each keeps its own APR copy, optimiser and fusion statistics; results equal one at a time)")
    g.add_argument("--lm_blur", type=float, nargs="+", default=[0.0], help="pose_only=4: Gaussian blur (working pixels) of the coarse-to-fine stages, the last one normally 0 (the paper's loss)")
    g.add_argument("--lm_color", type=float, default=0.0, help="pose_only=4: weight of a photometric term (rendered colour against the query at the render size) added to the paper's feature loss; 0: the paper's loss alone")
    g.add_argument("--lm_feature", type=float, default=1.0, help="pose_only=4: weight of the paper's feature loss (0 with lm_color > 0: photometric refinement alone)")
    g.add_argument("--lm_polish", type=int, default=0, help="after pose_only 2/3/4: this many photometric Levenberg-Marquardt iterations from the refined pose (rendered colour against the query; this project); 0: off")
    g.add_argument("--lm_polish_start", action="store_true", help="with lm_polish: also polish from the query's initial (APR) pose and keep, per query, the pose with the lower photometric loss (two hypotheses: the refined pose and the start; this project)")
    g.add_argument("--lm_polish_N_importance", type=int, default=0, help="lm_polish: fine samples per ray of the polish's renders (0: N_importance); a field trained with more fine samples than the refinement renders gets its sharper photometric objective back here at little cost, since the polish renders colour only, without autograd (this project; docs/convergence.md)")
    g.add_argument("--lm_polish_tinyscale", type=float, default=0.0, help="lm_polish: render the polish at working size / this (0: tinyscale, the paper mode's render size; this project)")
    g.add_argument("--lm_jacobian", type=str, default="fd", choices=("fd", "flow"), help="pose_only=4 and lm_polish: Jacobian of the render w.r.t. the pose: fd (6 forward-difference renders per step) or flow (image gradient x the optical flow of the rendered depth: no extra render; this project)")
    g.add_argument("--lm_lambda", type=float, default=1e-2, help="pose_only=4: initial Levenberg-Marquardt damping")
    g.add_argument("--restart", type=_bool, nargs="?", const=True, default=False, help="discard the refinement journal (<expdir>/journal) and refine every query again; without it a rerun of the same configuration resumes")
    g.add_argument("--preview_queries", type=int, nargs="*", default=None, help="test query indices shown in previews.png (default: 4 spread over the test set; none given: no previews)")
    g.add_argument("--lr_r", type=float, default=0.01, help="pose_only=3: rotation learning rate")
    g.add_argument("--lr_t", type=float, default=0.1, help="pose_only=3: translation learning rate")
    g.add_argument("--freeze_BN", type=_bool, nargs="?", const=True, default=False, help=argparse.SUPPRESS)

    g = p.add_argument_group("legacy keys of the original (accepted, no effect)")
    for key, spec in LEGACY_KEYS.items():
        _add_legacy(g, key, spec)
    return p


def parse_args(argv=None, parser: configargparse.ArgumentParser | None = None) -> argparse.Namespace:
    """Parse the command line (+ config file), warn about unknown/legacy keys, resolve paths."""
    parser = parser or config_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    cfg = _config_path_from(argv)
    if cfg is not None and not Path(cfg).is_file():
        parser.error(f"config file not found: {cfg}")
    args, unknown = parser.parse_known_args(argv)
    known = [k.lstrip("-") for a in parser._actions for k in a.option_strings if k.startswith("--")]
    for item in unknown:
        key = item.split("=", 1)[0]
        if not key.startswith("-"):
            continue
        close = difflib.get_close_matches(key.lstrip("-"), known, n=1, cutoff=0.75)
        hint = f" (did you mean {close[0]}?)" if close else ""
        if any(a == key or a.startswith(key + "=") for a in argv):
            parser.error(f"unknown option {key}{hint}")
        if args.strict_config:
            raise ConfigError(f"config {cfg}: unknown key '{key.lstrip('-')}'{hint} (--strict_config)")
        _logger.warning("config %s: unknown key '%s' ignored%s; --strict_config makes this an error",
                        cfg, key.lstrip("-"), hint)
    warn_legacy(args)
    finalize(args)
    return args


def _config_path_from(argv) -> str | None:
    for i, a in enumerate(argv):
        if a == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--config="):
            return a.split("=", 1)[1]
    return None


def resolve_path(path: str | None, must_exist: bool = False) -> str | None:
    """Map a path written for the original's ``script/`` working directory to this repository.

    The original configs say ``../data/...`` and ``../logs`` because its scripts ran from
    ``script/``. When we run from the repository root and such a path does not exist as written,
    ``../X`` is read as ``<repo>/X``. Absolute paths and paths that exist are returned unchanged.
    """
    if not path:
        return path
    p = Path(path)
    if p.is_absolute() or p.exists():
        return str(p)
    if path.startswith("../") and Path.cwd().resolve() == REPO_ROOT:
        mapped = REPO_ROOT / path[3:]
        if mapped.exists() or not must_exist:
            return str(mapped)
    return str(p)


def finalize(args: argparse.Namespace) -> argparse.Namespace:
    """Resolve legacy paths in place and validate a few cross-key constraints."""
    args.freezeBN = args.freezeBN or args.freeze_BN
    for key in ("datadir", "ft_path", "pretrain_model_path", "pretrain_featurenet_path"):
        setattr(args, key, resolve_path(getattr(args, key), must_exist=True))
    args.basedir = resolve_path(args.basedir)
    if args.hist_bin != 10:
        raise ConfigError(f"hist_bin={args.hist_bin}: only 10 bins are supported (the ACT takes 10 inputs)")
    if not 0.0 <= args.pixel_center < 1.0:
        raise ConfigError(f"pixel_center={args.pixel_center}: expected a fraction of a pixel in [0, 1) (0: the original, 0.5: pixel centres)")
    if args.num_threads < 0:
        raise ConfigError(f"num_threads={args.num_threads}: expected 0 (torch default) or a positive count")
    return args


def apply_num_threads(args: argparse.Namespace) -> None:
    """Entry points: set torch's CPU thread count from ``num_threads`` (0 keeps torch's default)."""
    if args.num_threads > 0:
        import torch
        torch.set_num_threads(args.num_threads)


def get_device(name: str = "auto"):
    """'auto' -> cuda if available else cpu; anything else is passed to torch.device."""
    import torch
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name} requested but CUDA is not available")
    return dev


def available_devices() -> list:
    """The CPU, plus the default CUDA device when one is present (benchmarks measure both)."""
    import torch
    auto = get_device("auto")
    return [torch.device("cpu")] + ([auto] if auto.type != "cpu" else [])


def save_config(args: argparse.Namespace, out_dir: str | Path) -> None:
    """Write the effective configuration as ``args.txt`` (key = value) into ``out_dir``."""
    from utils.atomic import atomic_write_text
    lines = [f"{k} = {v}" for k, v in sorted(vars(args).items()) if k not in LEGACY_KEYS]
    atomic_write_text(Path(out_dir) / "args.txt", "\n".join(lines) + "\n")


def setup_logging(verbose: bool = False) -> None:
    """basicConfig for the entry scripts (modules only use logging.getLogger(__name__))."""
    level = logging.DEBUG if verbose or os.environ.get("NEFES_DEBUG") else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
