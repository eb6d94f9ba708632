import math

import pytest
import torch

from core import geometry as G


def rand_rot(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return G.random_rotation(n, 180.0, generator=g)


def test_quaternion_roundtrip_and_convention():
    R = rand_rot(200)
    q = G.rotmat_to_quat(R)
    assert torch.allclose(G.quat_to_rotmat(q), R, atol=1e-10)
    # 90 degrees about z, Hamilton w-first: (cos45, 0, 0, sin45) maps x -> y
    q90 = torch.tensor([math.cos(math.pi / 4), 0, 0, math.sin(math.pi / 4)], dtype=torch.float64)
    assert torch.allclose(G.quat_to_rotmat(q90) @ torch.tensor([1.0, 0, 0], dtype=torch.float64),
                          torch.tensor([0.0, 1, 0], dtype=torch.float64), atol=1e-12)


def test_so3_exp_log_roundtrip_including_small_and_near_pi():
    g = torch.Generator().manual_seed(1)
    axis = torch.randn(100, 3, generator=g, dtype=torch.float64)
    axis = axis / axis.norm(dim=-1, keepdim=True)
    angles = torch.cat([torch.full((20,), 1e-9), torch.linspace(1e-3, 3.1, 60), torch.full((20,), 3.14159)])
    r = axis * angles[:, None].double()
    R = G.so3_exp(r)
    assert torch.allclose(R @ R.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand_as(R), atol=1e-12)
    assert torch.allclose(G.so3_exp(G.so3_log(R)), R, atol=1e-9)


def test_se3_exp_matches_series_and_log_inverts():
    g = torch.Generator().manual_seed(2)
    xi = torch.randn(50, 6, generator=g, dtype=torch.float64)
    xi[:, 3:] *= 3.0 / (1.0 + xi[:, 3:].norm(dim=-1, keepdim=True))  # |ω| < π: log is unique
    T = G.se3_exp(xi)
    # matrix exponential of the 4x4 twist is the ground truth
    twist = torch.zeros(50, 4, 4, dtype=torch.float64)
    twist[:, :3, :3] = G.skew(xi[:, 3:])
    twist[:, :3, 3] = xi[:, :3]
    ref = torch.linalg.matrix_exp(twist)[:, :3, :4]
    assert torch.allclose(T, ref, atol=1e-10)
    assert torch.allclose(G.se3_log(T), xi, atol=1e-8)


def test_se3_exp_gradient_finite_at_zero():
    xi = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    G.se3_exp(xi).sum().backward()
    assert torch.isfinite(xi.grad).all()
    assert torch.autograd.gradcheck(G.se3_exp, (torch.randn(3, 6, dtype=torch.float64, requires_grad=True),))


def test_project_to_so3_and_rotation_error():
    R = rand_rot(20, seed=3)
    noisy = R + 1e-3 * torch.randn(20, 3, 3, dtype=torch.float64)
    P = G.project_to_so3(noisy)
    assert torch.allclose(P @ P.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand_as(P), atol=1e-12)
    assert torch.all(torch.det(P) > 0)
    delta = G.so3_exp(torch.tensor([[0.0, 0.0, math.radians(3.0)]], dtype=torch.float64))
    err = G.rotation_error_deg(delta @ R[:1], R[:1])
    assert err.item() == pytest.approx(3.0, abs=1e-9)
    # tiny angles stay accurate (acos would lose them)
    tiny = G.so3_exp(torch.tensor([[1e-7, 0.0, 0.0]], dtype=torch.float64))
    assert G.rotation_error_deg(tiny, torch.eye(3, dtype=torch.float64)[None]).item() == pytest.approx(math.degrees(1e-7), rel=1e-4)


def _svd_autograd_projection(M):
    U, _, Vh = torch.linalg.svd(M)
    D = torch.ones(M.shape[:-1], dtype=M.dtype)
    D[..., 2] = torch.det(U @ Vh).detach()
    return U @ torch.diag_embed(D) @ Vh


def test_project_to_so3_gradient_matches_svd_autograd_and_is_finite_at_rotations():
    g = torch.Generator().manual_seed(5)
    M = torch.randn(6, 3, 3, dtype=torch.float64, generator=g)    # generic, some with det < 0
    assert torch.autograd.gradcheck(G.project_to_so3, (M.clone().requires_grad_(),))
    W = torch.randn(6, 3, 3, dtype=torch.float64, generator=g)
    a = M.clone().requires_grad_()
    (G.project_to_so3(a) * W).sum().backward()
    b = M.clone().requires_grad_()
    (_svd_autograd_projection(b) * W).sum().backward()
    assert torch.allclose(a.grad, b.grad, atol=1e-9)
    # an exact rotation (all singular values 1): SVD autograd gives NaN/inf, the projection does not
    R = rand_rot(4, seed=6).requires_grad_()
    (G.project_to_so3(R) * W[:4]).sum().backward()
    assert torch.isfinite(R.grad).all()
    eps = 1e-6   # and it is the derivative: central differences along a random direction
    E = torch.randn(4, 3, 3, dtype=torch.float64, generator=g)
    f = lambda X: (G.project_to_so3(X) * W[:4]).sum()   # noqa: E731
    fd = (f(R.detach() + eps * E) - f(R.detach() - eps * E)) / (2 * eps)
    assert fd.item() == pytest.approx((R.grad * E).sum().item(), rel=1e-6, abs=1e-9)


def test_invert_and_compose():
    R = rand_rot(10, seed=4)
    t = torch.randn(10, 3, 1, dtype=torch.float64)
    T = torch.cat([R, t], -1)
    I = G.compose(T, G.invert_pose(T))
    assert torch.allclose(I, torch.cat([torch.eye(3, dtype=torch.float64).expand(10, 3, 3), torch.zeros(10, 3, 1, dtype=torch.float64)], -1), atol=1e-12)
    H = G.to_homogeneous(T)
    assert torch.allclose(torch.linalg.inv(H)[:, :3], G.invert_pose(T), atol=1e-12)


def test_first_non_rotation_names_the_bad_block():
    import numpy as np
    from core import geometry
    R = np.stack([np.eye(3)] * 4)
    assert geometry.first_non_rotation(R)[0] is None
    R[2] = np.diag([1.0, 1.0, -1.0])                     # a reflection: orthonormal, determinant -1
    assert geometry.first_non_rotation(R)[0] == 2
    assert geometry.first_non_rotation(R, proper=False)[0] is None
    R[1] = 1.5 * np.eye(3)                               # scaled: not orthonormal
    i, dev, _ = geometry.first_non_rotation(R, proper=False)
    assert i == 1 and abs(dev - 1.25) < 1e-12
    R[1] = np.eye(3) + 2e-3                              # within the tolerance (the paper's files: ~1e-3)
    assert geometry.first_non_rotation(R, proper=False)[0] is None
