"""The NeFeS model container (coarse + fine field, ACT, fusion CNN), its builder and checkpoints.

Checkpoint layout (``torch.save`` of a dict; the original's keys, spec §7.1, plus three of ours):

* ``global_step`` (int), ``optimizer_state_dict`` (or ``None``);
* ``network_fn_state_dict``: coarse field + ``exposure_embedding.params`` (ACT, flat 3072) +
  ``fusion_net.net.*`` (fusion CNN) -- the original layout for the paper field; the hash-grid field
  uses the same scheme with its own coarse-field keys (``encoding.params``, ``sigma_net.*``, ...);
* ``network_fine_state_dict``: fine field;
* ``field_type`` (``nefes_mlp`` | ``hashgrid``), ``scene_box`` (``[[x,y,z],[x,y,z]]`` or ``None``) and
  ``hparams`` (everything needed to rebuild the model without the config).

An original ``nefes.tar`` (no ``field_type``/``hparams``) is recognised from its keys and the paper
architecture is rebuilt from the tensor shapes.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from core.defaults import HASHGRID
from core.errors import NeFeSCheckpointError
from models.appearance import AffineColorTransform
from models.fields import FEAT_DIM, HashGridField, NeFeSMLPField
from models.fusion import FusionNet
from utils.atomic import atomic_torch_save
from utils.checkpoint_io import load_checkpoint

_logger = logging.getLogger(__name__)

ACT_PREFIX = "exposure_embedding."
FUSION_PREFIX = "fusion_net."

#: paper defaults (spec §4.1) used for an original checkpoint when nothing else is known
PAPER_HPARAMS = dict(field_type="nefes_mlp", netdepth=8, netwidth=128, multires=10, multires_views=4,
                     skips=[4], use_fusion_res=False, no_fusion_BN=False, feat_dim=FEAT_DIM)

#: hash-grid architecture keys (config keys and ``hparams`` entries); defaults in ``core/defaults.py``
HASHGRID_KEYS = tuple(HASHGRID)


class NeFeS(nn.Module):
    """Coarse and fine fields, ACT and fusion CNN.

    Attributes:
        coarse, fine: fields (see ``models/fields.py``; the fine field has the transient branch).
        act: :class:`AffineColorTransform` (the original's ``exposure_embedding``).
        fusion: :class:`FusionNet` (the original's ``fusion_net``).
        field_type: ``"nefes_mlp"`` or ``"hashgrid"``.
        scene_box: ``(2, 3)`` NeRF-frame bounds (hash grid) or ``None``.
        hparams: dict that rebuilds this model (:func:`build_from_hparams`).
    """

    def __init__(self, coarse: nn.Module, fine: nn.Module, act: AffineColorTransform, fusion: FusionNet,
                 field_type: str, hparams: dict, scene_box: torch.Tensor | None = None):
        super().__init__()
        self.coarse, self.fine, self.act, self.fusion = coarse, fine, act, fusion
        self.field_type = field_type
        self.hparams = dict(hparams)
        self.scene_box = None if scene_box is None else torch.as_tensor(scene_box, dtype=torch.float32).reshape(2, 3)
        #: renderer default: fine field on the fine samples only (hash grid option), else on the union
        self.fine_only = bool(self.hparams.get("fine_only", False))
        #: where a pixel's ray passes (models/rays.py): 0 (the original; checkpoints without the key) or 0.5
        self.pixel_center = float(self.hparams.get("pixel_center", 0.0))

    def apply_act(self, rgb: torch.Tensor, hist: torch.Tensor) -> torch.Tensor:
        """``(B, R, 3)`` raw colours, ``(B, 10)`` histograms -> ``(B, R, 3)`` = sigmoid(K c + b) per image."""
        return self.act(rgb, hist)

    def fuse(self, rgb_img: torch.Tensor, feat: torch.Tensor, per_image_stats: bool = False) -> torch.Tensor:
        """``(B, 3, h, w)`` ACT colour in [0, 1], ``(B, 128, h, w)`` features -> fused ``(B, 128, h, w)``
        (``per_image_stats``: see :meth:`models.fusion.FusionNet.forward`)."""
        return self.fusion(rgb_img, feat, per_image_stats)

    def network_fn_state_dict(self) -> dict:
        """The original ``network_fn_state_dict``: coarse field + ``exposure_embedding.*`` + ``fusion_net.*``."""
        sd = dict(self.coarse.state_dict())
        sd.update({ACT_PREFIX + k: v for k, v in self.act.state_dict().items()})
        sd.update({FUSION_PREFIX + k: v for k, v in self.fusion.state_dict().items()})
        return sd


# ----------------------------------------------------------------------------------------------
# build
# ----------------------------------------------------------------------------------------------
def hparams_from_args(args) -> dict:
    """The architecture keys of the config namespace (``field_type`` 'auto' means hashgrid for a new model)."""
    ft = getattr(args, "field_type", "hashgrid")
    ft = "hashgrid" if ft in (None, "auto") else ft
    hp = dict(field_type=ft, use_fusion_res=bool(getattr(args, "use_fusion_res", False)),
              no_fusion_BN=bool(getattr(args, "no_fusion_BN", False)), feat_dim=FEAT_DIM)
    if ft == "nefes_mlp":
        hp.update(netdepth=args.netdepth, netwidth=args.netwidth, multires=args.multires,
                  multires_views=args.multires_views, skips=[4])
    elif ft == "hashgrid":
        hp.update({k: getattr(args, k, HASHGRID[k]) for k in HASHGRID_KEYS})
        hp["fine_only"] = bool(getattr(args, "hg_fine_only", True))
    else:
        raise ValueError(f"unknown field_type '{ft}' (expected hashgrid or nefes_mlp)")
    hp["pixel_center"] = float(getattr(args, "pixel_center", 0.0) or 0.0)
    return hp


def build_from_hparams(hparams: dict, scene_box=None, use_tcnn: str = "auto", seed: int = 0) -> NeFeS:
    """Build a :class:`NeFeS` from an ``hparams`` dict (as stored in checkpoints).

    As the original, each field constructor starts from ``torch.manual_seed(seed)`` (coarse and fine
    share the initial weights of the layers they have in common); the caller's RNG state is preserved.
    """
    ft = hparams.get("field_type")
    feat_dim = int(hparams.get("feat_dim", FEAT_DIM))
    if ft == "nefes_mlp":
        kw = dict(netdepth=int(hparams["netdepth"]), netwidth=int(hparams["netwidth"]),
                  multires=int(hparams["multires"]), multires_views=int(hparams["multires_views"]),
                  skips=tuple(hparams.get("skips", [4])), feat_dim=feat_dim)
        make_coarse = lambda: NeFeSMLPField(transient=False, **kw)          # noqa: E731
        make_fine = lambda: NeFeSMLPField(transient=True, **kw)             # noqa: E731
    elif ft == "hashgrid":
        if scene_box is None:
            raise ValueError("field_type=hashgrid needs a scene box (2,3): NeRF-frame camera positions +- far")
        hp = {**HASHGRID, **hparams}
        common = dict(scene_box=scene_box, hash_features=int(hp["hash_features"]),
                      base_resolution=int(hp["base_resolution"]), geo_dim=int(hp["hg_geo_dim"]),
                      feat_dim=feat_dim, use_tcnn=use_tcnn)
        make_fine = lambda: HashGridField(                                                    # noqa: E731
            transient=True, hash_level=int(hp["hash_level"]), log2_hashmap_size=int(hp["log2_hashmap_size"]),
            finest_resolution=int(hp["finest_resolution"]), hidden=int(hp["hg_hidden"]), **common)
        make_coarse = lambda: HashGridField(                                                  # noqa: E731
            transient=False, hash_level=int(hp["hg_coarse_level"]),
            log2_hashmap_size=int(hp["hg_coarse_log2_hashmap_size"]),
            finest_resolution=int(hp["hg_coarse_finest_resolution"]), hidden=int(hp["hg_coarse_hidden"]), **common)
    else:
        raise ValueError(f"unknown field_type {ft!r} (expected hashgrid or nefes_mlp)")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        coarse = make_coarse()
        fusion = FusionNet(feat_dim, use_res=bool(hparams.get("use_fusion_res", False)),
                           no_bn=bool(hparams.get("no_fusion_BN", False)))
        torch.manual_seed(seed)
        fine = make_fine()
    return NeFeS(coarse, fine, AffineColorTransform(), fusion, ft, hparams, scene_box)


def build_nefes(args, scene_box=None, device="cpu") -> NeFeS:
    """Build a new NeFeS from the config's architecture keys (``field_type``, ...) on ``device``."""
    model = build_from_hparams(hparams_from_args(args), scene_box, use_tcnn=getattr(args, "use_tcnn", "auto"))
    return model.to(device)


# ----------------------------------------------------------------------------------------------
# save / load
# ----------------------------------------------------------------------------------------------
def checkpoint_dict(model: NeFeS, global_step: int, optimizer: torch.optim.Optimizer | None = None, **extra) -> dict:
    """The checkpoint :func:`save_nefes` writes (tensors shared with the model and optimizer, not copied)."""
    return {
        "global_step": int(global_step),
        "network_fn_state_dict": model.network_fn_state_dict(),
        "network_fine_state_dict": model.fine.state_dict(),
        "optimizer_state_dict": None if optimizer is None else optimizer.state_dict(),
        "field_type": model.field_type,
        "scene_box": None if model.scene_box is None else model.scene_box.tolist(),
        "hparams": dict(model.hparams),
        **extra,
    }


def save_nefes(path, model: NeFeS, global_step: int, optimizer: torch.optim.Optimizer | None = None, **extra) -> None:
    """Write a checkpoint atomically (temporary file in the same folder, then ``os.replace``)."""
    atomic_torch_save(checkpoint_dict(model, global_step, optimizer, **extra), path)


def _read(path: Path, trust: bool = False) -> dict:
    ckpt = load_checkpoint(path, trust, NeFeSCheckpointError, "NeFeS checkpoint")
    if isinstance(ckpt, dict) and "model_state_dict" in ckpt or (isinstance(ckpt, dict) and ckpt and
                                                                 all(torch.is_tensor(v) for v in ckpt.values())):
        raise NeFeSCheckpointError(f"{path}: this is a DFNet / APR state dict, not a NeFeS checkpoint "
                                   f"(ft_path expects a run_nefes.py .tar with 'network_fn_state_dict')")
    if not isinstance(ckpt, dict) or "network_fn_state_dict" not in ckpt:
        raise NeFeSCheckpointError(f"{path}: not a NeFeS checkpoint (no 'network_fn_state_dict' key)")
    return ckpt


def detect_field_type(fn_state: dict) -> str:
    """``nefes_mlp`` or ``hashgrid`` from the coarse state-dict keys."""
    if "xyz_encoding_1.0.weight" in fn_state:
        return "nefes_mlp"
    if "encoding.params" in fn_state:
        return "hashgrid"
    raise KeyError("neither 'xyz_encoding_1.0.weight' (paper field) nor 'encoding.params' (hash grid)")


def infer_mlp_hparams(fn_state: dict, use_fusion_res: bool = False) -> dict:
    """Paper-field hparams from the tensor shapes of an original ``network_fn_state_dict``."""
    hp = dict(PAPER_HPARAMS)
    w1 = fn_state["xyz_encoding_1.0.weight"]
    W, cx = int(w1.shape[0]), int(w1.shape[1])
    depth = 0
    while f"xyz_encoding_{depth + 1}.0.weight" in fn_state:
        depth += 1
    skips = [i for i in range(1, depth) if int(fn_state[f"xyz_encoding_{i + 1}.0.weight"].shape[1]) == W + cx]
    cd = int(fn_state["dir_encoding.0.weight"].shape[1]) - W
    hp.update(netdepth=depth, netwidth=W, multires=(cx // 3 - 1) // 2, multires_views=(cd // 3 - 1) // 2,
              skips=skips, no_fusion_BN=FUSION_PREFIX + "net.7.weight" not in fn_state,
              use_fusion_res=bool(use_fusion_res))
    if "static_rgb.0.weight" in fn_state:
        hp["feat_dim"] = int(fn_state["static_rgb.0.weight"].shape[0]) - 3
    return hp


def _split_fn(fn_state: dict):
    coarse, act, fusion = {}, {}, {}
    for k, v in fn_state.items():
        if k.startswith(ACT_PREFIX):
            act[k[len(ACT_PREFIX):]] = v
        elif k.startswith(FUSION_PREFIX):
            fusion[k[len(FUSION_PREFIX):]] = v
        else:
            coarse[k] = v
    return coarse, act, fusion


def _load_part(module: nn.Module, state: dict, name: str, path: Path, strict: bool) -> None:
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if shape:
        k = shape[0]
        raise NeFeSCheckpointError(f"{path}: {name} '{k}' has shape {tuple(state[k].shape)}, model expects "
                                   f"{tuple(own[k].shape)} ({len(shape)} mismatched tensors)")
    if missing or unexpected:
        msg = (f"{path}: {name}: {len(missing)} missing keys {missing[:4]}, "
               f"{len(unexpected)} unexpected keys {unexpected[:4]}")
        if strict:
            raise NeFeSCheckpointError(msg)
        _logger.warning(msg)
    module.load_state_dict(state, strict=False)


def load_nefes(path, device="cpu", args=None, strict: bool = True):
    """Load a NeFeS checkpoint (ours or an original ``nefes.tar``).

    Args:
        path: checkpoint file.
        device: target device.
        args: optional config namespace: ``use_tcnn``, ``field_type`` (a mismatch is logged), ``pixel_center``
            (the checkpoint's value is used; a config asking for centred rays of a field trained without is logged),
            ``trust_checkpoint`` (:func:`utils.checkpoint_io.load_checkpoint`) and, for an original
            checkpoint, ``use_fusion_res``.
        strict: missing/unexpected keys are an error (else a warning).
    Returns:
        ``(model, ckpt)``: the :class:`NeFeS` (on ``device``) and the raw checkpoint dict
        (``global_step``, ``optimizer_state_dict`` for resuming).
    Raises:
        NeFeSCheckpointError: one line naming the file and the problem.
    """
    path = Path(path)
    ckpt = _read(path, bool(getattr(args, "trust_checkpoint", False)))
    fn_state = ckpt["network_fn_state_dict"]
    fine_state = ckpt.get("network_fine_state_dict")
    if fine_state is None:
        raise NeFeSCheckpointError(f"{path}: no 'network_fine_state_dict' (a NeFeS needs the fine field)")
    try:
        ftype = ckpt.get("field_type") or detect_field_type(fn_state)
    except KeyError as e:
        raise NeFeSCheckpointError(f"{path}: unknown NeFeS field: {e.args[0]}") from None
    want = getattr(args, "field_type", "auto") if args is not None else "auto"
    if want not in (None, "auto", ftype):
        _logger.warning("%s holds a %s field; --field_type %s ignored", path, ftype, want)
    hparams = ckpt.get("hparams")
    if not hparams:
        if ftype != "nefes_mlp":
            raise NeFeSCheckpointError(f"{path}: hash-grid checkpoint without 'hparams'")
        hparams = infer_mlp_hparams(fn_state, getattr(args, "use_fusion_res", False))
        _logger.info("%s: original NeFeS checkpoint, paper architecture %s", path, hparams)
    hparams = {**hparams, "field_type": ftype}
    scene_box = ckpt.get("scene_box")
    if ftype == "hashgrid" and scene_box is None:
        raise NeFeSCheckpointError(f"{path}: hash-grid checkpoint without 'scene_box'")
    try:
        model = build_from_hparams(hparams, scene_box, use_tcnn=getattr(args, "use_tcnn", "auto"))
    except (KeyError, ValueError, TypeError) as e:
        raise NeFeSCheckpointError(f"{path}: invalid hparams ({type(e).__name__}: {e})") from None
    asked = float(getattr(args, "pixel_center", 0.0) or 0.0)
    if asked and asked != model.pixel_center:   # e.g. stage 2 set to 0.5 on a stage-1 field cast at 0
        _logger.warning("%s was trained with pixel_center=%g; pixel_center=%g ignored (the checkpoint decides)",
                        path, model.pixel_center, asked)
    coarse_sd, act_sd, fusion_sd = _split_fn(fn_state)
    _load_part(model.coarse, coarse_sd, "network_fn_state_dict (coarse field)", path, strict)
    _load_part(model.act, act_sd, "network_fn_state_dict (exposure_embedding)", path, strict)
    _load_part(model.fusion, fusion_sd, "network_fn_state_dict (fusion_net)", path, strict)
    _load_part(model.fine, fine_state, "network_fine_state_dict", path, strict)
    return model.to(device), ckpt
