"""Refinement (spec §5): pose parameterisation, the APR fine-tuning loop, verification, bicubic
upsampling, and test_refinement.py end to end on the tiny synthetic room."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dm.refine_apr import APRRefineSettings, refine_with_apr
from dm.refine_loss import UpsampledCosineLoss, bicubic_resize
from models.losses import feature_cosine_loss
from dm.refine_pose import PoseRefineSettings, apply_update, refine_pose
from core import geometry as G


@pytest.mark.parametrize("src,dst", [((30, 40), (60, 80)), ((7, 9), (29, 33)), ((16, 16), (8, 12))])
def test_separable_bicubic_equals_torch_bicubic(src, dst):
    x = torch.randn(2, 5, *src, dtype=torch.float64)
    ref = F.interpolate(x, size=dst, mode="bicubic", align_corners=False)
    assert torch.allclose(bicubic_resize(x, dst), ref, atol=1e-12)


@pytest.mark.parametrize("src,dst,crop", [((30, 40), (60, 80), 3), ((15, 20), (60, 80), 10), ((30, 40), (60, 80), 0),
                                          ((9, 13), (20, 31), 9)])
def test_folded_loss_equals_upsample_crop_then_cosine(src, dst, crop):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 6, *src, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randn(1, 6, *dst, generator=g, dtype=torch.float64)
    ref = feature_cosine_loss(bicubic_resize(x, dst)[..., crop:dst[0] - crop, crop:dst[1] - crop][0],
                              target[..., crop:dst[0] - crop, crop:dst[1] - crop][0])
    (g_ref,) = torch.autograd.grad(ref, x)
    loss = UpsampledCosineLoss(target, src, crop)(x)
    (g_new,) = torch.autograd.grad(loss, x)
    assert loss.item() == pytest.approx(ref.item(), abs=1e-12)
    assert torch.allclose(g_new, g_ref, atol=1e-12)
    # float32, as refinement runs it
    x32 = x.detach().float().requires_grad_(True)
    loss32 = UpsampledCosineLoss(target.float(), src, crop)(x32)
    (g32,) = torch.autograd.grad(loss32, x32)
    assert loss32.item() == pytest.approx(ref.item(), abs=1e-5)
    assert torch.allclose(g32.double(), g_ref, rtol=1e-3, atol=1e-6 * g_ref.abs().max().item())


def test_apply_update_semantics():
    g = torch.Generator().manual_seed(0)
    init = torch.cat([G.random_rotation(1, 90, generator=g)[0], torch.randn(3, 1, generator=g, dtype=torch.float64)], 1)
    assert torch.allclose(apply_update(torch.zeros(6, dtype=torch.float64), init), init)
    t = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)
    moved = apply_update(torch.cat([t, torch.zeros(3, dtype=torch.float64)]), init)
    assert torch.allclose(moved[:, :3], init[:, :3]) and torch.allclose(moved[:, 3], init[:, 3] + t)
    r = torch.tensor([0.0, 0.0, 0.2], dtype=torch.float64)
    rot = apply_update(torch.cat([t, r]), init)
    assert torch.allclose(rot[:, :3], G.so3_exp(r) @ init[:, :3])                     # delta on the left
    assert torch.allclose(rot[:, 3], init[:, 3] + G.so3_left_jacobian(r) @ t)        # lietorch's V(r)·t


class BlobCamera:
    """Differentiable toy renderer: K 3D points seen by a pinhole (OpenGL axes), one Gaussian blob per
    channel at each point's projection. Stands in for NeFeS so the optimisation loops can be checked."""

    def __init__(self, h=24, w=32, focal=30.0, K=12, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.h, self.w, self.f = h, w, focal
        self.pts = torch.cat([torch.rand(K, 2, generator=g) * 2 - 1, -1.2 - 3.0 * torch.rand(K, 1, generator=g)], 1)
        v, u = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
        self.uv = torch.stack([u, v])

    def render(self, nefes, c2w, hist):
        if c2w.dim() == 3:   # a batch of poses, as the batched refinement renders them
            outs = [self.render(nefes, c, None) for c in c2w]
            return {k: torch.cat([o[k] for o in outs]) for k in outs[0]}
        R, t = c2w[:, :3].float(), c2w[:, 3].float()
        pc = (self.pts - t) @ R                                       # world -> camera (R^T (p - t))
        u = self.f * pc[:, 0] / -pc[:, 2] + self.w / 2
        v = -self.f * pc[:, 1] / -pc[:, 2] + self.h / 2
        d2 = (self.uv[0][None] - u[:, None, None]) ** 2 + (self.uv[1][None] - v[:, None, None]) ** 2
        feat = torch.exp(-d2 / 8.0)[None]                             # (1, K, h, w)
        return {"fused": feat, "rgb": feat[:, :3]}


def _perturbed(gt, deg=3.0, metres=0.05, seed=1):
    g = torch.Generator().manual_seed(seed)
    dR = G.random_rotation(1, deg, generator=g, dtype=torch.float32)[0]
    dt = torch.randn(3, generator=g)
    return torch.cat([dR @ gt[:, :3], (gt[:, 3] + metres * dt / dt.norm())[:, None]], 1)


def _errors(pose, gt):
    t, r = G.pose_errors(pose[None].double(), gt[None].double())
    return t.item(), r.item()


def test_direct_pose_refinement_converges_on_a_toy_scene():
    cam, gt = BlobCamera(), torch.eye(3, 4)
    target = cam.render(None, gt, None)["fused"]
    init = _perturbed(gt)
    t0, r0 = _errors(init, gt)
    refined, info = refine_pose(init, None, None, target, cam, PoseRefineSettings(opt_iter=60, lr_r=0.01, lr_t=0.01))
    t1, r1 = _errors(refined, gt)
    assert info["losses"][-1] < 0.2 * info["losses"][0]
    assert t1 < 0.3 * t0 and r1 < 0.3 * r0


class PoseParamAPR(nn.Module):
    """An 'APR' whose output is a learnable pose (weights = pose): fine-tuning it moves the pose."""

    def __init__(self, pose):
        super().__init__()
        self.pose = nn.Parameter(pose.clone())

    def forward(self, img):
        return self.pose[None] + 0 * img.mean()


@pytest.mark.parametrize("per_pixel", [False, True])
def test_apr_finetuning_refines_and_keeps_the_original_apr(per_pixel):
    cam, gt = BlobCamera(), torch.eye(3, 4)
    target = F.interpolate(cam.render(None, gt, None)["fused"], scale_factor=2, mode="bicubic", align_corners=False)
    img = torch.rand(1, 3, 48, 64)
    apr = PoseParamAPR(_perturbed(gt))
    before = apr.pose.detach().clone()
    s = APRRefineSettings(opt_iter=60, learning_rate=0.01, crop=4, verification=False, per_pixel=per_pixel)
    refined, info = refine_with_apr(apr, None, img, None, target, cam, s)
    assert torch.equal(apr.pose.detach(), before)                       # every query starts from the original
    t0, r0 = _errors(G.orthonormalize_pose(before), gt)
    t1, r1 = _errors(refined, gt)
    assert t1 < 0.3 * t0 and r1 < 0.3 * r0 and not info["reverted"]


class BorderOnlyCamera(BlobCamera):
    """Renders features that match the target only outside a central window: the loss depends on
    the pose only through border pixels."""

    def render(self, nefes, c2w, hist):
        out = super().render(nefes, c2w, hist)
        fused = out["fused"].clone()
        fused[..., 4:-4, 4:-4] = 1.0                                      # centre: pose-independent
        return {"fused": fused, "rgb": fused[:, :3]}


def test_refine_crop_removes_border_pixels_from_the_loss():
    cam, gt = BorderOnlyCamera(), torch.eye(3, 4)
    target = bicubic_resize(cam.render(None, gt, None)["fused"], (48, 64))
    img = torch.rand(1, 3, 48, 64)
    apr = PoseParamAPR(_perturbed(gt))
    losses = {}
    for crop in (0, 12):   # 12 px at 48x64: every bicubic tap of what is left lies in the constant centre
        s = APRRefineSettings(opt_iter=3, learning_rate=0.01, crop=crop, verification=False)
        refined, info = refine_with_apr(apr, None, img, None, target, cam, s)
        losses[crop] = info["losses"]
    assert losses[0][-1] < losses[0][0]                                  # border pixels drive the pose
    assert max(losses[12]) == min(losses[12])                            # cropped away: nothing to optimise


@pytest.mark.parametrize("crop", [-1, 24, 30])
def test_refine_crop_that_leaves_no_pixels_is_a_clear_error(crop):
    cam, gt = BlobCamera(), torch.eye(3, 4)
    s = APRRefineSettings(opt_iter=1, crop=crop, verification=False)
    with pytest.raises(ValueError, match="refine_crop"):
        refine_with_apr(PoseParamAPR(gt), None, torch.rand(1, 3, 48, 64), None, torch.rand(1, 12, 48, 64), cam, s)


class WorseningCamera(BlobCamera):
    """Renders the query itself at the first iteration, noise afterwards: PSNR/SSIM drop."""

    def __init__(self, img):
        super().__init__()
        self.img, self.calls = img, 0

    def render(self, nefes, c2w, hist):
        out = super().render(nefes, c2w, hist)
        self.calls += 1
        small = F.interpolate(self.img, size=(self.h, self.w), mode="bilinear", align_corners=False)
        out["rgb"] = small if self.calls == 1 else torch.rand_like(small)
        return out


@pytest.mark.parametrize("verify", [True, False])
def test_verification_step_reverts_to_the_apr_pose(verify):
    cam, gt = BlobCamera(), torch.eye(3, 4)
    target = F.interpolate(cam.render(None, gt, None)["fused"], scale_factor=2, mode="bicubic", align_corners=False)
    img = F.interpolate(torch.rand(1, 3, 6, 8), size=(48, 64), mode="bilinear", align_corners=False)
    apr = PoseParamAPR(_perturbed(gt))
    s = APRRefineSettings(opt_iter=10, learning_rate=0.01, crop=4, verification=verify)
    refined, info = refine_with_apr(apr, None, img, None, target, WorseningCamera(img), s)
    initial = G.orthonormalize_pose(apr.pose.detach())
    assert info["reverted"] is verify
    assert torch.allclose(refined, initial) is verify
    if verify:
        assert info["psnr1"] < info["psnr0"]


# ----------------------------------------------------------------------------------------------
# test_refinement.py end to end (tiny models: checks files and formats, not accuracy)
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pose_only", [0, 2, 3])
def test_test_refinement_writes_the_original_result_files(tiny_room, tiny_models, tmp_path, pose_only):
    import test_refinement
    from conftest import tiny_nefes_args
    from dm.metrics import load_pose_file
    nefes_ckpt, dfnet = tiny_models
    argv = tiny_nefes_args(tiny_room, tmp_path, "exp", "--pose_only", pose_only, "--opt_iter", 2, "--svd_reg",
                           "--ft_path", nefes_ckpt, "--pretrain_model_path", dfnet,
                           "--pretrain_featurenet_path", dfnet, "--learning_rate", 1e-5)
    assert test_refinement.main(argv) == 0
    out = tmp_path / "exp"
    gt = load_pose_file(out / "room_test_gt.txt")
    apr = load_pose_file(out / "DFNet_room_results.txt")
    assert gt.shape == apr.shape and gt.shape[0] == 2      # 4 test frames, testskip 2
    R = torch.as_tensor(apr[:, :, :3])
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3, dtype=R.dtype).expand_as(R), atol=1e-5)  # SVD-projected
    summary = json.loads((out / "summary.json").read_text())
    for key in ("median_t", "median_r", "mean_t", "mean_r", "recalls"):
        assert key in summary["apr"]
    frames = (out / "room_test_frames.txt").read_text().splitlines()
    assert frames == ["seq-03/frame-000000.color.png", "seq-03/frame-000002.color.png"]   # loader order, testskip 2
    assert summary["world_size"] == 1
    if pose_only:
        kind = "APR_pose" if pose_only == 2 else "pose_pose"
        refined = load_pose_file(out / f"DFNet_room_NeFeS2_{kind}_results.txt")
        assert refined.shape == gt.shape and np.isfinite(refined).all()
        assert summary["seconds_per_query"] > 0 and summary["device"] == "cpu"
        assert len(summary["query_seconds"]) == 2 and summary["resumed_queries"] == 0
        assert summary["previews"] == [0, 1] and (out / "previews.png").stat().st_size > 0
        assert (out / "trajectories.png").stat().st_size > 0 and (out / "error_cdf.png").stat().st_size > 0


def test_missing_nefes_checkpoint_is_one_clear_error(tiny_room, tiny_models, tmp_path, capsys):
    import test_refinement
    from conftest import tiny_nefes_args
    _, dfnet = tiny_models
    argv = tiny_nefes_args(tiny_room, tmp_path, "exp", "--pose_only", 2, "--ft_path", tmp_path / "nope.tar",
                           "--pretrain_model_path", dfnet)
    assert test_refinement.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.tar" in err[0]


def test_refine_loss_benchmark_smoke(tmp_path):
    from bench import refine_loss
    assert refine_loss.main(["--repeats", "1", "--out", str(tmp_path)]) == 0
    rows = (tmp_path / "refine_loss.txt").read_text().splitlines()[2:]
    assert [r.split()[0] for r in rows] == ["demo", "paper"]
    for r in rows:   # the folded loss agrees with the explicit one
        assert float(r.split()[-2]) < 1e-5 and float(r.split()[-1]) < 1e-3
