"""Refinement converges through the real renderer (issue 15): a tiny NeFeS trained on the tiny room,
true test poses perturbed by 5 deg / 5 cm, refined by direct pose refinement.

The targets are the field's own fused maps at the true poses (upsampled to the working size), so the loss
minimum is at the truth by construction: this checks the optimisers, the renderer's pose gradients /
Jacobians and the loss, not how well a field imitates DFNet (``python -m bench.basin`` measures that on
trained benchmark scenes). Each test fails if the refinement does not move, moves the wrong way, or
stops far from the minimum.
"""
import numpy as np
import pytest
import torch

from test_refinement_loop import _errors, _perturbed


@pytest.fixture(scope="module")
def problem(tiny_room, tiny_sharp_field):
    from conftest import refinement_problem
    p = refinement_problem(tiny_room, tiny_sharp_field)
    gt = p["gt"]
    inits = torch.stack([_perturbed(gt[i], deg=5.0, metres=0.05, seed=10 + i) for i in range(len(gt))])
    return {**p, "inits": inits}


def _median_errors(poses, gt):
    e = np.array([_errors(p, g) for p, g in zip(poses, gt)])
    return np.median(e[:, 0]), np.median(e[:, 1])


def _check(results, problem, factor):
    t0, r0 = _median_errors(problem["inits"], problem["gt"])
    t1, r1 = _median_errors([p for p, _ in results], problem["gt"])
    assert r1 < r0 / factor and t1 < t0 / factor, (t0, r0, t1, r1)
    assert all(info["losses"][-1] < info["losses"][0] for _, info in results)


def test_levenberg_marquardt_converges_from_5_degrees(problem, one_thread):
    from dm.refine_lm import LMSettings, refine_pose_lm_batch
    targets = torch.nn.functional.interpolate(problem["fused"], size=problem["working"], mode="bilinear",
                                              align_corners=False)
    results = refine_pose_lm_batch(problem["inits"], problem["nefes"], problem["hists"], targets, problem["cam"],
                                   LMSettings(opt_iter=10, crop=2))
    _check(results, problem, factor=5)


def test_levenberg_marquardt_with_a_photometric_term_converges(problem, one_thread):
    """lm_color > 0: the feature residual plus the colour residual against the real query images.
    (Colour alone does not pin the pose of this 40-epoch, 24x32, ~21 dB field; bench.basin measures it
    on trained scenes.)"""
    from dm.refine_lm import LMSettings, refine_pose_lm_batch
    targets = torch.nn.functional.interpolate(problem["fused"], size=problem["working"], mode="bilinear",
                                              align_corners=False)
    results = refine_pose_lm_batch(problem["inits"], problem["nefes"], problem["hists"], targets, problem["cam"],
                                   LMSettings(opt_iter=10, crop=2, color=0.1), images=problem["imgs"])
    _check(results, problem, factor=5)


def test_color_residual_is_weighted_half_mse():
    from dm.refine_loss import ColorResidual
    g = torch.Generator().manual_seed(0)
    imgs, rgb = torch.rand(2, 3, 16, 24, generator=g), torch.rand(2, 3, 8, 12, generator=g)
    res = ColorResidual(imgs, (8, 12), crop=0, sigma=0.0, weight=3.0)
    small = torch.nn.functional.avg_pool2d(imgs, 2)
    expected = 3.0 * 0.5 * (rgb - small).square().flatten(1).mean(1)
    assert torch.allclose(res.loss(res.residual(rgb, torch.arange(2))), expected, rtol=1e-5)
    d = torch.rand(2, 1, 3, 8, 12, generator=g)   # linear: Jacobian of a direction = difference of residuals
    lin = res.residual(rgb + d[:, 0], torch.arange(2)) - res.residual(rgb, torch.arange(2))
    assert torch.allclose(res.jacobian(d)[:, 0], lin, atol=1e-5)


def test_color_term_needs_images(problem):
    from dm.refine_lm import LMSettings, refine_pose_lm_batch
    with pytest.raises(ValueError, match="query images"):
        refine_pose_lm_batch(problem["inits"], problem["nefes"], problem["hists"], problem["fused"], problem["cam"],
                             LMSettings(opt_iter=1, color=1.0))


def test_adam_pose_refinement_converges_from_5_degrees(problem, one_thread):
    from dm.refine_pose import PoseRefineSettings, refine_pose_batch
    results = refine_pose_batch(problem["inits"], problem["nefes"], problem["hists"], problem["fused"],
                                problem["cam"], PoseRefineSettings(40, 0.01, 0.01, False))
    _check(results, problem, factor=3)   # Adam's fixed steps approach more slowly than LM (~x4.5 in 40 steps)


def test_basin_objective_is_the_polish_objective(problem, one_thread):
    """bench.basin's objective-bound count compares final and true poses on exactly the loss the polish
    minimises: its PSNR equals the one of the polish's own first loss value at the same poses."""
    from bench.basin import objective_psnr
    from dm.refine_lm import LMSettings, refine_pose_lm_batch
    from dm.refine_loss import ColorResidual
    got = objective_psnr(problem["nefes"], problem["cam"], problem["imgs"], problem["hists"], problem["inits"], crop=2)
    polish = refine_pose_lm_batch(problem["inits"], problem["nefes"], problem["hists"], problem["fused"], problem["cam"],
                                  LMSettings(opt_iter=1, crop=2, feature=0.0, color=1.0, jacobian="flow"),
                                  images=problem["imgs"])
    expected = [ColorResidual.psnr(info["losses"][0]) for _, info in polish]
    assert np.allclose(got, expected, atol=1e-3), (got, expected)
    at_truth = objective_psnr(problem["nefes"], problem["cam"], problem["imgs"], problem["hists"], problem["gt"], crop=2)
    assert not np.allclose(got, at_truth, atol=1e-3)   # it depends on the pose
