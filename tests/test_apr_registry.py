"""APR registry: built-in APRs, user-registered APRs, feature extractor, errors."""
import logging

import pytest
import torch
from torch import nn

from config.options import parse_args
from dm import direct_pose_model as dpm
from dm.direct_pose_model import APR, APRError, load_APR_and_FeatureNet, register_apr
from models.dfnet import DFNet, save_dfnet


pytestmark = pytest.mark.usefixtures("one_thread")


def _need_torchvision():
    from models.torchvision_compat import TorchvisionUnavailable, import_torchvision
    try:
        import_torchvision()
    except TorchvisionUnavailable as e:  # optional extra; requirements.txt installs it
        pytest.skip(str(e))


def _args(*argv):
    return parse_args(list(argv))


@pytest.fixture(scope="module")
def slim_ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("apr")
    torch.manual_seed(1)
    net = DFNet(width=0.125)
    save_dfnet(d / "apr.pt", net)
    save_dfnet(d / "feat.pt", DFNet(width=0.25))
    return d, net


def _check_apr(apr, h=32, w=32):
    x = torch.rand(2, 3, h, w)
    out = apr(x)
    assert out.shape == (2, 3, 4) and torch.isfinite(out).all()
    out.square().sum().backward()
    # DFNet's adaptation heads are not on the pose path; everything that is must get a gradient.
    pose_params = ([p for n, p in apr.named_parameters() if "adaptation_layers" not in n]
                   if isinstance(apr.net, DFNet) else [p for p in apr.parameters() if p.requires_grad])
    assert pose_params and all(p.grad is not None for p in pose_params)
    assert sum(p.grad.abs().sum() for p in pose_params) > 0


def test_dfnet_apr_and_featnet_from_checkpoints(slim_ckpt):
    d, ref = slim_ckpt
    args = _args("--PoseEstimatorType", "DFNet", "--pretrain_model_path", str(d / "apr.pt"),
                 "--pretrain_featurenet_path", str(d / "feat.pt"))
    apr, feat = load_APR_and_FeatureNet(args, "cpu")
    assert isinstance(apr, APR) and isinstance(apr.net, DFNet) and apr.net.width == 0.125
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(apr(x), ref.eval().predict_pose(x), atol=1e-6)
    _check_apr(apr)
    assert feat.width == 0.25 and not feat.training
    assert not any(p.requires_grad for p in feat.parameters())
    assert feat.extract_features(x, (8, 8)).shape == (2, 128, 8, 8)


def test_featnet_falls_back_to_apr_checkpoint(slim_ckpt, caplog):
    d, _ = slim_ckpt
    args = _args("--pretrain_model_path", str(d / "apr.pt"))
    with caplog.at_level(logging.INFO, logger="dm.direct_pose_model"):
        _, feat = load_APR_and_FeatureNet(args, "cpu")
    assert feat.width == 0.125 and "as feature extractor" in caplog.text


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(APRError, match="pretrain_model_path is not set"):
        load_APR_and_FeatureNet(_args(), "cpu")
    with pytest.raises(APRError, match="pretrain_model_path='.*nope.pt' not found"):
        load_APR_and_FeatureNet(_args("--pretrain_model_path", str(tmp_path / "nope.pt")), "cpu")
    (tmp_path / "bad.pt").write_text("garbage")
    with pytest.raises(APRError, match="bad.pt: cannot read"):
        load_APR_and_FeatureNet(_args("--pretrain_model_path", str(tmp_path / "bad.pt")), "cpu")
    with pytest.raises(APRError, match="not registered"):
        load_APR_and_FeatureNet(_args("--PoseEstimatorType", "NoSuchAPR"), "cpu")


def test_random_init_only_with_explicit_flag(caplog):
    with caplog.at_level(logging.WARNING, logger="dm.direct_pose_model"):
        apr, feat = load_APR_and_FeatureNet(_args("--apr_random_init", "--dfnet_width", "0.125"), "cpu")
    assert "RANDOMLY INITIALISED" in caplog.text
    _check_apr(apr)


@pytest.mark.parametrize("flags, cls_name", [((), "MobileNetV2"), (("--resnet34",), "ResNet"),
                                             (("--efficientnet",), "EfficientNet")])
def test_posenet_variants(flags, cls_name, tmp_path):
    _need_torchvision()
    args = _args("--PoseEstimatorType", "PoseNet", "--apr_random_init", "--dfnet_width", "0.125", *flags)
    apr, _ = load_APR_and_FeatureNet(args, "cpu")
    assert type(apr.net.backbone).__name__ == cls_name
    apr.train()
    _check_apr(apr, 32, 32)
    # Round trip through a checkpoint file, strictly.
    torch.save(apr.net.state_dict(), tmp_path / "posenet.pt")
    args2 = _args("--PoseEstimatorType", "PoseNet", "--pretrain_model_path", str(tmp_path / "posenet.pt"),
                  "--apr_random_init", "--dfnet_width", "0.125", *flags)
    apr2, _ = load_APR_and_FeatureNet(args2, "cpu")
    x = torch.rand(2, 3, 32, 32)
    apr.eval()
    assert torch.allclose(apr(x), apr2(x), atol=1e-5)


def test_freeze_bn_keeps_bn_frozen_in_train_mode():
    _need_torchvision()
    args = _args("--PoseEstimatorType", "PoseNet", "--resnet34", "--apr_random_init", "--freezeBN",
                 "--dfnet_width", "0.125")
    apr, _ = load_APR_and_FeatureNet(args, "cpu")
    apr.train()
    bns = [m for m in apr.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(not m.training for m in bns)
    assert all(not p.requires_grad for m in bns for p in m.parameters())
    assert any(p.requires_grad for p in apr.parameters())


class _ToyAPR(nn.Module):
    """Returns the mean colour as translation and an identity rotation, as a (B, 12) vector."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, img):
        t = self.lin(img.mean((2, 3)))
        eye = torch.eye(3).expand(len(img), 3, 3)
        return torch.cat([eye, t[:, :, None]], -1).reshape(-1, 12)


def test_user_registered_apr_is_picked_up(slim_ckpt, monkeypatch):
    monkeypatch.setattr(dpm, "APR_REGISTRY", dict(dpm.APR_REGISTRY))
    seen = {}

    @register_apr("ToyAPR")
    def build(args, device):
        seen["device"] = device
        return _ToyAPR()

    d, _ = slim_ckpt
    args = _args("--PoseEstimatorType", "ToyAPR", "--pretrain_featurenet_path", str(d / "feat.pt"))
    apr, feat = load_APR_and_FeatureNet(args, "cpu")
    assert isinstance(apr.net, _ToyAPR) and seen["device"] == torch.device("cpu")
    out = apr(torch.rand(2, 3, 8, 8))
    assert torch.allclose(out[:, :, :3], torch.eye(3).expand(2, 3, 3))
    _check_apr(apr, 8, 8)
    assert feat.width == 0.25


def test_apr_from_a_user_module(slim_ckpt, monkeypatch, tmp_path):
    monkeypatch.setattr(dpm, "APR_REGISTRY", dict(dpm.APR_REGISTRY))
    (tmp_path / "my_apr_plugin.py").write_text(
        "import torch\nfrom dm.direct_pose_model import register_apr\n\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.lin = torch.nn.Linear(3, 12)\n"
        "    def forward(self, img):\n        return self.lin(img.mean((2, 3)))\n\n"
        "@register_apr('PluginAPR')\ndef build(args, device):\n    return Net()\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(__import__("sys").modules, "my_apr_plugin", raising=False)
    d, _ = slim_ckpt
    args = _args("--PoseEstimatorType", "my_apr_plugin:PluginAPR", "--pretrain_featurenet_path", str(d / "feat.pt"))
    apr, _ = load_APR_and_FeatureNet(args, "cpu")
    assert apr.name == "PluginAPR"
    _check_apr(apr, 8, 8)
    for spec, msg in (("no_such_module_xyz:A", "cannot import module 'no_such_module_xyz'"),
                      ("my_apr_plugin:Other", "did not register it")):
        with pytest.raises(APRError, match=msg):
            load_APR_and_FeatureNet(_args("--PoseEstimatorType", spec), "cpu")


def test_wrapper_accepts_tuple_and_matrix_outputs_and_rejects_others():
    class Tup(nn.Module):
        def __init__(self):
            super().__init__()
            self.p = nn.Parameter(torch.zeros(12))

        def forward(self, img):
            return None, self.p.expand(len(img), 12)

    class Mat(Tup):
        def forward(self, img):
            return self.p.view(3, 4).expand(len(img), 3, 4)

    class Bad(Tup):
        def forward(self, img):
            return self.p[:7].expand(len(img), 7)

    x = torch.rand(3, 3, 4, 4)
    assert APR(Tup(), "t")(x).shape == (3, 3, 4)
    assert APR(Mat(), "m")(x).shape == (3, 3, 4)
    with pytest.raises(APRError, match="returned shape"):
        APR(Bad(), "b")(x)


def test_import_torchvision_is_idempotent():
    _need_torchvision()
    from models.torchvision_compat import import_torchvision
    tv = import_torchvision()
    assert import_torchvision() is tv and hasattr(tv.models, "mobilenet_v2")
    assert hasattr(torch.ops.torchvision, "nms")  # declared (CPU torch) or compiled (matching build)


def test_random_feature_extractor_is_seeded_frozen_and_the_same_for_training_and_refinement():
    """One loader (models.dfnet.frozen_dfnet) for run_nefes.py and load_APR_and_FeatureNet: the same seed
    gives the same random DFNet, the caller's RNG is untouched, and every weight is frozen."""
    import run_nefes
    args = _args("--apr_random_init", "--dfnet_width", "0.125", "--seed", "7")
    state = torch.get_rng_state()
    refine_net = dpm.load_feature_net(args, "cpu")
    train_net = run_nefes.load_feature_extractor(args, "cpu")
    assert torch.equal(torch.get_rng_state(), state)
    for (k, a), b in zip(refine_net.state_dict().items(), train_net.state_dict().values()):
        assert torch.equal(a, b), k
    assert not refine_net.training and not any(p.requires_grad for p in refine_net.parameters())
    other = dpm.load_feature_net(_args("--apr_random_init", "--dfnet_width", "0.125", "--seed", "8"), "cpu")
    assert not torch.equal(other.state_dict()["encoder.0.weight"], refine_net.state_dict()["encoder.0.weight"])


def test_data_parallel_prefix_is_stripped_for_every_apr_checkpoint(tmp_path):
    net = nn.Linear(3, 12)
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, tmp_path / "dp.pt")
    assert set(dpm.load_state_dict_file(tmp_path / "dp.pt")) == {"weight", "bias"}
    torch.save({"model_state_dict": net.state_dict(), "epoch": 3}, tmp_path / "ours.pt")
    assert set(dpm.load_state_dict_file(tmp_path / "ours.pt")) == {"weight", "bias"}
    torch.save([1, 2], tmp_path / "bad.pt")
    with pytest.raises(APRError, match="bad.pt: not a state dict"):
        dpm.load_state_dict_file(tmp_path / "bad.pt")
