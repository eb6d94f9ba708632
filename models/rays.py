"""Camera rays: the original's pixel convention, or through the pixel centres (spec §2.4; docs/architecture.md "Rays").

* Pixel ``(u, v)`` = (column, row) with **integer** coordinates 0..W-1 / 0..H-1;
  principal point ``(W/2, H/2)`` computed as floats (53.0, 30.0 for a 106x60 render).
* Camera-frame direction (OpenGL axes: x right, y up, looking along -z):
  ``((u + c - W/2) / f, -(v + c - H/2) / f, -1)``; world direction ``R d``, **not normalised** (the depth
  parameter z is the distance along the optical axis); origin ``t``.
* ``c`` is the field's ``pixel_center``. The original uses ``c = 0``: the ray of pixel ``u`` passes
  through the integer coordinate ``u``. An image downsampled by ``K`` from one whose pixel centres lie
  at integer coordinates (a camera with the principal point at ``W/2`` in OpenCV's convention, or this
  project's synthetic renderer) has its pixel ``u`` centred at ``u + 0.5 - 0.5 / K`` instead, so with
  ``c = 0`` every image is registered about half a pixel off its pose. ``c = 0.5`` casts through the
  pixel centres (to within ``0.5 / K`` of a pixel; docs/convergence.md, eighth pass).
* The field's view-direction input is ``d / |d|`` (:func:`view_dirs`).

All functions are differentiable w.r.t. the pose (test-time refinement backpropagates into it).
"""
from __future__ import annotations

import torch

from core.camera import camera_dirs, project, project_jacobian  # noqa: F401  (the camera model; re-exported)


def pixel_grid(h: int, w: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """``(h*w, 2)`` integer pixel coordinates ``(u, v)`` in row-major order (row v, then column u)."""
    v, u = torch.meshgrid(torch.arange(h, device=device, dtype=dtype),
                          torch.arange(w, device=device, dtype=dtype), indexing="ij")
    return torch.stack([u.reshape(-1), v.reshape(-1)], dim=-1)


def get_rays(c2w: torch.Tensor, h: int, w: int, focal: float, uv: torch.Tensor | None = None,
             center: float = 0.0):
    """Rays of a pinhole camera.

    Args:
        c2w: ``(3, 4)`` or ``(B, 3, 4)`` camera-to-world ``[R|t]`` (NeRF frame, OpenGL camera axes).
        h, w, focal: render size and focal length in pixels at that size.
        uv: optional pixel coordinates ``(R, 2)`` (shared by all poses) or ``(B, R, 2)``;
            default: every pixel, row-major.
        center: where in a pixel its ray passes (the field's ``pixel_center``; module docstring).
    Returns:
        ``rays_o, rays_d``: ``(R, 3)`` each for a single pose, ``(B, R, 3)`` for a batch;
        ``rays_d`` is not normalised.
    """
    single = c2w.dim() == 2
    c2w_b = c2w.unsqueeze(0) if single else c2w
    if uv is None:
        uv = pixel_grid(h, w, device=c2w.device, dtype=c2w.dtype)
    uv = uv.to(device=c2w.device, dtype=c2w.dtype)
    dirs = camera_dirs(uv, h, w, focal, center)                           # (R,3) or (B,R,3)
    if dirs.dim() == 2:
        dirs = dirs.unsqueeze(0).expand(c2w_b.shape[0], -1, -1)
    rays_d = dirs @ c2w_b[:, :3, :3].transpose(1, 2)                      # (B, R, 3) = R d
    rays_o = c2w_b[:, None, :3, 3].expand_as(rays_d)                      # (B, R, 3)
    if single:
        return rays_o[0], rays_d[0]
    return rays_o, rays_d


def view_dirs(rays_d: torch.Tensor) -> torch.Tensor:
    """Unit view directions ``d / |d|`` (the field's direction input)."""
    return rays_d / torch.linalg.norm(rays_d, dim=-1, keepdim=True)


def patch_pixels(corners: torch.Tensor, size: int = 16) -> torch.Tensor:
    """Pixel coordinates of square patches.

    Args:
        corners: ``(P, 2)`` integer top-left corners as ``[row, col]``.
        size: patch side (16).
    Returns:
        ``(P*size*size, 2)`` ``(u, v)`` coordinates ordered patch -> row -> column.
    """
    corners = torch.as_tensor(corners)
    r = torch.arange(size, device=corners.device)
    rows = corners[:, 0, None, None] + r[None, :, None]                      # (P, s, 1)
    cols = corners[:, 1, None, None] + r[None, None, :]                      # (P, 1, s)
    rows, cols = torch.broadcast_tensors(rows, cols)
    return torch.stack([cols.reshape(-1), rows.reshape(-1)], dim=-1)
