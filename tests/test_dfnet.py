"""DFNet: original state-dict layout, taps, resizing, width, loading, no downloads."""
import logging

import pytest
import torch
import torch.nn.functional as F

from models import dfnet as dfnet_mod
from models.dfnet import DFNet, DFNetCheckpointError, infer_width, load_dfnet, save_dfnet


pytestmark = pytest.mark.usefixtures("one_thread")


# Spec §7.1, typed in by hand (not taken from the module): VGG16 conv indices and channel counts.
VGG16_CONVS = {0: (3, 64), 2: (64, 64), 5: (64, 128), 7: (128, 128), 10: (128, 256), 12: (256, 256),
               14: (256, 256), 17: (256, 512), 19: (512, 512), 21: (512, 512), 24: (512, 512),
               26: (512, 512), 28: (512, 512)}
TAP_CHANNELS = (64, 256, 512)


def original_state_dict(seed=0) -> dict:
    """A random state dict with the original DFNet's names and shapes at width 1.0."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for i, (cin, cout) in VGG16_CONVS.items():
        sd[f"encoder.{i}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * 0.05
        sd[f"encoder.{i}.bias"] = torch.randn(cout, generator=g) * 0.01
    for lvl, c in enumerate(TAP_CHANNELS):
        p = f"adaptation_layers.adapt_layer_{lvl}"
        sd[f"{p}.0.weight"] = torch.randn(64, c, 1, 1, generator=g) * 0.05
        sd[f"{p}.0.bias"] = torch.randn(64, generator=g) * 0.01
        sd[f"{p}.2.weight"] = torch.randn(128, 64, 5, 5, generator=g) * 0.02
        sd[f"{p}.2.bias"] = torch.randn(128, generator=g) * 0.01
        sd[f"{p}.3.weight"] = 1 + 0.1 * torch.randn(128, generator=g)
        sd[f"{p}.3.bias"] = 0.1 * torch.randn(128, generator=g)
        sd[f"{p}.3.running_mean"] = 0.1 * torch.randn(128, generator=g)
        sd[f"{p}.3.running_var"] = 1 + 0.1 * torch.rand(128, generator=g)
        sd[f"{p}.3.num_batches_tracked"] = torch.tensor(7)
    sd["fc_pose.weight"] = torch.randn(12, 512, generator=g) * 0.01
    sd["fc_pose.bias"] = torch.randn(12, generator=g) * 0.01
    return sd


@pytest.fixture(scope="module")
def orig_pt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint-scene.pt"
    sd = original_state_dict()
    torch.save(sd, path)
    return path, sd


def test_module_layout_matches_torchvision_vgg16():
    net = DFNet(width=1.0)
    assert len(net.encoder) == 31
    convs = {i: (m.in_channels, m.out_channels) for i, m in enumerate(net.encoder) if isinstance(m, torch.nn.Conv2d)}
    assert convs == VGG16_CONVS
    pools = [i for i, m in enumerate(net.encoder) if isinstance(m, torch.nn.MaxPool2d)]
    assert pools == [4, 9, 16, 23, 30]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.encoder)


def test_original_checkpoint_loads_strictly(orig_pt):
    path, sd = orig_pt
    net = load_dfnet(path, "cpu")
    assert net.width == 1.0 and not net.training
    assert set(net.state_dict()) == set(sd)
    for k, v in sd.items():
        assert torch.equal(net.state_dict()[k], v), k


def test_forward_contract_shapes(orig_pt):
    net = load_dfnet(orig_pt[0], "cpu")
    x = torch.rand(2, 3, 32, 64)
    with torch.no_grad():
        feats, pose = net(x, return_feature=True, isSingleStream=True, upsampleH=8, upsampleW=12)
        none, pose_only = net(x, return_feature=False)
        siam, _ = net(x, return_feature=True, isSingleStream=False, upsampleH=8, upsampleW=12)
    assert len(feats) == 1 and feats[0].shape == (3, 2, 128, 8, 12)
    assert pose.shape == (2, 12) and none is None and torch.allclose(pose, pose_only)
    assert len(siam) == 2 and siam[0].shape == (3, 1, 128, 8, 12)
    assert torch.allclose(torch.cat(siam, 1), feats[0], atol=1e-6)  # eval mode: BN is per-sample
    assert torch.allclose(net.predict_pose(x), pose.view(2, 3, 4))


def _manual_level(net, x, upto, level, relu_tap=False):
    """Level features from a manual VGG16 forward written with F.conv2d (not the module's loop);
    the tap is the conv output before its ReLU unless ``relu_tap``."""
    y = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    for i in range(upto + 1):
        m = net.encoder[i]
        if isinstance(m, torch.nn.Conv2d):
            y = F.conv2d(y, m.weight, m.bias, padding=1)
        elif isinstance(m, torch.nn.MaxPool2d):
            y = F.max_pool2d(y, 2)
        else:
            y = F.relu(y)
    if relu_tap:
        y = F.relu(y)
    head = net.adaptation_layers.head(level)
    z = F.conv2d(y, head[0].weight, head[0].bias)
    z = F.conv2d(F.relu(z), head[2].weight, head[2].bias, padding=2)
    bn = head[3]
    return (z - bn.running_mean.view(1, -1, 1, 1)) / torch.sqrt(bn.running_var.view(1, -1, 1, 1) + bn.eps) \
        * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)


def test_hypercolumn_taps_are_pre_relu(orig_pt):
    net = load_dfnet(orig_pt[0], "cpu")
    x = torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        feats, _ = net(x, return_feature=True, return_pose=False)
        for lvl, idx in enumerate((2, 14, 28)):
            native = _manual_level(net, x, idx, lvl)
            ref = F.interpolate(native, size=(32, 48), mode="bilinear", align_corners=True)
            assert torch.allclose(feats[0][lvl], ref, atol=1e-4), lvl
        # Tapping after the ReLU would give something else (the test can tell the two apart).
        post = _manual_level(net, x, 2, 0, relu_tap=True)
        assert not torch.allclose(feats[0][0], post, atol=1e-2)
        assert torch.allclose(net.extract_features(x), _manual_level(net, x, 2, 0), atol=1e-4)


def test_resize_is_align_corners_true(orig_pt):
    net = load_dfnet(orig_pt[0], "cpu")
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        f8 = net.extract_features(x, (32, 32))
        f3 = net.extract_features(x, (3, 3))
    # align_corners=True keeps corner samples and takes the exact centre pixel average for odd sizes.
    assert torch.allclose(f3[..., 0, 0], f8[..., 0, 0], atol=1e-5)
    assert torch.allclose(f3[..., 2, 2], f8[..., 31, 31], atol=1e-5)
    centre = (f8[..., 15, 15] + f8[..., 15, 16] + f8[..., 16, 15] + f8[..., 16, 16]) / 4
    assert torch.allclose(f3[..., 1, 1], centre, atol=1e-5)


def test_return_pose_false_stops_after_conv5_3(orig_pt, monkeypatch):
    net = load_dfnet(orig_pt[0], "cpu")
    called = []
    net.encoder[30].register_forward_hook(lambda *a: called.append(30))
    net.encoder[29].register_forward_hook(lambda *a: called.append(29))
    with torch.no_grad():
        feats, pose = net(torch.rand(1, 3, 32, 32), return_feature=True, return_pose=False)
    assert pose is None and feats[0].shape[0] == 3 and called == []
    net(torch.rand(1, 3, 32, 32), return_feature=False)
    assert called == [29, 30]


@pytest.mark.parametrize("width", [0.25, 0.5, 0.37])
def test_width_scales_channels_and_is_inferred(tmp_path, width):
    net = DFNet(width=width)
    assert net.encoder[28].out_channels == round(512 * width)
    assert net.encoder[10].out_channels == round(256 * width)
    assert net.adaptation_layers.head(0)[2].out_channels == 128
    if width in (0.25, 0.5):
        assert infer_width(net.state_dict()) == width
    save_dfnet(tmp_path / "bare.pt", net)
    save_dfnet(tmp_path / "ours.tar", net, bare=False, epoch=3)
    x = torch.rand(1, 3, 32, 32)
    for name in ("bare.pt", "ours.tar"):
        loaded = load_dfnet(tmp_path / name, "cpu")  # 0.37: channel counts need the interval inference
        assert abs(loaded.width - width) < 2e-3
        assert torch.allclose(loaded.eval().predict_pose(x), net.eval().predict_pose(x))
    assert load_dfnet(tmp_path / "ours.tar", "cpu").checkpoint_meta["epoch"] == 3
    with pytest.raises(DFNetCheckpointError, match="width"):
        load_dfnet(tmp_path / "bare.pt", "cpu", width=1.0)


def test_bad_checkpoints_give_one_line_errors(tmp_path, orig_pt):
    with pytest.raises(DFNetCheckpointError, match="not found"):
        load_dfnet(tmp_path / "missing.pt", "cpu")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DFNetCheckpointError, match="cannot read"):
        load_dfnet(tmp_path / "junk.pt", "cpu")
    sd = dict(orig_pt[1])
    sd.pop("fc_pose.bias")
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "keys.pt")
    with pytest.raises(DFNetCheckpointError, match="missing fc_pose.bias, unexpected extra.weight") as e:
        load_dfnet(tmp_path / "keys.pt", "cpu")
    assert "\n" not in str(e.value)
    sd = dict(orig_pt[1])
    sd["fc_pose.weight"] = torch.zeros(12, 256)
    torch.save(sd, tmp_path / "shape.pt")
    with pytest.raises(DFNetCheckpointError, match="size mismatch"):
        load_dfnet(tmp_path / "shape.pt", "cpu")


def test_module_prefix_from_dataparallel_is_stripped(tmp_path, orig_pt):
    torch.save({f"module.{k}": v for k, v in orig_pt[1].items()}, tmp_path / "dp.pt")
    assert load_dfnet(tmp_path / "dp.pt", "cpu").width == 1.0


def _forbid_downloads(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("download attempted")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", boom)
    monkeypatch.setattr(torch.hub, "download_url_to_file", boom)
    monkeypatch.setattr("urllib.request.urlopen", boom)


def test_no_download_and_message_when_imagenet_cache_absent(tmp_path, monkeypatch, caplog):
    _forbid_downloads(monkeypatch)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with caplog.at_level(logging.WARNING, logger="models.dfnet"):
        DFNet(width=1.0, imagenet_init=True)
    assert "not found in the local torch hub cache" in caplog.text and "randomly initialised" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="models.dfnet"):
        DFNet(width=0.5, imagenet_init=True)
    assert "only for width 1.0" in caplog.text


def test_imagenet_init_from_local_cache(tmp_path, monkeypatch):
    _forbid_downloads(monkeypatch)
    sd = original_state_dict(seed=3)
    tv_like = {k.replace("encoder.", "features."): v for k, v in sd.items() if k.startswith("encoder.")}
    tv_like["classifier.0.weight"] = torch.zeros(4, 4)  # torchvision files carry a classifier too
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(tv_like, tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    net = DFNet(width=1.0, imagenet_init=True)
    assert torch.equal(net.encoder[28].weight, sd["encoder.28.weight"])


def test_cropped_features_equal_full_map_window():
    net = DFNet(width=0.125).eval()
    x = torch.rand(2, 3, 40, 56)
    with torch.no_grad():
        _, full = net.pose_and_features(x, (0, 1, 2))
        for y0, x0, h, w in [(0, 0, 16, 20), (10, 13, 20, 30), (24, 36, 16, 20)]:
            _, crop = net.pose_and_features(x, (0, 1, 2), crop=(y0, x0, h, w))
            for lvl in range(3):
                assert torch.allclose(crop[lvl], full[lvl][..., y0:y0 + h, x0:x0 + w], atol=1e-5)


def test_dfnet_module_does_not_use_torchvision():
    src = open(dfnet_mod.__file__).read()
    assert "import torchvision" not in src and "torchvision_compat" not in src
