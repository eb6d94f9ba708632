"""DFNet: VGG16 absolute pose regressor and dense feature extractor (spec §2.1, §2.2).

One network, two uses:

* **APR**: image -> pool5 -> global average pool -> ``fc_pose`` Linear(C5 -> 12). The 12 numbers are the
  row-major 3x4 camera-to-world ``[R|t]`` in the APR frame (OpenGL camera axes, centred by
  pose_avg_stats, metres). No SVD here: orthonormalisation (``svd_reg``) belongs to the caller.
* **Feature extractor**: hypercolumn taps at VGG16 ``features`` indices 2 / 14 / 28 (conv1_2, conv3_3,
  conv5_3, taken *before* their ReLU, strides 1 / 4 / 16), each through an adaptation head
  Conv1x1(C -> 64) -> ReLU -> Conv5x5(64 -> 128, pad 2) -> BatchNorm2d(128), then resized with
  bilinear ``align_corners=True`` to the requested size. NeFeS uses level 0 only.

State-dict names are the original's (``encoder.{0,2,...,28}``, ``adaptation_layers.adapt_layer_{0,1,2}``,
``fc_pose``), so released ``.pt`` files load strictly. Constructing the network never downloads
anything: the VGG16 trunk is defined here, torchvision is not needed.

``width`` scales every VGG channel count and the adaptation heads' hidden 64 channels (rounded,
at least 4) so a slim DFNet can be trained on a CPU; features stay 128-d. ``width=1.0`` is the paper.

Input images are ``(B, 3, H, W)`` float in [0, 1]; ImageNet normalisation happens inside.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import DFNetCheckpointError
from utils.atomic import atomic_torch_save
from utils.checkpoint_io import load_checkpoint

_logger = logging.getLogger(__name__)

#: VGG16 configuration D: conv output channels, "M" = 2x2 max-pool. Gives torchvision's 31 modules.
VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def _conv_channels() -> dict[int, int]:
    """{encoder module index: conv output channels at width 1} (conv+ReLU take 2 indices, a pool 1)."""
    out, i = {}, 0
    for v in VGG16_CFG:
        if v != "M":
            out[i] = v
        i += 1 if v == "M" else 2
    return out


VGG16_CONV_CHANNELS = _conv_channels()
#: ``encoder`` module indices whose (pre-ReLU) outputs are the three feature levels.
HYPERCOLUMN_INDICES = (2, 14, 28)
FEATURE_DIM = 128
ADAPT_HIDDEN = 64
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: torchvision's ImageNet VGG16 file name inside ``torch.hub.get_dir()/checkpoints``.
VGG16_IMAGENET_FILE = "vgg16-397923af.pth"


def scaled_channels(c: int, width: float) -> int:
    """Channel count ``c`` scaled by ``width`` (rounded, at least 4)."""
    return max(4, int(round(c * width)))


def _adapt_head(c_in: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, hidden, kernel_size=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(hidden, FEATURE_DIM, kernel_size=5, padding=2),
        nn.BatchNorm2d(FEATURE_DIM),
    )


class AdaptLayers(nn.Module):
    """One adaptation head per hypercolumn level (names ``adapt_layer_{i}`` as the original)."""

    def __init__(self, in_channels: list[int], hidden: int):
        super().__init__()
        self.n_levels = len(in_channels)
        for i, c in enumerate(in_channels):
            setattr(self, f"adapt_layer_{i}", _adapt_head(c, hidden))

    def head(self, level: int) -> nn.Sequential:
        return getattr(self, f"adapt_layer_{level}")

    def forward(self, feats: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        """{level: (B, C_l, h_l, w_l)} -> {level: (B, 128, h_l, w_l)}."""
        return {lvl: self.head(lvl)(x) for lvl, x in feats.items()}


def build_vgg16_features(width: float = 1.0) -> nn.Sequential:
    """VGG16 ``features`` without BatchNorm: 13 conv3x3(pad 1)+ReLU and 5 max-pools, 31 modules,
    torchvision's indices. Kaiming-normal init (fan_out, ReLU), zero biases (torchvision's choice)."""
    layers: list[nn.Module] = []
    c_in = 3
    for v in VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        c_out = scaled_channels(v, width)
        conv = nn.Conv2d(c_in, c_out, kernel_size=3, padding=1)
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(conv.bias)
        layers += [conv, nn.ReLU(inplace=True)]
        c_in = c_out
    return nn.Sequential(*layers)


class DFNet(nn.Module):
    """VGG16 APR + hypercolumn feature extractor (original parameter names).

    Args:
        width: channel multiplier (1.0 = paper).
        imagenet_init: copy torchvision's ImageNet VGG16 weights into the trunk, *only* when the file
            is already in the local torch hub cache and ``width == 1.0``; never downloads.
    """

    def __init__(self, width: float = 1.0, imagenet_init: bool = False):
        super().__init__()
        self.width = float(width)
        self.encoder = build_vgg16_features(self.width)
        convs = [m for m in self.encoder if isinstance(m, nn.Conv2d)]
        tap_channels = [self.encoder[i].out_channels for i in HYPERCOLUMN_INDICES]
        self.adaptation_layers = AdaptLayers(tap_channels, scaled_channels(ADAPT_HIDDEN, self.width))
        self.fc_pose = nn.Linear(convs[-1].out_channels, 12)
        # Buffers are non-persistent so the state dict keeps exactly the original's keys.
        self.register_buffer("img_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("img_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if imagenet_init:
            self.load_imagenet_from_cache()

    # ------------------------------------------------------------------------------------------
    def load_imagenet_from_cache(self) -> bool:
        """Load torchvision's ImageNet VGG16 trunk from ``torch.hub.get_dir()/checkpoints`` if present.

        Returns True when loaded. Never downloads; logs why the network stays randomly initialised.
        """
        path = Path(torch.hub.get_dir()) / "checkpoints" / VGG16_IMAGENET_FILE
        if self.width != 1.0:
            _logger.warning("imagenet_init: ImageNet VGG16 weights exist only for width 1.0 (width=%g); "
                            "DFNet trunk stays randomly initialised", self.width)
            return False
        if not path.is_file():
            _logger.warning("imagenet_init: %s not found in the local torch hub cache (nothing is downloaded); "
                            "DFNet trunk stays randomly initialised", path)
            return False
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
            trunk = {k[len("features."):]: v for k, v in sd.items() if k.startswith("features.")}
            self.encoder.load_state_dict(trunk, strict=True)
        except Exception as e:  # corrupt cache file: keep the random init, say so
            _logger.warning("imagenet_init: could not load %s (%s); DFNet trunk stays randomly initialised", path, e)
            return False
        _logger.info("imagenet_init: VGG16 trunk initialised from %s", path)
        return True

    # ------------------------------------------------------------------------------------------
    def _trunk(self, img: torch.Tensor, taps: tuple[int, ...], stop: int) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
        """Run encoder modules 0..stop; return {level: pre-ReLU tap} for ``taps`` and the last output."""
        x = (img - self.img_mean) / self.img_std
        feats: dict[int, torch.Tensor] = {}
        for i in range(stop + 1):
            x = self.encoder[i](x)
            if i in HYPERCOLUMN_INDICES:
                lvl = HYPERCOLUMN_INDICES.index(i)
                if lvl in taps:
                    # The next module is an in-place ReLU: keep a copy of the pre-activation.
                    feats[lvl] = x.clone()
        return feats, x

    def _pose_head(self, pool5: torch.Tensor) -> torch.Tensor:
        return self.fc_pose(F.adaptive_avg_pool2d(pool5, 1).flatten(1))  # (B, 12)

    def _features(self, taps: dict[int, torch.Tensor], size: tuple[int, int]) -> dict[int, torch.Tensor]:
        out = self.adaptation_layers(taps)
        return {lvl: resize_features(f, size) for lvl, f in out.items()}

    def forward(self, img: torch.Tensor, return_feature: bool = False, isSingleStream: bool = True,
                return_pose: bool = True, upsampleH: int | None = None, upsampleW: int | None = None):
        """The original call contract.

        Args:
            img: (B, 3, H, W) in [0, 1].
            return_feature: compute the three feature levels.
            isSingleStream: False = siamese mode (training): the batch is two halves (e.g. real and
                rendered images) that share one pass (adaptation BN sees both); features are split.
            return_pose: False stops the encoder after conv5_3 (no pose).
            upsampleH, upsampleW: feature size (default: the input size; the original always passes them).

        Returns:
            ``(features, pose)``: features is None without ``return_feature``; else single stream:
            ``[ (3, B, 128, H', W') ]``, siamese: ``[ (3, B/2, 128, H', W'), (3, B/2, 128, H', W') ]``.
            pose is (B, 12) (row-major 3x4 c2w, APR frame) or None when ``return_pose=False``.
        """
        if not isSingleStream and img.shape[0] % 2:
            raise ValueError(f"siamese mode needs an even batch, got {img.shape[0]}")
        levels = tuple(range(len(HYPERCOLUMN_INDICES))) if return_feature else ()
        size = (upsampleH or img.shape[-2], upsampleW or img.shape[-1])
        pose, feats = self.pose_and_features(img, levels, size, with_pose=return_pose)
        if not return_feature:
            return None, pose
        stacked = torch.stack([feats[lvl] for lvl in levels])  # (3, B, 128, H', W')
        if isSingleStream:
            return [stacked], pose
        half = img.shape[0] // 2
        return [stacked[:, :half], stacked[:, half:]], pose

    def pose_and_features(self, img: torch.Tensor, levels: tuple[int, ...] = (), size: tuple[int, int] | None = None,
                          with_pose: bool = True, n_feat: int | None = None,
                          crop: tuple[int, int, int, int] | None = None):
        """One encoder pass giving the pose and only the requested feature levels.

        Args:
            img: (B, 3, H, W) in [0, 1].
            levels: feature levels to compute (subset of 0..2).
            size: feature size (default: input size).
            with_pose: False stops after the deepest requested tap.
            n_feat: compute features for the first ``n_feat`` images only (training: the real and
                rendered halves get features, the random-view images only a pose).
            crop: ``(y0, x0, h, w)`` window of the features at the input size (``size`` must be the
                input size): level 0 is computed on that window only (plus the 5x5 conv's 2-pixel
                halo, so in eval mode values equal the full map's window) — the level-0 head at full
                resolution dominates training cost.

        Returns:
            pose (B, 12) or None, and {level: (n_feat, 128, h, w)} (the crop's h, w with ``crop``).
        """
        levels = tuple(levels)
        if any(lvl not in range(len(HYPERCOLUMN_INDICES)) for lvl in levels):
            raise ValueError(f"feature levels must be a subset of 0..2, got {levels}")
        if not levels and not with_pose:
            return None, {}
        stop = len(self.encoder) - 1 if with_pose else HYPERCOLUMN_INDICES[max(levels)]
        taps, last = self._trunk(img, levels, stop)
        pose = self._pose_head(last) if with_pose else None
        if n_feat is not None:
            taps = {lvl: t[:n_feat] for lvl, t in taps.items()}
        size = tuple(size) if size is not None else tuple(img.shape[-2:])
        if crop is None:
            return pose, self._features(taps, size)
        if size != tuple(img.shape[-2:]):
            raise ValueError("crop needs features at the input size")
        return pose, self._cropped_features(taps, crop, size)

    def _cropped_features(self, taps: dict[int, torch.Tensor], crop, size: tuple[int, int]) -> dict[int, torch.Tensor]:
        y0, x0, h, w = crop
        H, W = size
        if not (0 <= y0 and 0 <= x0 and 0 < h and 0 < w and y0 + h <= H and x0 + w <= W):
            raise ValueError(f"crop {tuple(crop)} outside the {H}x{W} feature map")
        out = {}
        for lvl, t in taps.items():
            if lvl == 0:  # native resolution: run the head on the window + the 5x5 conv's halo only
                halo = 2
                ya, xa = max(0, y0 - halo), max(0, x0 - halo)
                yb, xb = min(H, y0 + h + halo), min(W, x0 + w + halo)
                f = self.adaptation_layers.head(0)(t[..., ya:yb, xa:xb])
                out[0] = f[..., y0 - ya:y0 - ya + h, x0 - xa:x0 - xa + w]
            else:  # strided levels are cheap: full head, resize, then cut the window
                out[lvl] = resize_features(self.adaptation_layers.head(lvl)(t), size)[..., y0:y0 + h, x0:x0 + w]
        return out

    # ------------------------------------------------------------------------------------------
    def predict_pose(self, img: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, 3, 4) camera-to-world, APR frame (not orthonormalised)."""
        _, last = self._trunk(img, (), len(self.encoder) - 1)
        return self._pose_head(last).view(-1, 3, 4)

    def extract_features(self, img: torch.Tensor, size: tuple[int, int] | None = None,
                         levels: tuple[int, ...] = (0,)) -> torch.Tensor:
        """Dense features resized (bilinear, align_corners=True) to ``size`` (default: input size).

        The encoder stops at the deepest requested tap (level 0 only needs conv1_1..conv1_2).
        Runs in whatever mode/grad state the caller set (feature extraction for NeFeS targets and
        refinement is done in ``eval()`` under ``torch.no_grad()``).

        Returns:
            (B, 128, h, w) when one level is requested, else (L, B, 128, h, w) in ``levels`` order.
        """
        levels = tuple(levels)
        if not levels:
            raise ValueError("extract_features needs at least one feature level")
        _, feats = self.pose_and_features(img, levels, size, with_pose=False)
        if len(levels) == 1:
            return feats[levels[0]]
        return torch.stack([feats[lvl] for lvl in levels])


def resize_features(feat: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, C, h, w) -> (B, C, H, W) bilinear with align_corners=True (the original's
    UpsamplingBilinear2d); identity when the size already matches."""
    if tuple(feat.shape[-2:]) == tuple(size):
        return feat
    return F.interpolate(feat, size=tuple(size), mode="bilinear", align_corners=True)


# ----------------------------------------------------------------------------------------------
# checkpoints
# ----------------------------------------------------------------------------------------------
def infer_width(state_dict: dict) -> float:
    """Channel multiplier of a DFNet state dict (1.0 for the original checkpoints).

    Each conv with c channels at width 1 and n in the file constrains the width to the interval
    where ``scaled_channels(c, width) == n``; the result lies in the intersection (preferring
    n_conv5_3 / 512, the plain ratio). When the intervals do not meet, that ratio is returned and
    strict loading reports the mismatching tensor.
    """
    key = f"encoder.{HYPERCOLUMN_INDICES[-1]}.weight"
    if key not in state_dict:
        raise KeyError(key)
    pairs = [(c, int(state_dict[f"encoder.{i}.weight"].shape[0]))
             for i, c in VGG16_CONV_CHANNELS.items() if f"encoder.{i}.weight" in state_dict]
    hidden_key = "adaptation_layers.adapt_layer_0.0.weight"
    if hidden_key in state_dict:
        pairs.append((ADAPT_HIDDEN, int(state_dict[hidden_key].shape[0])))
    ratio = int(state_dict[key].shape[0]) / 512.0
    lo = max(0.0 if n <= 4 else (n - 0.5) / c for c, n in pairs)
    hi = min((n + 0.5) / c for c, n in pairs)
    for w in (1.0, ratio, (lo + hi) / 2):
        if all(scaled_channels(c, w) == n for c, n in pairs):
            return w
    return ratio


def unwrap_state_dict(obj, path) -> tuple[dict, dict]:
    """(state dict, metadata) of a loaded checkpoint: a bare state dict (original ``.pt``) or our dict with
    ``model_state_dict`` + metadata. Keys saved from ``nn.DataParallel`` lose their ``module.`` prefix here.

    Raises:
        DFNetCheckpointError: ``obj`` holds no (non-empty) state dict.
    """
    if isinstance(obj, dict) and "network_fn_state_dict" in obj:
        raise DFNetCheckpointError(f"{path}: this is a NeFeS checkpoint (run_nefes.py .tar), not a DFNet / APR "
                                   f"checkpoint (pretrain_model_path / pretrain_featurenet_path expect a .pt state dict)")
    if isinstance(obj, dict) and "model_state_dict" in obj:
        meta = {k: v for k, v in obj.items() if k not in ("model_state_dict", "optimizer_state_dict")}
        sd = obj["model_state_dict"]
    else:
        sd, meta = obj, {}
    if not isinstance(sd, dict) or not sd or not all(torch.is_tensor(v) for v in sd.values()):
        raise DFNetCheckpointError(f"{path}: not a state dict (expected tensors keyed by parameter name)")
    # Checkpoints saved from nn.DataParallel prefix every key with 'module.'.
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd, meta


def read_checkpoint(path: str | os.PathLike, trust: bool = False) -> object:
    """The checkpoint's object, read safely (:func:`utils.checkpoint_io.load_checkpoint`), one clear
    error line for a missing, unreadable or unsafe file."""
    if not path:
        raise DFNetCheckpointError(f"{path}: checkpoint file not found")
    return load_checkpoint(path, trust, DFNetCheckpointError, "checkpoint")


def load_dfnet(path: str | os.PathLike, device="cpu", width: float | None = None, trust: bool = False) -> DFNet:
    """Load a DFNet checkpoint strictly, in eval() mode, on ``device``.

    Accepts an original DFNet ``.pt`` (bare state dict, spec §7.1) or our own dict checkpoints
    (``model_state_dict`` + metadata such as ``width`` and ``epoch``, kept in ``net.checkpoint_meta``).
    The width is inferred from the tensor shapes; a given ``width`` must agree with them.

    Raises:
        DFNetCheckpointError: missing/corrupt file, or keys/shapes that do not match a DFNet (one line).
    """
    sd, meta = unwrap_state_dict(read_checkpoint(path, trust), path)
    try:
        inferred = infer_width(sd)
    except KeyError as e:
        raise DFNetCheckpointError(f"{path}: not a DFNet checkpoint (missing key {e.args[0]})") from None
    if width is not None and abs(scaled_channels(512, width) - scaled_channels(512, inferred)) > 0:
        raise DFNetCheckpointError(f"{path}: checkpoint has width {inferred:g} but width={width:g} was requested")
    net = DFNet(width=inferred)
    missing, unexpected = _key_diff(net.state_dict(), sd)
    if missing or unexpected:
        raise DFNetCheckpointError(f"{path}: state dict does not match DFNet: "
                                   f"missing {_short(missing)}, unexpected {_short(unexpected)}")
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        first = next((ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln), str(e).splitlines()[0])
        raise DFNetCheckpointError(f"{path}: state dict does not match DFNet (width {inferred:g}): {first}") from None
    net.checkpoint_meta = meta
    _logger.info("loaded DFNet (width %g) from %s", inferred, path)
    return net.to(device).eval()


def frozen_dfnet(path: str | os.PathLike | None, device="cpu", width: float = 1.0, seed: int = 0,
                 trust: bool = False) -> DFNet:
    """The DFNet feature extractor: eval mode, every parameter frozen, on ``device``.

    Loaded from the checkpoint ``path`` (:func:`load_dfnet`); without one (tests, demos) a random DFNet of
    ``width`` initialised from ``seed``, with the caller's RNG left untouched, so that a rerun (resume)
    computes the same feature targets.
    """
    if path:
        net = load_dfnet(path, device, trust=trust)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = DFNet(width=width).to(device)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def _key_diff(expected: dict, got: dict) -> tuple[list[str], list[str]]:
    return sorted(set(expected) - set(got)), sorted(set(got) - set(expected))


def _short(keys: list[str], n: int = 3) -> str:
    if not keys:
        return "none"
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def save_dfnet(path: str | os.PathLike, net: DFNet, bare: bool = True, **meta) -> None:
    """Save a DFNet atomically: ``bare=True`` writes the original format (a plain state dict, which
    the original code loads at width 1.0); otherwise a dict with ``model_state_dict``, ``width`` and ``meta``."""
    sd = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    atomic_torch_save(sd if bare else {"model_state_dict": sd, "width": net.width, **meta}, path)
