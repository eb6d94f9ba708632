"""NeFeS training (spec §4): stage schedule, learning rate, ray/patch batches, checkpoints, resume.

A *run* trains one config: ``new_schedule=1`` is stage 1 (colour only), ``new_schedule=2`` is
stages 2+3 (colour + feature on random rays, then colour + feature + fusion on patches) started
from the stage-1 weights (``ft_path``). Faithful to the original, including its quirks (documented
in docs/differences.md; ``--stage1_color_only`` and ``--per_image_patches`` switch two of them off):

* the epoch loop runs ``epochs + 1`` times and the LR depends on the epoch counter only;
* a stage-1 run's last epoch (``epochs``) already adds 0.04·L_feat;
* a stage-2 run restarts the counter (and the LR) at 0 with a fresh Adam;
* patch positions are shared by all images of a batch, losses use static pixels only.

Added (off by default, as the original): ``sparse_depth_w`` pulls the rendered depth of
``sparse_depth_rays`` rays per image towards SIFT keypoints of the training views triangulated at
their known poses (:mod:`core.triangulation`; triangulated once per experiment folder and cached in
``sparse_depth.npz``), a relative L1 loss on the fine field's depth.

Fixed on purpose: an interrupted run resumes from its *own* last checkpoint (weights, Adam state,
RNG) — the original always reloaded ``ft_path``, so an interrupted stage-2 run silently restarted.

Checkpoints and interrupts: ``NNNNNN.tar`` is the state at the end of epoch NNNNNN, written every
``i_weights`` epochs and after the last one. Ctrl-C / SIGTERM never writes a half-finished epoch: the
updates of the interrupted epoch are dropped and the state at the end of the last *completed* epoch
(kept in memory) goes to ``interrupted.tar`` — separate, so no regular checkpoint is ever overwritten.
A rerun resumes from ``interrupted.tar`` when it holds a later epoch than the last ``NNNNNN.tar``
(and from that checkpoint otherwise), repeats the interrupted epoch, and ends bit-identical to an
uninterrupted run. The next regular checkpoint deletes ``interrupted.tar``.
"""
from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from core import frames
from core.errors import NeFeSCheckpointError, TrainingError
from models import losses
from models.feature_vis import pca_image
from models.nefes import NeFeS, build_nefes, checkpoint_dict, load_nefes, save_nefes
from utils.atomic import atomic_torch_save, atomic_write_text, remove_stale_temp_files
from utils.checkpoint_io import check_run_identity, load_checkpoint
from models.rays import patch_pixels
from models.renderer import pixel_center, render_image, render_pixels

_logger = logging.getLogger(__name__)

INTERRUPTED = "interrupted.tar"
FEATURE_WEIGHT = {"feature": 0.04, "fusion": 0.02}
FUSION_WEIGHT = 0.02
PATCH_SIZE, N_PATCHES = 16, 7


# ----------------------------------------------------------------------------------------------
# schedule
# ----------------------------------------------------------------------------------------------
@dataclass
class Schedule:
    """Which losses an epoch uses and its learning rate (spec §4.2–4.3)."""
    epochs: int
    color_only_until: int     # the original's PRE_TRAIN_COLOR_ONLY_EPOCH
    fusion_from: int          # the original's EPOCH_TO_FUSION
    lrate: float
    lrate_decay: float
    last_epoch: int           # inclusive

    @classmethod
    def from_args(cls, args) -> "Schedule":
        if args.new_schedule == 2:
            pre, fusion = 0, 200 if args.epoch_to_fusion is None else args.epoch_to_fusion
        else:
            pre, fusion = args.epochs, args.epochs + 200
        last = args.epochs - 1 if (args.new_schedule != 2 and args.stage1_color_only) else args.epochs
        return cls(args.epochs, pre, fusion, args.lrate, args.lrate_decay, last)

    def phase(self, epoch: int) -> str:
        """'color' (stage 1), 'feature' (stage 2) or 'fusion' (stage 3)."""
        if epoch < self.color_only_until:
            return "color"
        return "feature" if epoch < self.fusion_from else "fusion"

    def lr(self, epoch: int) -> float:
        """lrate · 0.1^(epoch / (lrate_decay · 1000)): constant within an epoch."""
        return self.lrate * 0.1 ** (epoch / (self.lrate_decay * 1000))


# ----------------------------------------------------------------------------------------------
# training targets (computed once)
# ----------------------------------------------------------------------------------------------
@dataclass
class Targets:
    """Per-image supervision at the render size (h, w), channel-last for pixel gathers."""
    c2w_nerf: torch.Tensor        # (N, 3, 4)
    hists: torch.Tensor           # (N, 10)
    rgb: torch.Tensor             # (N, h, w, 3) float32, bilinear (align_corners=False) resize
    feat: torch.Tensor | None     # (N, h, w, 128) float16, DFNet level 0 resized by the extractor
    mask: torch.Tensor | None     # (N, h, w) bool, True = static pixel (Cambridge semantic masks)
    h: int
    w: int
    focal: float
    near: float
    far: float
    sparse: "SparseRays | None" = None   # triangulated keypoints (sparse_depth_w > 0)


@dataclass
class SparseRays:
    """Triangulated keypoints of the training views (:mod:`core.triangulation`), grouped by view."""
    xy: list[torch.Tensor]        # per view (K_i, 2) render-size image coordinates (0 = the image's edge)
    depth: list[torch.Tensor]     # per view (K_i,) camera z-depth, NeRF units

    @classmethod
    def from_sparse(cls, sd, n_views: int, device) -> "SparseRays":
        xy = [torch.as_tensor(sd.xy[sd.view == i], dtype=torch.float32, device=device) for i in range(n_views)]
        depth = [torch.as_tensor(sd.depth[sd.view == i], dtype=torch.float32, device=device) for i in range(n_views)]
        return cls(xy, depth)

    def sample(self, idx: torch.Tensor, n: int, gen: torch.Generator):
        """``n`` keypoints (with replacement) of each view in ``idx`` that has any ->
        (views (B',), xy (B', n, 2), depth (B', n)), or None when none has."""
        views, xy, depth = [], [], []
        for i in idx.tolist():
            k = len(self.depth[i])
            if k == 0:
                continue
            pick = torch.randint(k, (n,), generator=gen).to(self.depth[i].device)
            views.append(i)
            xy.append(self.xy[i][pick])
            depth.append(self.depth[i][pick])
        if not views:
            return None
        return torch.tensor(views, device=idx.device), torch.stack(xy), torch.stack(depth)


def sparse_depth_targets(split, t: Targets, expdir: Path, device) -> SparseRays:
    """Triangulate the training views' keypoints once per experiment folder (cached as ``sparse_depth.npz``:
    about half a minute for 240 images of 854x480 on two cores)."""
    from core.triangulation import SparseDepth, triangulate
    cache = expdir / "sparse_depth.npz"
    poses = np.asarray(t.c2w_nerf.cpu(), dtype=np.float64)
    sd = SparseDepth.load(cache, poses)            # None: absent, or triangulated at other poses
    if sd is None:
        sd = triangulate(split.image_paths, poses, t.h, t.w, t.focal)
        sd.save(cache, poses)
    inside = (sd.depth > t.near) & (sd.depth < t.far)     # a ray cannot put its depth beyond the far bound
    if not inside.all():
        _logger.warning("sparse depth: %d of %d keypoints lie beyond the scene's near/far bounds (%g, %g NeRF units) "
                        "and are not used", int((~inside).sum()), len(sd), t.near, t.far)
        sd = SparseDepth(sd.view[inside], sd.xy[inside], sd.depth[inside])
    _logger.info("sparse depth: %d keypoints in %d of %d training views", len(sd), len(np.unique(sd.view)), len(poses))
    return SparseRays.from_sparse(sd, len(poses), device)


@torch.no_grad()
def build_targets(split, scene, tinyscale: float, featnet=None, device="cpu", batch: int = 8) -> Targets:
    """Render-size colour targets and (when ``featnet`` is given) cached DFNet feature targets."""
    h, w, focal = scene.render_size(tinyscale)
    images = split.images()                                           # (N, 3, H, W) working size
    rgb = F.interpolate(images, size=(h, w), mode="bilinear", align_corners=False, antialias=False)
    feat = None
    if featnet is not None:
        featnet.eval()
        chunks = []
        for i in tqdm(range(0, len(images), batch), desc="feature targets", leave=False):
            f = featnet.extract_features(images[i:i + batch].to(device), (h, w))   # (b, 128, h, w)
            chunks.append(f.permute(0, 2, 3, 1).to("cpu", torch.float16))
        feat = torch.cat(chunks).to(device)
    c2w = torch.as_tensor(frames.apr_to_nerf(split.poses, scene.world_setup), dtype=torch.float32)
    mask = None if getattr(split, "masks", None) is None else torch.as_tensor(split.masks, dtype=torch.bool)
    return Targets(c2w.to(device), split.hists.float().to(device), rgb.permute(0, 2, 3, 1).contiguous().to(device),
                   feat, None if mask is None else mask.to(device), h, w, focal,
                   scene.near, scene.far)


# ----------------------------------------------------------------------------------------------
# batches
# ----------------------------------------------------------------------------------------------
def sample_pixels(t: Targets, idx: torch.Tensor, n_rand: int, gen: torch.Generator) -> torch.Tensor:
    """(B, R, 2) distinct random pixel (u, v) per image, static pixels only when masks exist."""
    n_pix = t.h * t.w
    out = []
    for i in idx.tolist():                                             # loop over the batch's images
        if t.mask is None:
            flat = torch.randperm(n_pix, generator=gen)[:n_rand]
        else:
            valid = t.mask[i].reshape(-1).nonzero().squeeze(1).cpu()
            if len(valid) == 0:
                valid = torch.arange(n_pix)
            if len(valid) >= n_rand:
                flat = valid[torch.randperm(len(valid), generator=gen)[:n_rand]]
            else:   # the original dropped into the debugger here; sample with replacement instead
                flat = valid[torch.randint(len(valid), (n_rand,), generator=gen)]
        out.append(torch.stack([flat % t.w, flat // t.w], -1))
    return torch.stack(out).to(t.c2w_nerf.device)


def sample_patch_corners(h: int, w: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """(n, 2) top-left corners [row, col] uniform in [0, h-16) x [0, w-16) (may overlap)."""
    rows = torch.randint(0, max(1, h - PATCH_SIZE), (n,), generator=gen)
    cols = torch.randint(0, max(1, w - PATCH_SIZE), (n,), generator=gen)
    return torch.stack([rows, cols], -1)


def _gather(img: torch.Tensor, idx: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """img (N, h, w, C), idx (B,), uv (B, R, 2) -> (B*R, C)."""
    return img[idx[:, None], uv[..., 1], uv[..., 0]].reshape(-1, img.shape[-1])


def patch_uv(corners: torch.Tensor) -> torch.Tensor:
    """(B, P, 2) corners [row, col] -> (B, P*16*16, 2) pixel (u, v), ordered patch -> row -> column."""
    B, P = corners.shape[:2]
    return patch_pixels(corners.reshape(B * P, 2), PATCH_SIZE).reshape(B, P * PATCH_SIZE ** 2, 2)


def training_step(model: NeFeS, t: Targets, idx: torch.Tensor, phase: str, args, gen: torch.Generator) -> dict:
    """One iteration's losses (not yet backpropagated) for the images ``idx``.

    'color'/'feature': ``N_rand`` random rays per image. 'fusion': 7 patches of 16x16 per image
    (positions shared by the batch unless ``per_image_patches``), losses on static pixels only.
    """
    render_kw = dict(N_samples=args.N_samples, N_importance=args.N_importance, perturb=args.perturb > 0,
                     need_coarse=True, transient=True, chunk=args.chunk, netchunk=args.netchunk,
                     raw_noise_std=args.raw_noise_std, lindisp=args.lindisp, generator=gen,
                     with_distortion=getattr(args, "distortion_loss_w", 0.0) > 0)
    B = len(idx)
    c2w, hist = t.c2w_nerf[idx], t.hists[idx]
    if phase == "fusion":
        n_sets = B if args.per_image_patches else 1
        corners = torch.stack([sample_patch_corners(t.h, t.w, N_PATCHES, gen) for _ in range(n_sets)])
        uv = patch_uv(corners.expand(B, -1, -1)).to(c2w.device)
    else:
        uv = sample_pixels(t, idx, args.N_rand, gen)
    out = render_pixels(model, c2w, uv.float(), t.h, t.w, t.focal, t.near, t.far, hist,
                        with_feat=(phase != "color"), **render_kw)
    target_rgb = _gather(t.rgb, idx, uv)
    # static pixels: random rays were drawn among them already; patches are rendered whole
    keep = None if (t.mask is None or phase != "fusion") else _gather(t.mask[..., None], idx, uv).squeeze(-1)
    sel = (lambda v: v) if keep is None else (lambda v: v[keep])
    col = losses.nerfw_color_loss(sel(out["rgb"]), sel(target_rgb), sel(out["beta"]),
                                  sel(out["transient_sigmas"]), sel(out["rgb0"]))
    terms = {"color": col["total"]}
    total = col["total"]
    if "distortion" in out:
        terms["distortion"] = out["distortion"].mean()
        total = total + args.distortion_loss_w * terms["distortion"]
    if phase != "color":
        target_feat = _gather(t.feat, idx, uv).float()
        terms["feat"] = losses.l1_feature_loss(out["feat"], target_feat, keep)
        total = total + FEATURE_WEIGHT[phase] * terms["feat"]
    if phase == "fusion":
        def to_patches(v):                                           # (B*P*s*s, C) -> (B*P, C, s, s)
            return v.reshape(B * N_PATCHES, PATCH_SIZE, PATCH_SIZE, -1).permute(0, 3, 1, 2)
        fused = model.fuse(to_patches(out["rgb"]), to_patches(out["feat"]))
        m = None if keep is None else keep.reshape(-1, PATCH_SIZE, PATCH_SIZE)
        terms["fusion"] = losses.l1_feature_loss(fused, to_patches(target_feat), m)
        total = total + FUSION_WEIGHT * terms["fusion"]
    if getattr(args, "sparse_depth_w", 0.0) > 0 and t.sparse is not None:
        picked = t.sparse.sample(idx, args.sparse_depth_rays, gen)
        if picked is not None:
            views, xy, z = picked
            kw = {**render_kw, "need_coarse": False, "with_distortion": False}
            d = render_pixels(model, t.c2w_nerf[views], xy - pixel_center(model), t.h, t.w, t.focal, t.near, t.far,
                              t.hists[views], with_feat=False, **kw)["depth"]
            terms["sparse_depth"] = (torch.abs(d - z.reshape(-1)) / z.reshape(-1)).mean()   # relative L1
            total = total + args.sparse_depth_w * terms["sparse_depth"]
    with torch.no_grad():
        terms["psnr"] = losses.psnr(sel(out["rgb"]), sel(target_rgb))
    terms["total"] = total
    return terms


# ----------------------------------------------------------------------------------------------
# checkpoints and resume
# ----------------------------------------------------------------------------------------------
def latest_checkpoint(expdir: Path) -> Path | None:
    """The last ``NNNNNN.tar`` in ``expdir`` (by name, as the original), or None. Ignores ``interrupted.tar``."""
    ckpts = sorted(p for p in Path(expdir).glob("*.tar") if p.stem.isdigit())
    return ckpts[-1] if ckpts else None


def resume_checkpoint(expdir: Path) -> Path | None:
    """What a rerun resumes from: ``interrupted.tar`` when it holds a later epoch than the last
    ``NNNNNN.tar``, else that checkpoint (None when there is neither)."""
    regular, interrupted = latest_checkpoint(expdir), Path(expdir) / INTERRUPTED
    if not interrupted.is_file():
        return regular
    try:
        step = int(load_checkpoint(interrupted, error=TrainingError, what="interrupt checkpoint")["global_step"])
    except (TrainingError, KeyError, TypeError, ValueError) as e:
        _logger.warning("ignoring unreadable %s (%s)", interrupted, e)
        return regular
    return interrupted if regular is None or step > int(regular.stem) else regular


def _resume_candidates(expdir: Path) -> list[Path]:
    """What a rerun may resume from, best first: :func:`resume_checkpoint`, then the older epochs."""
    first = resume_checkpoint(expdir)
    if first is None:
        return []
    older = sorted((p for p in Path(expdir).glob("*.tar") if p.stem.isdigit() and p != first), reverse=True)
    return [first] + older


def _load_resumable(expdir: Path, device, args):
    """(path, model, ckpt) of the newest checkpoint in ``expdir`` that loads; a corrupt newer one is
    skipped with a warning naming it (a kill cannot truncate our atomic writes, but a disk can fail)."""
    errors = []
    for path in _resume_candidates(expdir):
        try:
            model, ckpt = load_nefes(path, device, args)
        except NeFeSCheckpointError as e:
            errors.append(str(e))
            continue
        if errors:
            _logger.warning("could not load %d newer checkpoint(s) (%s); resuming from %s instead",
                            len(errors), "; ".join(errors), path)
        return path, model, ckpt
    if errors:
        raise TrainingError(f"no checkpoint in {expdir} can be loaded ({errors[0]}); --no_reload starts over")
    return None, None, None


def _rng_state(gen: torch.Generator) -> dict:
    return {"generator": gen.get_state(), "torch": torch.get_rng_state(), "numpy": np.random.get_state()}


def _set_rng_state(gen: torch.Generator, state: dict) -> None:
    gen.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])


def make_optimizer(model: NeFeS, lr: float) -> torch.optim.Optimizer:
    """Adam over all parameters (coarse incl. ACT and fusion, fine); fused on CPU/CUDA when possible."""
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), eps=1e-8)


def start_or_resume(args, scene, device, expdir: Path, gen: torch.Generator):
    """Build or load the model; returns (model, optimizer, first_epoch, source description).

    Order: own last checkpoint (resume exactly: weights, Adam, RNG, epoch) unless ``no_reload``;
    else ``ft_path`` (weights only, counter 0, fresh Adam: the stage-2 start); else a new model.
    """
    own, model, ckpt = (None, None, None) if args.no_reload else _load_resumable(expdir, device, args)
    if own is not None:
        if ckpt.get("new_schedule", args.new_schedule) != args.new_schedule:
            raise TrainingError(f"{own} was written by a new_schedule={ckpt.get('new_schedule')} run; "
                                f"use another expname or --no_reload")
        opt = make_optimizer(model, args.lrate)
        if ckpt.get("optimizer_state_dict"):
            opt.load_state_dict(ckpt["optimizer_state_dict"])
        if ckpt.get("rng_state"):
            _set_rng_state(gen, ckpt["rng_state"])
        return model, opt, int(ckpt["global_step"]) + 1, f"resumed from {own}"
    if args.ft_path:
        model, _ = load_nefes(args.ft_path, device, args)
        return model, make_optimizer(model, args.lrate), 0, f"weights from {args.ft_path} (counter reset, fresh Adam)"
    box = torch.as_tensor(scene.frustum_bounds("train"), dtype=torch.float32)
    model = build_nefes(args, scene_box=box, device=device)
    return model, make_optimizer(model, args.lrate), 0, f"new {model.field_type} field"


def run_identity(args, scene) -> dict:
    """What an experiment folder belongs to: a rerun with the same ``expname`` resumes only if these agree."""
    return {"scene": str(scene.name), "dataset_type": str(args.dataset_type), "df": float(args.df),
            "field_type": str(args.field_type)}


def check_resume_identity(args, scene, expdir: Path) -> None:
    """Refuse (one line naming both) to resume ``expdir`` when its checkpoint was trained on another scene,
    dataset type, ``df`` or field type; ``--no_reload`` starts over. Call before anything is written."""
    if args.no_reload:
        return
    old = None
    for path in _resume_candidates(expdir):   # the newest readable one (a corrupt one is skipped at resume)
        try:
            old = load_checkpoint(path, error=TrainingError, what="checkpoint")
            break
        except TrainingError:
            continue
    check_run_identity(old.get("run_identity") if isinstance(old, dict) else None, run_identity(args, scene), expdir)


def save_checkpoint(expdir: Path, model: NeFeS, opt, epoch: int, args, gen, identity: dict | None = None) -> Path:
    """``NNNNNN.tar`` at the end of ``epoch``; a stale ``interrupted.tar`` (an earlier epoch) is removed."""
    path = expdir / f"{epoch:06d}.tar"
    save_nefes(path, model, epoch, opt, new_schedule=args.new_schedule, rng_state=_rng_state(gen),
               run_identity=identity)
    (expdir / INTERRUPTED).unlink(missing_ok=True)
    return path


def snapshot(model: NeFeS, opt, epoch: int, args, gen, identity: dict | None = None) -> dict:
    """An in-memory copy of the checkpoint at the end of ``epoch`` (what ``interrupted.tar`` receives)."""
    return copy.deepcopy(checkpoint_dict(model, epoch, opt, new_schedule=args.new_schedule, rng_state=_rng_state(gen),
                                         run_identity=identity))


# ----------------------------------------------------------------------------------------------
# validation renders
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def render_views(model: NeFeS, t: Targets, args, out_dir: Path | None = None, fuse: bool = False,
                 desc: str = "render") -> dict:
    """Render every view of ``t`` at the render size; PSNR/SSIM vs the colour targets.

    Writes ``<i>_rgb.png`` and ``<i>_feat.png`` (PCA colours) to ``out_dir`` when given.
    """
    psnrs, ssims = [], []
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    for i in tqdm(range(len(t.c2w_nerf)), desc=desc, leave=False):
        out = render_image(model, t.c2w_nerf[i], t.h, t.w, t.focal, t.near, t.far, t.hists[i], fuse=fuse,
                           N_samples=args.N_samples, N_importance=args.N_importance,
                           transient=args.transient_at_test, chunk=args.chunk, netchunk=args.netchunk)
        rgb = out["rgb"][0].clamp(0, 1)                                   # (3, h, w)
        gt = t.rgb[i].permute(2, 0, 1)
        psnrs.append(losses.psnr(rgb, gt).item())
        ssims.append(losses.ssim(rgb[None], gt[None]).item())
        if out_dir is not None:
            stem = f"{i:03d}"
            imageio.imwrite(out_dir / f"{stem}_rgb.png", (rgb.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8))
            feat = out["fused"][0] if fuse else out["feat"][0]
            imageio.imwrite(out_dir / f"{stem}_feat.png", pca_image(feat.cpu())[0])
    return {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims)), "n": len(psnrs)}


# ----------------------------------------------------------------------------------------------
# the loop
# ----------------------------------------------------------------------------------------------
class _Log:
    """Append-only JSON-lines training log (one record per epoch / validation)."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, **record) -> None:
        import json
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def truncate(self, first_epoch: int) -> None:
        """Drop the records of epochs >= ``first_epoch`` (a resumed run writes them again), so a log
        never holds an epoch twice after restarts."""
        import json
        if not self.path.is_file():
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                if int(json.loads(line).get("epoch", -1)) < first_epoch:
                    keep.append(line)
            except (ValueError, AttributeError):
                continue   # a line cut by a kill
        atomic_write_text(self.path, "".join(k + "\n" for k in keep))


def train(args, scene, featnet, device, expdir: Path) -> dict:
    """Train one run (stage 1, or stages 2+3) and return the final validation metrics."""
    expdir.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(expdir)
    identity = run_identity(args, scene)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    model, opt, start, source = start_or_resume(args, scene, device, expdir, gen)
    sched = Schedule.from_args(args)
    _logger.info("%s; epochs %d..%d; phases: colour < %d <= feature < %d <= fusion", source, start,
                 sched.last_epoch, sched.color_only_until, sched.fusion_from)
    needs_feat = sched.phase(sched.last_epoch) != "color"
    if needs_feat and featnet is None:
        raise TrainingError("feature/fusion training needs a DFNet feature extractor (pretrain_featurenet_path)")
    train_t = build_targets(scene.train, scene, args.tinyscale, featnet if needs_feat else None, device)
    val_t = build_targets(scene.test, scene, args.tinyscale, None, device)
    if getattr(args, "sparse_depth_w", 0.0) > 0:
        train_t.sparse = sparse_depth_targets(scene.train, train_t, expdir, device)
    log = _Log(expdir / "train_log.jsonl")
    log.truncate(start)
    n = len(train_t.c2w_nerf)
    n_iter = math.ceil(n / args.batch_size)
    result = {}
    completed = None   # snapshot of the last completed epoch not yet in a regular checkpoint
    epochs = tqdm(range(start, sched.last_epoch + 1), desc="epochs", initial=start, total=sched.last_epoch + 1)
    try:
        for epoch in epochs:
            phase, lr = sched.phase(epoch), sched.lr(epoch)
            for g in opt.param_groups:
                g["lr"] = lr
            perm = torch.randperm(n, generator=gen).to(device)
            sums: dict[str, float] = {}
            model.train()
            bar = tqdm(range(n_iter), desc=f"epoch {epoch} ({phase})", leave=False)
            for it in bar:
                terms = training_step(model, train_t, perm[it * args.batch_size:(it + 1) * args.batch_size],
                                      phase, args, gen)
                opt.zero_grad(set_to_none=True)
                terms["total"].backward()
                opt.step()
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                bar.set_postfix(loss=f"{float(terms['total'].detach()):.4f}", psnr=f"{float(terms['psnr']):.2f}")
            means = {k: v / n_iter for k, v in sums.items()}
            epochs.set_postfix(phase=phase, loss=f"{means['total']:.4f}", psnr=f"{means['psnr']:.2f}")
            log.write(epoch=epoch, phase=phase, lr=lr, **means)
            if epoch % args.i_print == 0:
                _logger.info("epoch %d (%s) lr %.2e loss %.4f train PSNR %.2f", epoch, phase, lr,
                             means["total"], means["psnr"])
            is_last = epoch == sched.last_epoch
            if (epoch > 0 and epoch % args.i_weights == 0) or is_last:
                save_checkpoint(expdir, model, opt, epoch, args, gen, identity)
                completed = None
            else:
                completed = snapshot(model, opt, epoch, args, gen, identity)
            if (epoch > 0 and epoch % args.i_testset == 0) or is_last:
                model.eval()
                result = render_views(model, val_t, args, expdir / f"val_{epoch:06d}",
                                      fuse=epoch >= sched.fusion_from, desc="validation")
                log.write(epoch=epoch, val_psnr=result["psnr"], val_ssim=result["ssim"])
                _logger.info("epoch %d validation: PSNR %.2f dB, SSIM %.3f over %d views", epoch,
                             result["psnr"], result["ssim"], result["n"])
    except KeyboardInterrupt:
        # The unfinished epoch is dropped; the last completed one goes to interrupted.tar (see the docstring).
        if completed is not None:
            path = atomic_torch_save(completed, expdir / INTERRUPTED)
            _logger.warning("interrupted: state at the end of epoch %d saved to %s; rerun to resume",
                            completed["global_step"], path)
        raise
    return result
