"""SE(3) / SO(3) maths: the single home of rotations, quaternions and pose errors.

Everything here is plain PyTorch (no pytorch3d, no lietorch) and works on any leading
batch shape and on any device. Functions are differentiable unless stated otherwise.
Numpy callers wrap their arrays with ``torch.as_tensor(..., dtype=torch.float64)``.

Conventions
-----------
* A pose is a ``(..., 3, 4)`` matrix ``[R | t]``; which frame it maps from/to is the caller's
  business (see ``core/frames.py`` for the frames used in this project).
* Quaternions are Hamilton, scalar first: ``(w, x, y, z)``.
* se(3) tangent vectors are ordered **translation first, rotation second** ``(tx, ty, tz, rx, ry, rz)``,
  as lietorch's ``SE3.exp`` which the original NeFeS used for direct pose refinement.
"""
from __future__ import annotations

import math

import torch

_EPS = 1e-8


# ----------------------------------------------------------------------------------------------
# basic helpers
# ----------------------------------------------------------------------------------------------
def to_homogeneous(pose_34: torch.Tensor) -> torch.Tensor:
    """(..., 3, 4) -> (..., 4, 4) by appending the row [0, 0, 0, 1]."""
    bottom = torch.zeros(pose_34.shape[:-2] + (1, 4), dtype=pose_34.dtype, device=pose_34.device)
    bottom[..., 0, 3] = 1.0
    return torch.cat([pose_34[..., :3, :4], bottom], dim=-2)


def invert_pose(pose_34: torch.Tensor) -> torch.Tensor:
    """Inverse of a rigid transform [R|t] -> [R^T | -R^T t], (..., 3, 4)."""
    R, t = pose_34[..., :3, :3], pose_34[..., :3, 3:]
    Rt = R.transpose(-1, -2)
    return torch.cat([Rt, -Rt @ t], dim=-1)


def compose(a_34: torch.Tensor, b_34: torch.Tensor) -> torch.Tensor:
    """a ∘ b for rigid transforms given as (..., 3, 4)."""
    R = a_34[..., :3, :3] @ b_34[..., :3, :3]
    t = a_34[..., :3, :3] @ b_34[..., :3, 3:] + a_34[..., :3, 3:]
    return torch.cat([R, t], dim=-1)


def skew(v: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 3, 3) cross-product matrix."""
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], dim=-1).reshape(v.shape[:-1] + (3, 3))


# ----------------------------------------------------------------------------------------------
# SO(3) projection
# ----------------------------------------------------------------------------------------------
class _ProjectToSO3(torch.autograd.Function):
    """Polar projection with an analytic backward.

    Autograd through ``torch.linalg.svd`` divides by σi² − σj², which is 0/NaN when the input is
    already (nearly) a rotation (all σ = 1), e.g. an APR that outputs proper rotations. The polar
    factor Q = U D Vᵀ has the well-posed derivative dQ = U (F ∘ (X − Xᵀ)) V'ᵀ with X = Uᵀ dM V',
    V' = V D and F_ij = 1 / (σ'i + σ'j) (σ' = σ D): the same gradient wherever both are defined.
    """

    @staticmethod
    def forward(ctx, M):
        U, S, Vh = torch.linalg.svd(M)
        D = torch.ones_like(S)
        D[..., 2] = torch.det(U @ Vh)
        Vd = Vh.transpose(-1, -2) * D.unsqueeze(-2)          # V' = V D
        ctx.save_for_backward(U, S * D, Vd)
        return U @ Vd.transpose(-1, -2)

    @staticmethod
    def backward(ctx, grad):
        U, Sd, Vd = ctx.saved_tensors
        A = U.transpose(-1, -2) @ grad @ Vd
        F = 1.0 / (Sd.unsqueeze(-1) + Sd.unsqueeze(-2))
        return U @ (F * (A - A.transpose(-1, -2))) @ Vd.transpose(-1, -2)


def project_to_so3(R: torch.Tensor) -> torch.Tensor:
    """Closest rotation (Frobenius) to each (..., 3, 3) matrix: U diag(1, 1, det(UV^T)) V^T.

    Differentiable, also at inputs that already are rotations (see :class:`_ProjectToSO3`); used both
    to orthonormalise APR outputs (``svd_reg``) and inside the rotation-error metric.
    """
    return _ProjectToSO3.apply(R)


def orthonormalize_pose(pose_34: torch.Tensor) -> torch.Tensor:
    """Replace the rotation block of (..., 3, 4) poses by its SO(3) projection."""
    return torch.cat([project_to_so3(pose_34[..., :3, :3]), pose_34[..., :3, 3:]], dim=-1)


# ----------------------------------------------------------------------------------------------
# quaternions (w, x, y, z)
# ----------------------------------------------------------------------------------------------
def quat_to_rotmat(q: torch.Tensor) -> torch.Tensor:
    """(..., 4) quaternion (w first; normalised here) -> (..., 3, 3) rotation matrix."""
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(q.shape[:-1] + (3, 3))


def rotmat_to_quat(R: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotation -> (..., 4) unit quaternion (w first, w >= 0). Not meant for autograd.

    Uses the numerically stable branch (largest diagonal term) per matrix.
    """
    m = R.reshape(-1, 3, 3)
    tr = m[:, 0, 0] + m[:, 1, 1] + m[:, 2, 2]
    cands = torch.stack([
        torch.stack([1 + tr, m[:, 2, 1] - m[:, 1, 2], m[:, 0, 2] - m[:, 2, 0], m[:, 1, 0] - m[:, 0, 1]], -1),
        torch.stack([m[:, 2, 1] - m[:, 1, 2], 1 + m[:, 0, 0] - m[:, 1, 1] - m[:, 2, 2],
                     m[:, 0, 1] + m[:, 1, 0], m[:, 0, 2] + m[:, 2, 0]], -1),
        torch.stack([m[:, 0, 2] - m[:, 2, 0], m[:, 0, 1] + m[:, 1, 0],
                     1 - m[:, 0, 0] + m[:, 1, 1] - m[:, 2, 2], m[:, 1, 2] + m[:, 2, 1]], -1),
        torch.stack([m[:, 1, 0] - m[:, 0, 1], m[:, 0, 2] + m[:, 2, 0], m[:, 1, 2] + m[:, 2, 1],
                     1 - m[:, 0, 0] - m[:, 1, 1] + m[:, 2, 2]], -1),
    ], dim=1)  # (B, 4 candidates, 4)
    diag = torch.stack([tr, m[:, 0, 0], m[:, 1, 1], m[:, 2, 2]], -1)
    best = diag.argmax(-1)
    q = cands[torch.arange(m.shape[0]), best]
    q = q / q.norm(dim=-1, keepdim=True)
    q = torch.where(q[:, :1] < 0, -q, q)
    return q.reshape(R.shape[:-2] + (4,))


# ----------------------------------------------------------------------------------------------
# exponential / logarithm maps
# ----------------------------------------------------------------------------------------------
def _sin_over_x(theta: torch.Tensor) -> torch.Tensor:
    small = theta < 1e-4
    safe = torch.where(small, torch.ones_like(theta), theta)
    return torch.where(small, 1 - theta ** 2 / 6, torch.sin(safe) / safe)


def _one_minus_cos_over_x2(theta: torch.Tensor) -> torch.Tensor:
    small = theta < 1e-4
    safe = torch.where(small, torch.ones_like(theta), theta)
    return torch.where(small, 0.5 - theta ** 2 / 24, (1 - torch.cos(safe)) / safe ** 2)


def _x_minus_sin_over_x3(theta: torch.Tensor) -> torch.Tensor:
    small = theta < 1e-3
    safe = torch.where(small, torch.ones_like(theta), theta)
    return torch.where(small, 1.0 / 6 - theta ** 2 / 120, (safe - torch.sin(safe)) / safe ** 3)


def _safe_norm(v: torch.Tensor) -> torch.Tensor:
    # sqrt with a finite gradient at 0 (the Taylor branches above take over there).
    return torch.sqrt((v * v).sum(-1) + 1e-24)


def so3_exp(r: torch.Tensor) -> torch.Tensor:
    """Axis-angle (..., 3) (radians) -> rotation (..., 3, 3) by Rodrigues' formula."""
    theta = _safe_norm(r)[..., None, None]
    K = skew(r)
    eye = torch.eye(3, dtype=r.dtype, device=r.device).expand(K.shape)
    return eye + _sin_over_x(theta) * K + _one_minus_cos_over_x2(theta) * (K @ K)


def so3_left_jacobian(r: torch.Tensor) -> torch.Tensor:
    """V(r) = I + (1-cos θ)/θ² K + (θ - sin θ)/θ³ K², the SO(3) left Jacobian, (..., 3, 3)."""
    theta = _safe_norm(r)[..., None, None]
    K = skew(r)
    eye = torch.eye(3, dtype=r.dtype, device=r.device).expand(K.shape)
    return eye + _one_minus_cos_over_x2(theta) * K + _x_minus_sin_over_x3(theta) * (K @ K)


def so3_log(R: torch.Tensor) -> torch.Tensor:
    """Rotation (..., 3, 3) -> axis-angle (..., 3), robust near 0 and π. Not meant for autograd."""
    q = rotmat_to_quat(R.detach())
    w, v = q[..., 0], q[..., 1:]
    n = v.norm(dim=-1)
    theta = 2 * torch.atan2(n, w)
    scale = torch.where(n < 1e-12, torch.full_like(n, 2.0), theta / n.clamp_min(1e-12))
    return v * scale[..., None]


def se3_exp(xi: torch.Tensor) -> torch.Tensor:
    """Tangent (..., 6) ordered (translation ρ, rotation ω) -> (..., 3, 4) = [exp(ω) | V(ω) ρ].

    Matches lietorch's ``SE3.exp(xi).matrix()`` (translation first), which the original used.
    """
    rho, omega = xi[..., :3], xi[..., 3:]
    R = so3_exp(omega)
    t = (so3_left_jacobian(omega) @ rho[..., None])
    return torch.cat([R, t], dim=-1)


def se3_log(pose_34: torch.Tensor) -> torch.Tensor:
    """(..., 3, 4) -> (..., 6) tangent (translation first), inverse of :func:`se3_exp`."""
    omega = so3_log(pose_34[..., :3, :3])
    V = so3_left_jacobian(omega)
    rho = torch.linalg.solve(V, pose_34[..., :3, 3:])[..., 0]
    return torch.cat([rho, omega], dim=-1)


# ----------------------------------------------------------------------------------------------
# pose errors
# ----------------------------------------------------------------------------------------------
def rotation_error_deg(R_pred: torch.Tensor, R_gt: torch.Tensor) -> torch.Tensor:
    """Angle in degrees of SO3proj(R_pred · R_gtᵀ), (..., 3, 3) -> (...).

    The SVD projection mirrors cv2.Rodrigues in the original metric (spec §6.1): saved refined
    rotations are only orthonormal to ~1e-3 and the raw trace formula would inflate small errors.
    """
    D = project_to_so3(R_pred @ R_gt.transpose(-1, -2))
    cos = ((D[..., 0, 0] + D[..., 1, 1] + D[..., 2, 2] - 1) / 2).clamp(-1.0, 1.0)
    # acos is ill-conditioned near 0: use atan2 of the rotation axis norm instead.
    axis = torch.stack([D[..., 2, 1] - D[..., 1, 2], D[..., 0, 2] - D[..., 2, 0], D[..., 1, 0] - D[..., 0, 1]], -1)
    sin = axis.norm(dim=-1) / 2
    return torch.rad2deg(torch.atan2(sin, cos))


def translation_error(t_pred: torch.Tensor, t_gt: torch.Tensor) -> torch.Tensor:
    """Euclidean distance between (..., 3) translations (same unit as the input)."""
    return (t_pred - t_gt).norm(dim=-1)


def pose_errors(pred_34: torch.Tensor, gt_34: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pose (translation error, rotation error in degrees) for (..., 3, 4) camera-to-world poses."""
    return (translation_error(pred_34[..., :3, 3], gt_34[..., :3, 3]),
            rotation_error_deg(pred_34[..., :3, :3], gt_34[..., :3, :3]))


def random_rotation(n: int, max_angle_deg: float, generator: torch.Generator | None = None,
                    dtype=torch.float64) -> torch.Tensor:
    """n rotations about uniformly random axes with angles uniform in [0, max_angle_deg]."""
    axis = torch.randn(n, 3, generator=generator, dtype=dtype)
    axis = axis / axis.norm(dim=-1, keepdim=True)
    ang = torch.rand(n, 1, generator=generator, dtype=dtype) * math.radians(max_angle_deg)
    return so3_exp(axis * ang)


# ----------------------------------------------------------------------------------------------
# validity of rotation blocks read from files (NumPy)
# ----------------------------------------------------------------------------------------------

#: How far a 3x3 block read from a file may be from orthonormal: the paper's own refined-pose files
#: reach ~1.3e-3 (printed with few digits), a wrong file (zeros, scale, a transposed 4x4) is far above.
ROTATION_TOLERANCE = 1e-2


def rotation_defects(R):
    """(..., 3, 3) NumPy blocks -> (max |RᵀR - I| per block, determinant per block), shape (...)."""
    import numpy as np
    R = np.asarray(R, dtype=np.float64)
    dev = np.abs(np.swapaxes(R, -1, -2) @ R - np.eye(3)).max(axis=(-2, -1))
    return dev, np.linalg.det(R)


def first_non_rotation(R, proper: bool = True):
    """Index of the first of (N, 3, 3) blocks that is not a rotation (beyond :data:`ROTATION_TOLERANCE`;
    with ``proper`` also a determinant <= 0), its defect and determinant; (None, 0, 1) when all are."""
    import numpy as np
    dev, det = rotation_defects(np.reshape(R, (-1, 3, 3)))
    bad = (dev > ROTATION_TOLERANCE) | ((det <= 0) if proper else False)
    if not bad.any():
        return None, 0.0, 1.0
    i = int(np.argmax(bad))
    return i, float(dev[i]), float(det[i])
