"""APR registry and ``load_APR_and_FeatureNet`` (spec §9).

Every APR is returned wrapped as an :class:`APR` module with one contract:

    apr(img (B, 3, H, W) float in [0, 1]) -> (B, 3, 4) camera-to-world in the APR frame

(OpenGL camera axes, centred by pose_avg_stats, metres, not rescaled; no SVD — refinement applies
``svd_reg`` itself), differentiable w.r.t. the APR's parameters. The feature extractor is always a
:class:`models.dfnet.DFNet` (eval mode, frozen).

Built-in APRs (``--PoseEstimatorType``)
---------------------------------------
* ``DFNet``: a DFNet checkpoint from ``pretrain_model_path`` (original ``.pt`` or ours).
* ``PoseNet``: torchvision backbone with ``weights=None`` + Linear -> 12 (MobileNetV2 by default,
  ResNet34 with ``--resnet34``, EfficientNet-B3 with ``--efficientnet``), ImageNet normalisation inside,
  state dict from ``pretrain_model_path``. Needs torchvision (imported via models.torchvision_compat).

Adding an APR (one place, no change to the refinement code)
-----------------------------------------------------------
Register a builder ``fn(args, device) -> nn.Module`` in this module or in any module imported before
``load_APR_and_FeatureNet`` runs::

    from dm.direct_pose_model import register_apr, load_state_dict_file

    @register_apr("MyAPR")
    def build_my_apr(args, device):
        net = MyNet()
        if args.pretrain_model_path:
            net.load_state_dict(load_state_dict_file(args.pretrain_model_path, args.trust_checkpoint))
        return net   # forward(img in [0, 1]) -> (B, 12) row-major 3x4, or (B, 3, 4), or (features, pose)

and run with ``--PoseEstimatorType MyAPR`` when that code lives here, or keep it in your own file
``my_apr.py`` and run with ``--PoseEstimatorType my_apr:MyAPR`` (the module is imported first). The wrapper normalises the output to (B, 3, 4); the model
must take the loader's images as they are (normalise inside) and be differentiable.

Training an APR for this pipeline
---------------------------------
Train it on the poses the project's loaders return (``dataset_loaders.load_scene(args)``:
``scene.train[i]["pose"]`` is the APR-frame c2w, ``scene.train[i]["img"]`` the image in [0, 1]) so it
regresses in the same frame NeFeS and the metrics use; poses from another convention (e.g. raw
dataset frames or quaternions in OpenCV axes) must be converted with ``core.frames`` first.
``train_dfnet.py`` does this for DFNet.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from core.errors import APRError
from models.dfnet import (DFNet, DFNetCheckpointError, IMAGENET_MEAN, IMAGENET_STD, frozen_dfnet, load_dfnet,
                          read_checkpoint, unwrap_state_dict)

_logger = logging.getLogger(__name__)

#: name -> builder(args, device) -> nn.Module (see the module docstring).
APR_REGISTRY: dict[str, Callable[[argparse.Namespace, torch.device], nn.Module]] = {}


def register_apr(name: str):
    """Decorator registering ``fn(args, device) -> nn.Module`` under ``--PoseEstimatorType name``."""
    def deco(fn):
        if name in APR_REGISTRY and APR_REGISTRY[name] is not fn:
            _logger.warning("APR '%s' registered again: the new builder replaces the old one", name)
        APR_REGISTRY[name] = fn
        return fn
    return deco


def resolve_apr_name(spec: str) -> str:
    """``Name`` or ``module:Name`` -> the registered name; the second form imports ``module`` first
    (a dotted module path importable from the working directory) so its ``@register_apr`` runs."""
    module, _, name = spec.rpartition(":")
    if module:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise APRError(f"PoseEstimatorType '{spec}': cannot import module '{module}' ({e})") from None
    if name not in APR_REGISTRY:
        where = f" (module '{module}' did not register it)" if module else ""
        raise APRError(f"PoseEstimatorType '{name}' is not registered{where}; known: {', '.join(sorted(APR_REGISTRY))}")
    return name


class APR(nn.Module):
    """Uniform APR interface: ``forward(img (B,3,H,W) in [0,1]) -> (B,3,4)`` APR-frame c2w.

    Accepts inner models returning a (B, 12) vector, (B, 3, 4) matrices, or a ``(features, pose)``
    tuple (DFNet's call contract). ``freeze_bn`` keeps BatchNorm layers in eval mode with frozen
    affine parameters even when ``train()`` is called (refinement calls ``train()`` on the APR).
    """

    def __init__(self, net: nn.Module, name: str, freeze_bn: bool = False):
        super().__init__()
        self.net = net
        self.name = name
        self.freeze_bn = freeze_bn
        if freeze_bn:
            for m in self._bn_layers():
                for p in m.parameters():
                    p.requires_grad_(False)

    def _bn_layers(self):
        return [m for m in self.net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_bn:
            for m in self._bn_layers():
                m.eval()
        return self

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if isinstance(self.net, DFNet):
            return self.net.predict_pose(img)  # skips the feature path entirely
        out = self.net(img)
        if isinstance(out, (tuple, list)):
            out = out[-1]
        if out.dim() == 2 and out.shape[-1] == 12:
            return out.view(-1, 3, 4)
        if out.dim() == 3 and out.shape[-2:] == (3, 4):
            return out
        raise APRError(f"APR '{self.name}' returned shape {tuple(out.shape)}; expected (B, 12) or (B, 3, 4)")


# ----------------------------------------------------------------------------------------------
# checkpoints
# ----------------------------------------------------------------------------------------------
def load_state_dict_file(path: str | Path, trust: bool = False) -> dict:
    """A state dict from ``path``: a bare state dict or a dict holding ``model_state_dict``, read safely
    (``trust``: ``--trust_checkpoint``, see :mod:`utils.checkpoint_io`)."""
    try:
        return unwrap_state_dict(read_checkpoint(path, trust), path)[0]
    except DFNetCheckpointError as e:
        raise APRError(str(e)) from None


def _checkpoint_path(args, key: str, what: str) -> str | None:
    """The checkpoint path in ``args.<key>``; None (random init) only with ``--apr_random_init``."""
    path = getattr(args, key, None) or ""
    if path and Path(path).is_file():
        return path
    problem = f"{key}='{path}' not found" if path else f"{key} is not set"
    if getattr(args, "apr_random_init", False):
        _logger.warning("%s: %s -> RANDOMLY INITIALISED %s (apr_random_init; tests/demos only)", what, problem, what)
        return None
    raise APRError(f"{what}: {problem} (give a checkpoint, or --apr_random_init for a random network)")


def _trust(args) -> bool:
    return bool(getattr(args, "trust_checkpoint", False))


def _load_strict(net: nn.Module, path: str, name: str, trust: bool = False) -> None:
    sd = load_state_dict_file(path, trust)
    missing, unexpected = net.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise APRError(f"{path}: state dict does not match APR '{name}' "
                       f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})")


# ----------------------------------------------------------------------------------------------
# built-in APRs
# ----------------------------------------------------------------------------------------------
@register_apr("DFNet")
def build_dfnet_apr(args, device) -> nn.Module:
    path = _checkpoint_path(args, "pretrain_model_path", "APR (DFNet)")
    try:
        if path is None:
            return DFNet(width=getattr(args, "dfnet_width", 1.0)).to(device)
        return load_dfnet(path, device, trust=_trust(args))
    except DFNetCheckpointError as e:
        raise APRError(str(e)) from None


class _ImageNetNormalized(nn.Module):
    """backbone(ImageNet-normalised image) -> (B, 12)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.register_buffer("img_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("img_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.backbone((img - self.img_mean) / self.img_std)


def build_posenet_backbone(variant: str) -> nn.Module:
    """torchvision backbone (``weights=None``, never downloads) with its classifier replaced by
    Linear(-> 12). ``variant`` in {"mobilenet_v2", "resnet34", "efficientnet_b3"}."""
    from models.torchvision_compat import import_torchvision
    tvm = import_torchvision().models
    if variant == "resnet34":
        m = tvm.resnet34(weights=None)
        m.fc = nn.Linear(m.fc.in_features, 12)
    elif variant == "efficientnet_b3":
        m = tvm.efficientnet_b3(weights=None)
        m.classifier = nn.Linear(m.classifier[-1].in_features, 12)
    elif variant == "mobilenet_v2":
        m = tvm.mobilenet_v2(weights=None)
        m.classifier = nn.Linear(m.classifier[-1].in_features, 12)
    else:
        raise APRError(f"unknown PoseNet backbone '{variant}'")
    return _ImageNetNormalized(m)


@register_apr("PoseNet")
def build_posenet_apr(args, device) -> nn.Module:
    variant = "resnet34" if args.resnet34 else "efficientnet_b3" if args.efficientnet else "mobilenet_v2"
    net = build_posenet_backbone(variant)
    path = _checkpoint_path(args, "pretrain_model_path", f"APR (PoseNet {variant})")
    if path is not None:
        _load_strict(net, path, f"PoseNet {variant}", _trust(args))
    return net.to(device)


# ----------------------------------------------------------------------------------------------
# entry point
# ----------------------------------------------------------------------------------------------
def load_feature_net(args, device) -> DFNet:
    """The DFNet feature extractor from ``pretrain_featurenet_path``, in eval mode with frozen weights.

    When that key is empty and the APR is a DFNet checkpoint, the APR checkpoint is used (logged).
    """
    key = "pretrain_featurenet_path"
    if not getattr(args, key, None) and args.PoseEstimatorType == "DFNet" and args.pretrain_model_path:
        _logger.info("pretrain_featurenet_path not set: using the APR checkpoint %s as feature extractor",
                     args.pretrain_model_path)
        key = "pretrain_model_path"
    path = _checkpoint_path(args, key, "feature extractor (DFNet)")
    try:
        return frozen_dfnet(path, device, width=getattr(args, "dfnet_width", 1.0), seed=getattr(args, "seed", 0),
                            trust=_trust(args))
    except DFNetCheckpointError as e:
        raise APRError(str(e)) from None


def load_APR_and_FeatureNet(args, device) -> tuple[APR, DFNet]:
    """Build the APR selected by ``args.PoseEstimatorType`` and the DFNet feature extractor.

    Returns:
        (apr, feat_net): ``apr(img (B,3,H,W) in [0,1]) -> (B,3,4)`` APR-frame c2w (eval mode, trainable
        parameters; ``freezeBN`` freezes its BatchNorm layers); ``feat_net`` a frozen DFNet in eval mode.

    Raises:
        APRError: unknown type, missing/corrupt checkpoint (one line naming the key or file).
    """
    device = torch.device(device)
    name = resolve_apr_name(args.PoseEstimatorType)
    apr = APR(APR_REGISTRY[name](args, device), name, freeze_bn=bool(getattr(args, "freezeBN", False))).to(device)
    apr.eval()
    feat_net = load_feature_net(args, device)
    _logger.info("APR %s (%d parameters) and DFNet feature extractor (width %g) ready on %s",
                 name, sum(p.numel() for p in apr.parameters()), feat_net.width, device)
    return apr, feat_net
