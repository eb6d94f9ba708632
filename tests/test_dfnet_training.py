"""DFNet training core on a tiny toy problem with a fake renderer."""
import math

import pytest
import torch
import torch.nn.functional as F

from config.options import parse_args
from models.dfnet import DFNet, load_dfnet
from models.dfnet_training import (DFNetTrainConfig, DFNetTrainData, _after_validation, _State, cosine_lr, evaluate_apr, pose_loss,
                                   random_view_poses, train_dfnet, translation_scale, triplet_loss)


pytestmark = pytest.mark.usefixtures("one_thread")


H = W = 32


def _poses(n, g):
    """Poses with random translations in ±1 m and rotations about y up to ±60 degrees."""
    ang = (torch.rand(n, generator=g) * 2 - 1) * math.radians(60)
    c, s = ang.cos(), ang.sin()
    R = torch.zeros(n, 3, 3)
    R[:, 0, 0], R[:, 0, 2], R[:, 1, 1], R[:, 2, 0], R[:, 2, 2] = c, s, 1, -s, c
    t = torch.rand(n, 3, generator=g) * 2 - 1
    return torch.cat([R, t[:, :, None]], -1)


def _image(c2w):
    """An image that encodes the pose: colour ramps whose slopes/offsets follow t and the yaw."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
    t, yaw = c2w[:, :, 3], torch.atan2(c2w[:, 0, 2], c2w[:, 0, 0])
    r = 0.5 + 0.25 * t[:, 0, None, None] + 0.2 * torch.sin(3 * xx + 2 * yaw[:, None, None])
    gch = 0.5 + 0.25 * t[:, 1, None, None] + 0.2 * yy * torch.cos(yaw)[:, None, None]
    b = 0.5 + 0.25 * t[:, 2, None, None] + 0.1 * torch.sin(4 * (xx + yy))
    return torch.stack([r, gch, b], 1).clamp(0, 1)


class FakeRenderer:
    """Blurred, colour-shifted image of the requested pose; counts its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, c2w, hist):
        self.calls += len(c2w)
        img = _image(c2w)
        return (F.avg_pool2d(img, 3, 1, 1, count_include_pad=False) * 0.9 + 0.05).clamp(0, 1)


@pytest.fixture(scope="module")
def toy_data():
    g = torch.Generator().manual_seed(0)
    tr, va = _poses(24, g), _poses(12, g)
    return DFNetTrainData(_image(tr), tr, torch.full((24, 10), 10.0), _image(va), va)


def _cfg(**kw):
    base = dict(epochs=6, batch_size=4, learning_rate=1e-3, rvs_refresh_rate=2, rvs_trans=0.2, rvs_rotation=5.0,
                d_max=0.1, rvs_count=8, triplet_levels=(0,), patience=(100, 50), seed=3)
    base.update(kw)
    return DFNetTrainConfig(**base)


def _net(seed=0):
    torch.manual_seed(seed)
    return DFNet(width=0.0625)


# ----------------------------------------------------------------------------------------------
def test_a_few_epochs_reduce_the_validation_error(toy_data, tmp_path):
    net = _net()
    res = train_dfnet(net, toy_data, FakeRenderer(), _cfg(triplet_crop=(16, 16)), tmp_path, device=torch.device("cpu"))
    lines = (tmp_path / "val_log.txt").read_text().splitlines()
    first, last = (dict(zip(lines[0].split(), map(float, ln.split()))) for ln in (lines[1], lines[-1]))
    assert first["epoch"] == 0 and last["epoch"] == 6
    assert last["val_mse"] < 0.5 * first["val_mse"]
    assert last["median_t"] < first["median_t"]
    assert res["epochs_run"] == 6 and not res["stopped"]
    best = load_dfnet(tmp_path / "dfnet_best.pt", "cpu")  # usable as APR and feature extractor
    assert best.width == 0.0625
    assert best.predict_pose(toy_data.val_images[:2]).shape == (2, 3, 4)
    assert best.extract_features(toy_data.val_images[:2]).shape == (2, 128, H, W)


def test_pose_only_training_needs_no_renderer(toy_data, tmp_path):
    cfg = _cfg(epochs=2, combine_loss_w=(1.0, 0.0, 0.0), rvs_loss_w=0.0)
    res = train_dfnet(_net(), toy_data, None, cfg, tmp_path)
    assert res["epochs_run"] == 2 and not (tmp_path / "train_renders.pt").exists()
    with pytest.raises(ValueError, match="render_fn is required"):
        train_dfnet(_net(), toy_data, None, _cfg(epochs=1), tmp_path / "b")


# ----------------------------------------------------------------------------------------------
def test_triplet_loss_zero_when_positives_much_closer_than_negatives():
    L, B, C, Hh, Ww = 2, 4, 3, 5, 6
    # Image b is the constant 2*b (row distance between images >= 2*sqrt(W) ≈ 4.9 > margin 1).
    real = torch.arange(B, dtype=torch.float32).mul(2).view(1, B, 1, 1, 1).expand(L, B, C, Hh, Ww).clone()
    syn = real + 0.01
    assert triplet_loss(real, syn, margin=1.0).item() == 0.0


def test_triplet_loss_value_when_negatives_are_not_far():
    L, B, C, Hh, Ww = 1, 3, 2, 2, 4
    real = torch.zeros(L, B, C, Hh, Ww)           # all real images identical -> d(real, rolled real) = 0
    syn = real + 0.5                               # d_pos = 0.5 * sqrt(W) = 1 over each row of 4
    # hardest negative distance is 0, so each triplet costs 1 - 0 + margin(1) = 2
    assert triplet_loss(real, syn, margin=1.0).item() == pytest.approx(2.0, abs=1e-4)


def test_triplet_loss_uses_the_hardest_of_the_four_negatives():
    B, Ww = 2, 4
    real = torch.zeros(1, B, 1, 1, Ww)
    real[:, 1] = 10.0                              # real images far apart
    syn = real.clone()
    syn[:, 0] = 10.0 - 0.5                         # rendered image 0 sits right next to real image 1
    d_pos0 = 0.5 * 0 + (10.0 - 0.5) * 2           # |syn0 - real0| over 4 samples = 9.5 * 2 = 19
    d_neg0 = 0.5 * 2                               # |syn0 - real1| = 1 (anchor swap + rolled real)
    expected = (max(0.0, d_pos0 - d_neg0 + 1.0) + max(0.0, 0.0 - 1.0 + 1.0)) / 2
    # image 1: d_pos = 0, hardest negative = |real1 - syn0| = 1 -> max(0, 0 - 1 + 1) = 0
    assert triplet_loss(real, syn, 1.0).item() == pytest.approx(expected, rel=1e-4)


def test_triplet_loss_has_gradients_and_checks_shapes():
    real = torch.randn(1, 4, 8, 3, 5, requires_grad=True)
    syn = torch.randn(1, 4, 8, 3, 5)
    triplet_loss(real, syn).backward()
    assert real.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="expects two"):
        triplet_loss(real[0], syn[0])


# ----------------------------------------------------------------------------------------------
def test_random_view_poses_within_bounds_and_valid():
    g = torch.Generator().manual_seed(0)
    src_poses = _poses(30, g)
    trans, rot, d_max = 0.3, 7.0, 0.1
    poses, src = random_view_poses(src_poses, 500, trans, rot, d_max, torch.Generator().manual_seed(1))
    R, t = poses[:, :, :3].double(), poses[:, :, 3].double()
    assert torch.allclose(R.transpose(1, 2) @ R, torch.eye(3, dtype=torch.float64).expand(500, 3, 3), atol=1e-5)
    assert torch.allclose(torch.det(R), torch.ones(500, dtype=torch.float64), atol=1e-5)
    lo = src_poses[:, :, 3].amin(0) - d_max
    hi = src_poses[:, :, 3].amax(0) + d_max
    assert (t >= lo - 1e-6).all() and (t <= hi + 1e-6).all()
    assert ((t - src_poses[src, :, 3]).abs() <= trans + 1e-6).all()
    # Each world-axis angle is within ±rot, so the total angle is at most 3*rot and the jitter is used.
    dR = R @ src_poses[src, :, :3].double().transpose(1, 2)
    ang = torch.rad2deg(torch.arccos(((dR.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1)))
    assert ang.max() <= 3 * rot + 1e-3 and ang.max() > rot / 2
    # Same generator seed -> same poses.
    again, _ = random_view_poses(src_poses, 500, trans, rot, d_max, torch.Generator().manual_seed(1))
    assert torch.equal(again, poses)


def test_random_view_positions_are_clamped_to_the_bbox():
    base = torch.eye(3, 4).expand(4, 3, 4).clone()
    base[:, 0, 3] = torch.tensor([0.0, 1.0, 2.0, 3.0])
    poses, _ = random_view_poses(base, 200, 50.0, 0.0, 0.5, torch.Generator().manual_seed(0))
    x = poses[:, 0, 3]
    assert x.min() == pytest.approx(-0.5) and x.max() == pytest.approx(3.5)
    assert (poses[:, 1:, 3].abs() <= 0.5 + 1e-6).all()


# ----------------------------------------------------------------------------------------------
def test_early_stopping_and_plateau_bookkeeping(tmp_path):
    net = _net()
    opt = torch.optim.Adam(net.parameters(), lr=1.0)
    cfg = _cfg(patience=(3, 1))
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=cfg.lr_factor, patience=cfg.patience[1])
    st = _State()
    lrs = []
    for epoch, v in enumerate([1.0, 0.5, 0.6, 0.6, 0.7, 0.4, 0.9, 0.9, 0.9], start=1):
        st.epoch = epoch
        _after_validation(net, sched, st, {"val_mse": v}, cfg, tmp_path)
        lrs.append(opt.param_groups[0]["lr"])
        if st.stopped:
            break
    # best 0.5 at epoch 2; epochs 3, 4 bad -> LR x0.95 at the 2nd bad validation (patience 1);
    # epoch 5 bad (3rd) -> early stop with patience 3.
    assert st.best_epoch == 2 and st.best == 0.5 and st.epoch == 5 and "early stopping" in st.stopped
    assert lrs == pytest.approx([1.0, 1.0, 1.0, 0.95, 0.95])
    assert (tmp_path / "dfnet_best.pt").is_file()


def test_validation_medians_are_the_evals_medians():
    """An even number of queries: the mean of the two middle errors (np.median, as eval.py), not the lower one."""
    class Shift(torch.nn.Module):      # predicts the ground truth moved 1, 2, 3, 10 m along x
        training = False

        def predict_pose(self, x):
            p = gt[: len(x)].clone().reshape(-1, 12)
            p[:, 3] += torch.tensor([1.0, 2.0, 3.0, 10.0])[: len(x)]
            return p.reshape(-1, 3, 4)
    gt = torch.eye(4)[:3].repeat(4, 1, 1)
    ev = evaluate_apr(Shift(), torch.zeros(4, 3, 8, 8), gt, "cpu")
    assert ev["median_t"] == pytest.approx(2.5) and ev["mean_t"] == pytest.approx(4.0)


def test_validations_before_select_from_are_never_the_best_model(tmp_path):
    net = _net()
    opt = torch.optim.Adam(net.parameters(), lr=1.0)
    cfg = _cfg(epochs=8, patience=(3, 100), select_from=0.5, lr_schedule="cosine")
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=100)
    st = _State()
    # a lucky epoch 2 (0.1) in the first half; the second half's best is epoch 6 (0.4)
    for epoch, v in enumerate([1.0, 0.1, 0.9, 0.8, 0.5, 0.4, 0.6, 0.7], start=1):
        st.epoch = epoch
        _after_validation(net, sched, st, {"val_mse": v}, cfg, tmp_path)
        assert not st.stopped     # epochs 1-4 count toward no early stopping either
    assert (st.best_epoch, st.best) == (6, 0.4)
    with pytest.raises(ValueError, match="dfnet_select_from"):
        _cfg(select_from=1.0).validate()
    assert DFNetTrainConfig.from_args(parse_args(["--dfnet_select_from", "0.25"])).select_from == 0.25
    assert DFNetTrainConfig.from_args(parse_args([])).select_from == 0.0    # the original: every validation


def test_a_run_stopped_before_the_selection_window_still_exports_a_model(toy_data, tmp_path):
    cfg = _cfg(epochs=6, select_from=0.5, time_budget_min=1e-9, combine_loss_w=(1.0, 0.0, 0.0), rvs_loss_w=0.0)
    res = train_dfnet(_net(), toy_data, None, cfg, tmp_path)
    assert res["epochs_run"] == 1 and res["best_epoch"] == 1 and (tmp_path / "dfnet_best.pt").is_file()


def test_training_stops_early_when_validation_does_not_improve(toy_data, tmp_path):
    cfg = _cfg(epochs=20, learning_rate=0.0, patience=(3, 1))
    res = train_dfnet(_net(), toy_data, FakeRenderer(), cfg, tmp_path)
    assert res["best_epoch"] == 1 and res["epochs_run"] == 4 and "early stopping" in res["stopped"]


# ----------------------------------------------------------------------------------------------
class _Interrupt(Exception):
    pass


def test_resume_after_interruption_gives_the_same_weights(toy_data, tmp_path):
    cfg = _cfg(epochs=5, save_every=2, rvs_refresh_rate=2)
    ref = _net()
    train_dfnet(ref, toy_data, FakeRenderer(), cfg, tmp_path / "ref")

    def crash_after_3(epoch, rec):
        if epoch == 3:
            raise _Interrupt  # checkpoint of epoch 2 on disk, epoch 3 is lost
    with pytest.raises(_Interrupt):
        train_dfnet(_net(), toy_data, FakeRenderer(), cfg, tmp_path / "run", on_epoch_end=crash_after_3)
    renderer = FakeRenderer()
    resumed = _net(seed=123)  # different init: everything must come from the checkpoint
    res = train_dfnet(resumed, toy_data, renderer, cfg, tmp_path / "run")
    assert res["epochs_run"] == 5
    assert renderer.calls == cfg.rvs_count * 2  # RVS sets of epochs 3-4 and 5; training renders cached
    for (k, a), b in zip(ref.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), k
    epochs = [int(float(ln.split()[0])) for ln in (tmp_path / "run" / "val_log.txt").read_text().splitlines()[1:]]
    assert epochs == [0, 1, 2, 3, 4, 5]
    # A finished run re-run does nothing more.
    again = train_dfnet(resumed, toy_data, FakeRenderer(), cfg, tmp_path / "run")
    assert again["epochs_run"] == 5


def test_ctrl_c_mid_epoch_writes_nothing_and_the_resume_is_exact(toy_data, tmp_path, monkeypatch):
    """KeyboardInterrupt (Ctrl-C; train_dfnet.py maps SIGTERM to it) inside an epoch: the resume checkpoint
    stays the last completed epoch's, byte for byte, and the resumed run equals an uninterrupted one."""
    from models import dfnet_training
    cfg = _cfg(epochs=4, save_every=1, rvs_refresh_rate=2)
    ref = _net()
    train_dfnet(ref, toy_data, FakeRenderer(), cfg, tmp_path / "ref")

    real, calls = dfnet_training._batch_terms, {"n": 0}
    per_epoch = math.ceil(len(toy_data.train_images) / cfg.batch_size)

    def interrupt_in_epoch_3(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 2 * per_epoch + 3:     # third batch of the third epoch
            raise KeyboardInterrupt
        return real(*a, **kw)
    monkeypatch.setattr(dfnet_training, "_batch_terms", interrupt_in_epoch_3)
    saved = {}
    with pytest.raises(KeyboardInterrupt):
        train_dfnet(_net(), toy_data, FakeRenderer(), cfg, tmp_path / "run",
                    on_epoch_end=lambda e, rec: saved.update(epoch=e, data=(tmp_path / "run" / "dfnet_last.tar").read_bytes()))
    assert saved["epoch"] == 2
    assert (tmp_path / "run" / "dfnet_last.tar").read_bytes() == saved["data"]
    monkeypatch.setattr(dfnet_training, "_batch_terms", real)
    resumed = _net(seed=123)
    assert train_dfnet(resumed, toy_data, FakeRenderer(), cfg, tmp_path / "run")["epochs_run"] == 4
    for (k, a), b in zip(ref.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


# ----------------------------------------------------------------------------------------------
def test_pose_loss_translation_scale():
    g = torch.Generator().manual_seed(1)
    gt, pred = _poses(5, g), _poses(5, g).reshape(5, 12)
    assert torch.allclose(pose_loss(pred, gt), F.mse_loss(pred, gt.reshape(5, 12)))     # 1: the original's MSE
    d = pred.reshape(5, 3, 4) - gt
    expect = (d[..., :3].square().sum() + (d[..., 3] / 4.0).square().sum()) / 60
    assert torch.allclose(pose_loss(pred, gt, 4.0), expect)
    # a scene 10x larger with its translations in units of its size: the same loss
    big_gt, big_pred = gt.clone(), pred.reshape(5, 3, 4).clone()
    big_gt[..., 3] *= 10
    big_pred[..., 3] *= 10
    assert torch.allclose(pose_loss(big_pred.reshape(5, 12), big_gt, 10 * translation_scale(gt)),
                          pose_loss(pred, gt, translation_scale(gt)))
    assert math.isclose(translation_scale(big_gt), 10 * translation_scale(gt), rel_tol=1e-6)


def test_cosine_schedule_and_its_resume(toy_data, tmp_path):
    rates = [cosine_lr(1e-3, e, 6) for e in range(6)]
    assert rates[0] == 1e-3 and math.isclose(rates[-1], 1e-5) and all(a > b for a, b in zip(rates, rates[1:]))
    cfg = _cfg(epochs=4, lr_schedule="cosine", t_scale=0.5, combine_loss_w=(1.0, 0.0, 0.0), rvs_loss_w=0.0)
    train_dfnet(_net(), toy_data, None, cfg, tmp_path / "a")
    lines = (tmp_path / "a" / "val_log.txt").read_text().splitlines()[2:]
    assert [float(ln.split()[1]) for ln in lines] == pytest.approx([cosine_lr(1e-3, e, 4) for e in range(4)])
    net_b = _net()
    train_dfnet(net_b, toy_data, None, DFNetTrainConfig(**{**vars(cfg), "epochs": 4}), tmp_path / "b")
    net_c = _net()    # the same run stopped after 2 epochs and resumed: the same rates, the same weights
    train_dfnet(net_c, toy_data, None, DFNetTrainConfig(**{**vars(cfg), "epochs": 4, "time_budget_min": 1e-9}), tmp_path / "c")
    train_dfnet(net_c, toy_data, None, cfg, tmp_path / "c")
    for a, b in zip(net_b.state_dict().values(), net_c.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="dfnet_lr_schedule"):
        _cfg(lr_schedule="step").validate()
    with pytest.raises(ValueError, match="pose_loss_t_scale"):
        _cfg(t_scale=0.0).validate()


def test_config_from_args_and_data_checks():
    args = parse_args(["--epochs", "7", "--learning_rate", "3e-4", "--triplet_levels", "0", "--triplet_crop", "24", "32",
                       "--rvs_loss_w", "0.5", "--dfnet_time_budget", "4.5"])
    cfg = DFNetTrainConfig.from_args(args)
    assert (cfg.epochs, cfg.learning_rate, cfg.triplet_levels, cfg.triplet_crop) == (7, 3e-4, (0,), (24, 32))
    assert cfg.rvs_loss_w == 0.5 and cfg.time_budget_min == 4.5
    assert (cfg.t_scale, cfg.lr_schedule) == (1.0, "plateau")     # the original's loss and schedule
    cfg = DFNetTrainConfig.from_args(parse_args(["--pose_loss_t_scale", "2.5", "--dfnet_lr_schedule", "cosine"]))
    assert (cfg.t_scale, cfg.lr_schedule) == (2.5, "cosine")
    with pytest.raises(SystemExit):
        parse_args(["--pose_loss_t_scale", "-1"])
    with pytest.raises(ValueError, match="triplet_levels"):
        DFNetTrainConfig.from_args(parse_args(["--triplet_levels", "3"]))
    with pytest.raises(ValueError, match="poses must be"):
        DFNetTrainData(torch.rand(2, 3, 8, 8), torch.rand(2, 12), torch.rand(2, 10), torch.rand(1, 3, 8, 8), torch.rand(1, 3, 4))


# ----------------------------------------------------------------------------------------------
# train_dfnet.py glue (the loaders and NeFeS are other modules: replaced by fakes here)
class _FakeSplit:
    def __init__(self, n, g):
        self.poses = _poses(n, g).double().numpy()
        self._img = _image(torch.as_tensor(self.poses).float())
        self.hists = torch.full((n, 10), 10.0)

    def images(self):
        return self._img


class _FakeScene:
    def __init__(self):
        from core.frames import WorldSetup
        g = torch.Generator().manual_seed(5)
        self.train, self.test = _FakeSplit(12, g), _FakeSplit(6, g)
        self.H, self.W, self.focal, self.near, self.far = H, W, 30.0, 0.0, 2.0
        self.world_setup = WorldSetup(near=0.0, far=2.0, pose_scale=0.5, pose_scale2=0.2, move_all_cam_vec=[1.0, 0.0, 0.0])

    def render_size(self, tinyscale):
        return int(self.H // tinyscale), int(self.W // tinyscale), self.focal / tinyscale


def test_train_dfnet_script_pose_only(tmp_path, monkeypatch, capsys):
    import dataset_loaders
    import train_dfnet
    monkeypatch.setattr(dataset_loaders, "load_scene", lambda args: _FakeScene(), raising=False)
    argv = ["--basedir", str(tmp_path), "--expname", "e", "--epochs", "2", "--dfnet_width", "0.0625",
            "--learning_rate", "1e-3", "--combine_loss_w", "1", "0", "0", "--rvs_loss_w", "0"]
    assert train_dfnet.main(argv + ["--pose_loss_t_scale", "auto"]) == 0
    assert (tmp_path / "e" / "dfnet_best.pt").is_file() and (tmp_path / "e" / "args.txt").is_file()
    assert "pretrain_model_path" in capsys.readouterr().out
    # With rendered views but no NeFeS checkpoint: one error line, exit code 2.
    assert train_dfnet.main(argv[:-6] + ["--ft_path", str(tmp_path / "none.tar")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ft_path" in err[0] and "none.tar" in err[0]


def test_nefes_render_fn_converts_frames_and_upsamples(monkeypatch):
    import sys
    import types

    import train_dfnet
    from core.frames import apr_to_nerf
    scene = _FakeScene()
    seen = {}

    def render_image(model, c2w_nerf, h, w, focal, near, far, hist, fuse=True, **kw):
        seen.update(c2w=c2w_nerf, size=(h, w, focal), fuse=fuse, hist=hist)
        return {"rgb": torch.full((len(c2w_nerf), 3, h, w), 0.25)}

    monkeypatch.setitem(sys.modules, "models.renderer", types.SimpleNamespace(render_image=render_image))
    args = parse_args(["--tinyscale", "4"])
    fn = train_dfnet.make_nefes_render_fn(torch.nn.Module(), scene, args, torch.device("cpu"))
    c2w = torch.as_tensor(scene.train.poses[:3]).float()
    out = fn(c2w, scene.train.hists[:3])
    assert out.shape == (3, 3, H, W) and torch.allclose(out, torch.full_like(out, 0.25))
    assert torch.allclose(seen["c2w"], apr_to_nerf(c2w, scene.world_setup))
    assert not torch.allclose(seen["c2w"], c2w)  # the world setup really moves the cameras
    assert seen["size"] == (8, 8, 7.5) and seen["fuse"] is False
