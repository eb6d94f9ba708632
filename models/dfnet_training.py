"""DFNet training core: APR + feature extractor trained with a neural renderer (spec §2.1).

Independent of the renderer: the loop takes tensors and a ``render_fn`` callable, so NeFeS (or a fake
renderer in tests) plugs in from outside.

Per iteration, for a batch of B training frames (APR-frame poses, metres):

* ``w[0]`` · MSE(pose(real), gt)          pose regression on the real images,
* ``w[1]`` · MSE(pose(rendered), gt)      the same poses rendered once by ``render_fn`` (cached),
* ``w[2]`` · triplet(real, rendered)      :func:`triplet_loss` on the feature levels ``triplet_levels``,
* ``rvs_loss_w`` · MSE(pose(rvs), rvs_gt) random view synthesis: renders at jittered poses
  (:func:`random_view_poses`), re-rendered every ``rvs_refresh_rate`` epochs,

with ``w = combine_loss_w``; the MSE is over the 12 numbers of the row-major 3x4 pose. Real, rendered
and RVS images share one encoder pass; the adaptation BatchNorm sees the real and rendered halves
(the original's siamese mode). Adam, ReduceLROnPlateau (factor 0.95, patience ``patience[1]``) and early
stopping (patience ``patience[0]``) on the validation pose MSE.

Outputs in ``out_dir``: ``dfnet_best.pt`` (bare state dict of the best validation epoch, original
format, loadable by :func:`models.dfnet.load_dfnet` both as APR and as feature extractor),
``dfnet_last.tar`` (resume state, written atomically), ``val_log.txt`` (one line per validation),
``train_renders.pt`` (the renders of the training poses, reused on resume).
Re-running with the same ``out_dir`` resumes from ``dfnet_last.tar``; randomness is drawn from
generators seeded by (seed, epoch), so an interrupted and resumed run gives the same weights.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from core import geometry
from models.dfnet import DFNet, read_checkpoint, save_dfnet
from utils.checkpoint_io import check_run_identity
from utils.atomic import atomic_torch_save, remove_stale_temp_files

_logger = logging.getLogger(__name__)

#: render_fn(c2w_apr (B, 3, 4), hist (B, 10)) -> images (B, 3, H, W) in [0, 1] at the training size.
RenderFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

LAST_CKPT = "dfnet_last.tar"
BEST_MODEL = "dfnet_best.pt"
VAL_LOG = "val_log.txt"
RENDER_CACHE = "train_renders.pt"


@dataclass
class DFNetTrainConfig:
    """Knobs of :func:`train_dfnet` (config keys of the same name, see ``config/options.py``)."""
    epochs: int = 2000
    batch_size: int = 4
    learning_rate: float = 1e-4
    combine_loss_w: tuple = (1.0, 1.0, 1.0)   # real pose, rendered pose, triplet
    rvs_loss_w: float = 1.0                   # 0 disables random view synthesis (no RVS rendering)
    rvs_refresh_rate: int = 20                # epochs
    rvs_trans: float = 5.0                    # metres, uniform ± per axis
    rvs_rotation: float = 1.2                 # degrees, uniform ± about each world axis
    d_max: float = 1.0                        # metres added around the training-camera bbox
    rvs_count: int = 0                        # RVS poses per refresh (0: as many as training frames)
    triplet_levels: tuple = (0, 1, 2)
    triplet_margin: float = 1.0
    triplet_crop: tuple = (0, 0)              # (h, w) random feature window per batch; (0, 0) = full image
    patience: tuple = (200, 50)               # early stopping, LR plateau (epochs)
    lr_factor: float = 0.95
    val_every: int = 1
    save_every: int = 1
    time_budget_min: float = 0.0              # stop (and save) after this many minutes; 0 = no limit
    render_batch: int = 8
    channels_last: bool = True                # NHWC convolutions: 1.2-1.7x faster on CPU
    t_scale: float = 1.0                      # translation errors divided by this (metres) in the pose MSE
    lr_schedule: str = "plateau"              # plateau (the original) | cosine (to 1 % over ``epochs``)
    select_from: float = 0.0                  # validations before this fraction of ``epochs`` never pick the best model
    seed: int = 0

    @classmethod
    def from_args(cls, args) -> "DFNetTrainConfig":
        """Build from the parsed config namespace (keys of the "DFNet / APR" group)."""
        cfg = cls(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
                  combine_loss_w=tuple(args.combine_loss_w), rvs_loss_w=args.rvs_loss_w,
                  rvs_refresh_rate=args.rvs_refresh_rate, rvs_trans=args.rvs_trans, rvs_rotation=args.rvs_rotation,
                  d_max=args.d_max, rvs_count=args.rvs_count, triplet_levels=tuple(args.triplet_levels),
                  triplet_crop=tuple(args.triplet_crop),
                  patience=tuple(args.patience), val_every=args.dfnet_val_every, save_every=args.dfnet_save_every,
                  time_budget_min=args.dfnet_time_budget, seed=args.seed)
        # ``pose_loss_t_scale``: 'auto' is resolved against the training poses by the caller
        scale = getattr(args, "pose_loss_t_scale", "1")
        cfg.t_scale = 1.0 if scale == "auto" else float(scale)
        cfg.lr_schedule = getattr(args, "dfnet_lr_schedule", "plateau")
        cfg.select_from = float(getattr(args, "dfnet_select_from", 0.0))
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if len(self.combine_loss_w) != 3 or len(self.patience) != 2:
            raise ValueError("combine_loss_w needs 3 weights and patience 2 integers")
        if not set(self.triplet_levels) <= {0, 1, 2}:
            raise ValueError(f"triplet_levels must be a subset of 0 1 2, got {list(self.triplet_levels)}")
        if self.lr_schedule not in ("plateau", "cosine"):
            raise ValueError(f"dfnet_lr_schedule must be plateau or cosine, got {self.lr_schedule!r}")
        if not 0.0 <= self.select_from < 1.0:
            raise ValueError(f"dfnet_select_from must be in [0, 1) (a fraction of epochs), got {self.select_from}")
        if not self.t_scale > 0:
            raise ValueError(f"pose_loss_t_scale must be > 0 (metres) or auto, got {self.t_scale}")
        if min(self.batch_size, self.rvs_refresh_rate, self.val_every, self.save_every, self.epochs) < 1:
            raise ValueError("batch_size, rvs_refresh_rate, dfnet_val_every, dfnet_save_every and epochs must be >= 1")

    @property
    def uses_renders(self) -> bool:
        return self.combine_loss_w[1] > 0 or (self.combine_loss_w[2] > 0 and bool(self.triplet_levels))


@dataclass
class DFNetTrainData:
    """Training / validation tensors (kept on the CPU; batches move to the device).

    train_images (N, 3, H, W) in [0, 1]; train_poses (N, 3, 4) camera-to-world, APR frame, metres;
    train_hists (N, 10) luminance histograms (passed to ``render_fn``); val_images (M, 3, H, W);
    val_poses (M, 3, 4).
    """
    train_images: torch.Tensor
    train_poses: torch.Tensor
    train_hists: torch.Tensor
    val_images: torch.Tensor
    val_poses: torch.Tensor

    def __post_init__(self):
        for f in fields(self):
            setattr(self, f.name, torch.as_tensor(getattr(self, f.name), dtype=torch.float32).cpu())
        n, m = len(self.train_images), len(self.val_images)
        if n == 0 or m == 0:
            raise ValueError(f"DFNet training needs training and validation frames (got {n} and {m})")
        if self.train_poses.shape != (n, 3, 4) or self.train_hists.shape != (n, 10) or self.val_poses.shape != (m, 3, 4):
            raise ValueError("poses must be (N, 3, 4) and hists (N, 10), matching the number of images")


# ----------------------------------------------------------------------------------------------
# losses
# ----------------------------------------------------------------------------------------------
def pose_loss(pred_12: torch.Tensor, gt_34: torch.Tensor, t_scale: float = 1.0) -> torch.Tensor:
    """MSE over the 12 pose numbers: pred (B, 12), gt (B, 3, 4); the translation column divided by
    ``t_scale`` (metres; 1: the original's loss). With metres, a 30 m street's translations outweigh the
    rotation entries ~100x and the shared encoder learns little rotation; in units of the scene's size
    both carry similar weight on every scene."""
    if t_scale == 1.0:
        return F.mse_loss(pred_12, gt_34.reshape(-1, 12))
    d = pred_12.reshape(-1, 3, 4) - gt_34
    return torch.cat([d[..., :3], d[..., 3:] / t_scale], -1).square().mean()


def translation_scale(c2w: torch.Tensor) -> float:
    """'auto' ``pose_loss_t_scale``: RMS distance (m) of the camera centres (N, 3, 4) from their mean."""
    t = torch.as_tensor(c2w, dtype=torch.float64)[:, :, 3]
    return max(float((t - t.mean(0)).square().sum(-1).mean().sqrt()), 1e-6)


def _row_dist(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    # L2 over the last (width) axis, as nn.TripletMarginLoss does on the original's 5-D tensors.
    return (a - b + eps).norm(dim=-1)


def triplet_loss(f_real: torch.Tensor, f_syn: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Triplet loss with hard negatives between real and rendered features.

    Args:
        f_real, f_syn: (L, B, C, H, W) features of the same B poses (real images, renderings).

    Every (level, image, channel, row) is one triplet with a distance over the W axis (the
    original applies nn.TripletMarginLoss to 5-D tensors, which measures exactly that). The positive
    pair is (real, rendered) of the same pose; negatives come from the batch rolled by one image, both
    real and rendered, with either element of the positive pair as anchor (anchor swap); the hardest
    (closest) of these four negatives counts. Loss = mean(max(0, d_pos - d_neg_hardest + margin)).
    """
    if f_real.shape != f_syn.shape or f_real.dim() != 5:
        raise ValueError(f"triplet_loss expects two (L, B, C, H, W) tensors, got {tuple(f_real.shape)} and {tuple(f_syn.shape)}")
    neg_real, neg_syn = torch.roll(f_real, 1, dims=1), torch.roll(f_syn, 1, dims=1)
    d_pos = _row_dist(f_real, f_syn)
    d_neg = torch.stack([_row_dist(f_real, neg_real), _row_dist(f_real, neg_syn),
                         _row_dist(f_syn, neg_real), _row_dist(f_syn, neg_syn)]).amin(0)
    return F.relu(d_pos - d_neg + margin).mean()


# ----------------------------------------------------------------------------------------------
# random view synthesis
# ----------------------------------------------------------------------------------------------
def _axis_rotations(angles_rad: torch.Tensor) -> torch.Tensor:
    """(n, 3) angles about the world x, y, z axes -> (n, 3, 3) = Rz · Ry · Rx."""
    eye = torch.eye(3, dtype=angles_rad.dtype)
    Rx, Ry, Rz = (geometry.so3_exp(eye[i] * angles_rad[:, i:i + 1]) for i in range(3))
    return Rz @ Ry @ Rx


def random_view_poses(c2w_apr: torch.Tensor, n: int, trans: float, rot_deg: float, d_max: float,
                      generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Jittered copies of randomly chosen training poses (the original's random view synthesis).

    Args:
        c2w_apr: (N, 3, 4) training poses, APR frame, metres.
        n: number of poses to draw.
        trans: translation jitter, uniform in [-trans, trans] metres per world axis.
        rot_deg: rotation jitter, uniform in [-rot_deg, rot_deg] degrees about each world axis,
            applied on the world side (R' = Rz Ry Rx R).
        d_max: positions are clamped to the bbox of the training positions grown by d_max.

    Returns:
        poses (n, 3, 4) float32 and the index (n,) of the training pose each was drawn from.
    """
    c2w = c2w_apr.to(torch.float64)
    src = torch.randint(len(c2w), (n,), generator=generator)
    t_jit = (torch.rand(n, 3, generator=generator, dtype=torch.float64) * 2 - 1) * trans
    a_jit = (torch.rand(n, 3, generator=generator, dtype=torch.float64) * 2 - 1) * math.radians(rot_deg)
    lo = c2w[:, :, 3].amin(0) - d_max
    hi = c2w[:, :, 3].amax(0) + d_max
    t = torch.minimum(torch.maximum(c2w[src, :, 3] + t_jit, lo), hi)
    R = _axis_rotations(a_jit) @ c2w[src, :, :3]
    return torch.cat([R, t[:, :, None]], dim=-1).float(), src


@torch.no_grad()
def render_poses(render_fn: RenderFn, c2w_apr: torch.Tensor, hists: torch.Tensor, batch: int = 8,
                 desc: str = "render") -> torch.Tensor:
    """Render (N, 3, 4) poses with their (N, 10) histograms in batches -> (N, 3, H, W) float32 on the CPU."""
    out = []
    for s in tqdm(range(0, len(c2w_apr), batch), desc=desc, leave=False, dynamic_ncols=True):
        out.append(render_fn(c2w_apr[s:s + batch], hists[s:s + batch]).detach().float().clamp(0, 1).cpu())
    return torch.cat(out)


# ----------------------------------------------------------------------------------------------
# evaluation
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate_apr(net: DFNet, images: torch.Tensor, c2w_gt: torch.Tensor, device, batch: int = 16,
                 t_scale: float = 1.0) -> dict:
    """Pose MSE (the early-stopping metric, translation in units of ``t_scale``) and median errors
    (m, deg; SVD-projected rotation)."""
    was_training = net.training
    net.eval()
    preds = torch.cat([net.predict_pose(images[s:s + batch].to(device)).cpu() for s in range(0, len(images), batch)])
    net.train(was_training)
    mse = pose_loss(preds.reshape(-1, 12), c2w_gt.reshape(-1, 3, 4), t_scale).item()
    t_err, r_err = geometry.pose_errors(geometry.orthonormalize_pose(preds.double()), c2w_gt.double())
    # quantile, not Tensor.median (the lower middle value): the same medians as the eval (np.median)
    return {"mse": mse, "median_t": t_err.quantile(0.5).item(), "median_r": r_err.quantile(0.5).item(),
            "mean_t": t_err.mean().item(), "mean_r": r_err.mean().item()}


# ----------------------------------------------------------------------------------------------
# training loop
# ----------------------------------------------------------------------------------------------
@dataclass
class _State:
    epoch: int = 0                    # completed epochs
    best: float = math.inf            # best validation MSE
    best_epoch: int = 0
    bad_epochs: int = 0               # epochs since the best (early stopping)
    stopped: str = ""
    history: list = field(default_factory=list)


def _generator(seed: int, *salt: int) -> torch.Generator:
    """A generator seeded by (seed, stream id, counter): the same draws after a resume."""
    code = seed
    for v in salt:
        code = code * 1_000_003 + v
    g = torch.Generator()
    g.manual_seed(code & 0x7FFF_FFFF_FFFF_FFFF)
    return g


def _cached_train_renders(out_dir: Path, render_fn: RenderFn, data: DFNetTrainData, batch: int) -> torch.Tensor:
    """Render the training poses once; reuse ``train_renders.pt`` when it matches the poses."""
    path = out_dir / RENDER_CACHE
    if path.is_file():
        try:
            cache = torch.load(path, map_location="cpu", weights_only=True)
            if torch.equal(cache["poses"], data.train_poses) and len(cache["images"]) == len(data.train_images):
                _logger.info("reusing rendered training views from %s", path)
                return cache["images"]
        except Exception as e:  # stale or broken cache: render again
            _logger.warning("ignoring render cache %s (%s)", path, e)
    t0 = time.perf_counter()
    images = render_poses(render_fn, data.train_poses, data.train_hists, batch, desc="render train poses")
    _logger.info("rendered %d training views in %.1f s", len(images), time.perf_counter() - t0)
    atomic_torch_save({"poses": data.train_poses, "images": images}, path)
    return images


def _rvs_set(render_fn: RenderFn, data: DFNetTrainData, cfg: DFNetTrainConfig, refresh: int):
    """RVS poses and renders for refresh number ``refresh`` (deterministic given the seed)."""
    n = cfg.rvs_count or len(data.train_poses)
    poses, src = random_view_poses(data.train_poses, n, cfg.rvs_trans, cfg.rvs_rotation, cfg.d_max,
                                   _generator(cfg.seed, 2, refresh))
    t0 = time.perf_counter()
    images = render_poses(render_fn, poses, data.train_hists[src], cfg.render_batch, desc="render RVS")
    _logger.info("rendered %d random views in %.1f s", n, time.perf_counter() - t0)
    return poses, images


def _batch_terms(net: DFNet, x: torch.Tensor, B: int, gt: torch.Tensor, rvs_gt: torch.Tensor | None,
                 with_renders: bool, levels: tuple, crop, cfg: DFNetTrainConfig) -> dict:
    """Loss terms of one batch ``x`` = [B real | B rendered (opt.) | B random views (opt.)]."""
    # One encoder pass; features only for the real + rendered halves (RVS images need a pose only).
    pose, feats = net.pose_and_features(x, levels if with_renders else (), n_feat=2 * B, crop=crop)
    terms = {"real": pose_loss(pose[:B], gt, cfg.t_scale)}
    if with_renders:
        terms["render"] = pose_loss(pose[B:2 * B], gt, cfg.t_scale)
        if feats and B > 1:  # rolling a batch of one gives no negative
            f = torch.stack([feats[lvl] for lvl in levels])  # (L, 2B, 128, h, w)
            terms["triplet"] = triplet_loss(f[:, :B], f[:, B:], cfg.triplet_margin)
    if rvs_gt is not None:
        terms["rvs"] = pose_loss(pose[-B:], rvs_gt, cfg.t_scale)
    return terms


def _train_epoch(net, opt, data, renders, rvs, cfg: DFNetTrainConfig, epoch: int, device) -> dict:
    """One pass over the training frames in a seeded random order; returns mean loss terms."""
    weights = {"real": cfg.combine_loss_w[0], "render": cfg.combine_loss_w[1], "triplet": cfg.combine_loss_w[2],
               "rvs": cfg.rvs_loss_w}
    levels = tuple(cfg.triplet_levels) if weights["triplet"] > 0 else ()
    n, bs = len(data.train_images), cfg.batch_size
    g = _generator(cfg.seed, 1, epoch)
    perm = torch.randperm(n, generator=g)
    rvs_perm = torch.randperm(len(rvs[0]), generator=_generator(cfg.seed, 3, epoch)) if rvs else None
    sums: dict[str, float] = {}
    for b, s in enumerate(range(0, n, bs)):
        idx = perm[s:s + bs]
        B = len(idx)
        parts, rvs_gt = [data.train_images[idx]], None
        if renders is not None:
            parts.append(renders[idx])
        if rvs:
            ridx = rvs_perm[torch.arange(b * bs, b * bs + B) % len(rvs_perm)]
            parts.append(rvs[1][ridx])
            rvs_gt = rvs[0][ridx].to(device)
        x = torch.cat(parts).to(device, memory_format=_memory_format(cfg))
        terms = _batch_terms(net, x, B, data.train_poses[idx].to(device), rvs_gt, renders is not None, levels,
                             _crop_window(cfg.triplet_crop, x.shape[-2:], g), cfg)
        loss = sum(weights[k] * v for k, v in terms.items())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for k, v in {**terms, "loss": loss}.items():
            sums[k] = sums.get(k, 0.0) + v.item()
    n_batches = math.ceil(n / bs)
    return {k: v / n_batches for k, v in sums.items()}


def _memory_format(cfg: DFNetTrainConfig):
    return torch.channels_last if cfg.channels_last else torch.contiguous_format


def _crop_window(crop_hw, img_hw, g: torch.Generator):
    """A random (y0, x0, h, w) window of size ``crop_hw`` inside ``img_hw``; None for the full image."""
    h, w = (min(int(c), int(s)) if c > 0 else int(s) for c, s in zip(crop_hw, img_hw))
    if (h, w) == tuple(img_hw):
        return None
    y0 = int(torch.randint(img_hw[0] - h + 1, (1,), generator=g))
    x0 = int(torch.randint(img_hw[1] - w + 1, (1,), generator=g))
    return (y0, x0, h, w)


def _save_last(out_dir: Path, net, opt, sched, st: _State, identity: dict | None) -> None:
    atomic_torch_save({"model_state_dict": net.state_dict(), "width": net.width, "optimizer_state_dict": opt.state_dict(),
                       "scheduler_state_dict": sched.state_dict(), "state": vars(st), "run_identity": identity},
                      out_dir / LAST_CKPT)


def check_resume_identity(out_dir: str | Path, identity: dict) -> None:
    """Refuse (one line naming both) to resume ``out_dir`` when its ``dfnet_last.tar`` was trained on
    another setup (:func:`utils.checkpoint_io.check_run_identity`). Call before anything is written."""
    path = Path(out_dir) / LAST_CKPT
    if path.is_file():
        check_run_identity(read_checkpoint(path).get("run_identity"), identity, out_dir)


def _resume(out_dir: Path, net, opt, sched, device, resume: bool = True) -> _State:
    path = out_dir / LAST_CKPT
    if not path.is_file() or not resume:
        return _State()
    ck = read_checkpoint(path)
    net.load_state_dict(ck["model_state_dict"])
    opt.load_state_dict(ck["optimizer_state_dict"])
    sched.load_state_dict(ck["scheduler_state_dict"])
    st = _State(**ck["state"])
    if st.stopped.startswith("time budget"):  # a time limit is per run: a re-run continues
        st.stopped = ""
    _truncate_log(out_dir / VAL_LOG, st.epoch)
    _logger.info("resuming DFNet training from %s (epoch %d, best val mse %.4g at epoch %d)",
                 path, st.epoch, st.best, st.best_epoch)
    return st


def _truncate_log(path: Path, last_epoch: int) -> None:
    """Drop log lines written after the checkpoint we resume from (they will be written again)."""
    if path.is_file():
        lines = path.read_text().splitlines()
        keep = lines[:1] + [ln for ln in lines[1:] if float(ln.split()[0]) <= last_epoch]
        path.write_text("\n".join(keep) + "\n")


def _log_line(path: Path, rec: dict) -> None:
    keys = ("epoch", "lr", "loss", "val_mse", "median_t", "median_r", "mean_t", "mean_r")
    if not path.exists():
        path.write_text(" ".join(keys) + "\n")
    with path.open("a") as f:
        f.write(" ".join(f"{rec.get(k, float('nan')):.6g}" for k in keys) + "\n")


def train_dfnet(net: DFNet, data: DFNetTrainData, render_fn: RenderFn | None, cfg: DFNetTrainConfig,
                out_dir: str | Path, device=None, on_epoch_end: Callable[[int, dict], None] | None = None,
                identity: dict | None = None, resume: bool = True) -> dict:
    """Train ``net`` in place (resuming from ``out_dir`` when a checkpoint is there, unless ``resume`` is False).

    ``identity`` (what the run belongs to: scene, dataset type...) is stored in the resume checkpoint
    for :func:`check_resume_identity`.

    ``render_fn`` may be None when no rendered view is needed (combine_loss_w[1:] and rvs_loss_w zero).
    ``on_epoch_end(epoch, record)`` is called after each epoch's checkpoint is written.

    Returns:
        {"best_epoch", "best_val": eval dict of the best epoch, "epochs_run", "stopped", "best_path"}.
    """
    cfg.validate()
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(out_dir)
    device = device or next(net.parameters()).device
    net.to(device=device, memory_format=_memory_format(cfg)).train()
    if (cfg.uses_renders or cfg.rvs_loss_w > 0) and render_fn is None:
        raise ValueError("render_fn is required unless combine_loss_w[1], combine_loss_w[2] and rvs_loss_w are 0")
    opt = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate)
    # The plateau scheduler steps once per validation: express its patience in validations.
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=cfg.lr_factor,
                                                       patience=math.ceil(cfg.patience[1] / cfg.val_every))
    st = _resume(out_dir, net, opt, sched, device, resume)
    if not resume:   # start over: earlier validation lines and renders belong to the old run
        (out_dir / VAL_LOG).unlink(missing_ok=True)
        (out_dir / RENDER_CACHE).unlink(missing_ok=True)
    renders = _cached_train_renders(out_dir, render_fn, data, cfg.render_batch) if cfg.uses_renders else None
    if st.epoch == 0 and not st.history:
        rec = {"epoch": 0, "lr": cfg.learning_rate, **_prefix(evaluate_apr(net, data.val_images, data.val_poses, device, t_scale=cfg.t_scale))}
        st.history.append(rec)
        _log_line(out_dir / VAL_LOG, rec)
    rvs, rvs_refresh = None, -1
    bar = tqdm(range(st.epoch, cfg.epochs), desc="DFNet", initial=st.epoch, total=cfg.epochs, dynamic_ncols=True)
    for epoch in bar:
        if st.stopped:
            break
        if cfg.rvs_loss_w > 0 and epoch // cfg.rvs_refresh_rate != rvs_refresh:
            rvs_refresh = epoch // cfg.rvs_refresh_rate
            rvs = _rvs_set(render_fn, data, cfg, rvs_refresh)
        if cfg.lr_schedule == "cosine":   # a function of the epoch alone: a resumed run gets the same rates
            for g in opt.param_groups:
                g["lr"] = cosine_lr(cfg.learning_rate, epoch, cfg.epochs)
        rec = {"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"],
               **_train_epoch(net, opt, data, renders, rvs, cfg, epoch, device)}
        st.epoch = epoch + 1
        if st.epoch % cfg.val_every == 0 or st.epoch == cfg.epochs:
            rec.update(_prefix(evaluate_apr(net, data.val_images, data.val_poses, device, t_scale=cfg.t_scale)))
            _after_validation(net, sched, st, rec, cfg, out_dir)
            _log_line(out_dir / VAL_LOG, rec)
            bar.set_postfix(loss=f"{rec['loss']:.4f}", t=f"{rec['median_t']:.3f}m", r=f"{rec['median_r']:.2f}deg")
        st.history.append(rec)
        if cfg.time_budget_min > 0 and time.perf_counter() - t_start > 60 * cfg.time_budget_min and not st.stopped:
            st.stopped = f"time budget of {cfg.time_budget_min:g} min reached at epoch {st.epoch}"
        if st.epoch % cfg.save_every == 0 or st.stopped or st.epoch == cfg.epochs:
            _save_last(out_dir, net, opt, sched, st, identity)
        if on_epoch_end is not None:
            on_epoch_end(st.epoch, rec)
    bar.close()
    if st.best_epoch == 0 and st.epoch > 0:   # stopped before any validation could be chosen
        _logger.warning("no validation in the selection window (dfnet_select_from=%g): exporting epoch %d as the best model",
                        cfg.select_from, st.epoch)
        st.best_epoch = st.epoch
        save_dfnet(out_dir / BEST_MODEL, net)
    net.to(memory_format=torch.contiguous_format)
    if st.stopped:
        _logger.info("DFNet training stopped: %s", st.stopped)
    best = next((r for r in st.history if r["epoch"] == st.best_epoch), {})
    return {"best_epoch": st.best_epoch, "best_val": best, "epochs_run": st.epoch, "stopped": st.stopped,
            "best_path": str(out_dir / BEST_MODEL)}


def _prefix(ev: dict) -> dict:
    return {("val_mse" if k == "mse" else k): v for k, v in ev.items()}


def cosine_lr(base: float, epoch: int, epochs: int, floor: float = 0.01) -> float:
    """Learning rate of epoch ``epoch`` (0-based) of ``epochs``: cosine from ``base`` down to ``floor * base``."""
    f = 0.5 * (1.0 + math.cos(math.pi * epoch / max(1, epochs - 1)))
    return base * (floor + (1.0 - floor) * f)


def _after_validation(net, sched, st: _State, rec: dict, cfg: DFNetTrainConfig, out_dir: Path) -> None:
    """LR plateau step, best-model export and early-stopping bookkeeping for one validation."""
    if cfg.lr_schedule == "plateau":
        sched.step(rec["val_mse"])
    if st.epoch <= cfg.select_from * cfg.epochs:
        # Early epochs at a high learning rate can score a low pose MSE by luck (street44 kept epoch 3 of
        # 24 at 6.4 m median, epoch 19 has 1.6 m): they are logged but neither chosen nor counted.
        return
    if rec["val_mse"] < st.best:
        st.best, st.best_epoch, st.bad_epochs = rec["val_mse"], st.epoch, 0
        save_dfnet(out_dir / BEST_MODEL, net)
    else:
        st.bad_epochs += cfg.val_every
        if st.bad_epochs >= cfg.patience[0]:
            st.stopped = f"early stopping: no validation improvement for {st.bad_epochs} epochs (best epoch {st.best_epoch})"
