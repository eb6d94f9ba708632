"""The pinhole camera model of the whole project (one place for it; docs/architecture.md "Rays").

OpenGL camera axes (x right, y up, looking along -z); pixel coordinates ``(u, v)`` = (column, row);
principal point ``(W/2, H/2)``; ``center`` is where in a pixel its ray passes (the field's
``pixel_center``, :mod:`models.rays`). :mod:`models.rays` casts rays with it; :mod:`core.triangulation`
triangulates keypoints with it.
"""
from __future__ import annotations

import torch


def camera_dirs(uv: torch.Tensor, h: int, w: int, focal: float, center: float = 0.0) -> torch.Tensor:
    """``(..., 2)`` pixel coordinates -> ``(..., 3)`` camera-frame directions (z = -1), through
    ``uv + center`` (the field's ``pixel_center``)."""
    x = (uv[..., 0] + (center - w / 2.0)) / focal
    y = -(uv[..., 1] + (center - h / 2.0)) / focal
    return torch.stack([x, y, -torch.ones_like(x)], dim=-1)


def project(x_cam: torch.Tensor, h: int, w: int, focal: float, center: float = 0.0) -> torch.Tensor:
    """``(..., 3)`` camera-frame points (OpenGL axes, in front of the camera: z < 0) -> ``(..., 2)`` pixel
    coordinates ``(u, v)``; the inverse of :func:`camera_dirs`
    (``project(z * camera_dirs(uv, center=c), center=c) == uv``)."""
    depth = -x_cam[..., 2]
    return torch.stack([(w / 2.0 - center) + focal * x_cam[..., 0] / depth,
                        (h / 2.0 - center) - focal * x_cam[..., 1] / depth], dim=-1)


def project_jacobian(x_cam: torch.Tensor, focal: float) -> torch.Tensor:
    """``(..., 3)`` camera-frame points -> ``(..., 2, 3)`` derivative of :func:`project` w.r.t. the point."""
    x, y, depth = x_cam[..., 0], x_cam[..., 1], -x_cam[..., 2]
    o = torch.zeros_like(depth)
    du = torch.stack([focal / depth, o, focal * x / depth ** 2], -1)
    dv = torch.stack([o, -focal / depth, -focal * y / depth ** 2], -1)
    return torch.stack([du, dv], -2)
