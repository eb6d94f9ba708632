"""Multiresolution hash encoding (Instant-NGP) in pure PyTorch, with tiny-cuda-nn's exact semantics.

``HashGridEncoding`` maps points ``x01`` in the unit cube ``[0, 1]^3`` to ``L * F`` features:
for every level ``l`` it trilinearly interpolates ``F`` learned features stored at the 8 vertices
of the grid cell around the point, and concatenates the levels (level-major). Mapping scene
coordinates into the unit cube is the caller's job (the field's). Inputs outside ``[0, 1]`` are
clamped (tiny-cuda-nn does not clamp: it wraps), and the gradient w.r.t. a clamped coordinate is 0.

Layout and lookup follow tiny-cuda-nn's ``GridEncoding`` (spec §7.3), so one flat parameter
vector is valid for both backends and checkpoints move between them:

* ``scale_l = 2^(l * log2(b)) * N_min - 1`` in float32, ``res_l = ceil(scale_l) + 1`` vertices per axis;
* ``T_l = min(round_up(res_l^3, 8), 2^log2_hashmap_size)`` entries, level offsets = prefix sums of ``T_l``;
* ``params[(offset_l + idx) * F + f]`` (entry-major), ``sum_l T_l * F`` values in total;
* ``p = x * scale_l + 0.5`` (one float32 rounding, like ``fmaf``), ``g = floor(p)``, ``w = p - g``;
* corner ``c = cx + 2 cy + 4 cz`` at ``g + (cx, cy, cz)`` with weight ``prod_d (w_d or 1 - w_d)``;
* dense level (``res_l^3 <= T_l``): ``idx = gx + gy res + gz res^2``; hashed level:
  ``idx = gx ^ (gy * 2654435761) ^ (gz * 805459861)`` in uint32 arithmetic; then ``idx mod T_l``
  (dense indices wrap too, because of the +0.5 shift).

The pure-PyTorch path is a custom autograd function with a hand-written backward (first order
only; double backward is not supported). Each level interpolates by three nested lerps (x, then
y, then z: the weighted corner sum up to float rounding). The table gradient is accumulated with
``index_add_``. When ``x01`` requires grad (test-time pose refinement moves the sample points),
the forward also keeps d out / d x (``scale_l`` times the corner differences, interpolated along
the other two axes) and the backward to the points is a small contraction. On CPU the points are
processed in chunks (the working set stays in cache, no huge temporaries), indices are int32,
features are gathered and scattered as one complex64 per pair of features, and the table gradient
is scattered by several threads (levels own disjoint parts of the table).

Training: the table is one 12 M-value parameter for the default config and every step touches a
small part of it; ``torch.optim.Adam(params, fused=True)`` is about 5x faster than the default
(foreach) Adam on CPU. Render under ``torch.no_grad()`` (nothing is kept for a backward then), and
eagerly: env-notes measured a compiled no-grad forward 6-8x slower than eager.

Optional fused CPU kernel: for float32 tables on the CPU the forward (lookup and d out / d x) runs in
one C++ pass per (point, level) (``models/hashgrid_cpu.py``, built on first use; the pure path below
stays the reference and runs whenever the kernel is unavailable or ``NEFES_CPU_KERNEL=0``).

Optional tiny-cuda-nn backend: with ``use_tcnn="auto"`` and ``tinycudann`` importable, CUDA inputs
go through ``tcnn.Encoding`` (HashGrid, float32) sharing the same ``params`` Parameter;
``"always"`` uses it for every input (tcnn itself needs CUDA), ``"never"`` disables it.
"""
from __future__ import annotations

import functools
import importlib
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.autograd.function import once_differentiable

from core.defaults import HASHGRID
from models import hashgrid_cpu

_logger = logging.getLogger(__name__)

#: tiny-cuda-nn's spatial hash primes ("CoherentPrime"; ``fast_hash`` in older versions), per axis.
HASH_PRIMES = (1, 2654435761, 805459861)
#: CPU chunk size in (point, level, corner) triples. Measured (train step, 2^16 points, 1 thread):
#: 2^20 (8192 points at 16 levels) and 2^21 were fastest, 2^18 ~15 % and 2^22 ~25 % slower.
_CHUNK_CORNERS = 1 << 20
_USE_TCNN_CHOICES = ("auto", "never", "always")


# ----------------------------------------------------------------------------------------------
# layout (tiny-cuda-nn GridEncoding, spec §7.3)
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GridLayout:
    """Per-level geometry of a hash grid; all values as tiny-cuda-nn computes them.

    ``scales[l]`` is the float32 ``scale_l`` (stored as a Python float), ``resolutions[l]`` the
    vertices per axis, ``sizes[l]`` the table entries ``T_l``, ``offsets`` the ``L + 1`` prefix sums
    of ``sizes`` (``offsets[-1]`` = total entries), ``hashed[l]`` whether level ``l`` is hashed.
    """

    n_levels: int
    n_features_per_level: int
    log2_hashmap_size: int
    base_resolution: int
    per_level_scale: float
    scales: tuple
    resolutions: tuple
    sizes: tuple
    offsets: tuple
    hashed: tuple

    @property
    def n_entries(self) -> int:
        return self.offsets[-1]

    @property
    def n_params(self) -> int:
        return self.offsets[-1] * self.n_features_per_level

    @property
    def n_dense(self) -> int:
        """Dense levels come first (res_l grows with l), hashed ones after."""
        return sum(1 for h in self.hashed if not h)


def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise ValueError(f"hash grid: {name} must be a positive integer, got {value!r}")
    return int(value)


def resolve_per_level_scale(n_levels: int, base_resolution: int, per_level_scale=None,
                            finest_resolution=None) -> float:
    """Exactly one of ``per_level_scale`` / ``finest_resolution``; the latter gives
    ``exp(ln(finest / base) / (L - 1))`` (1.0 for a single level)."""
    if (per_level_scale is None) == (finest_resolution is None):
        raise ValueError("hash grid: give exactly one of per_level_scale and finest_resolution")
    if per_level_scale is not None:
        if not per_level_scale > 0:
            raise ValueError(f"hash grid: per_level_scale must be > 0, got {per_level_scale!r}")
        return float(per_level_scale)
    if not finest_resolution > 0:
        raise ValueError(f"hash grid: finest_resolution must be > 0, got {finest_resolution!r}")
    if n_levels == 1:
        return 1.0
    return math.exp(math.log(finest_resolution / base_resolution) / (n_levels - 1))


def grid_layout(n_levels: int, n_features_per_level: int, log2_hashmap_size: int, base_resolution: int,
                per_level_scale: float) -> GridLayout:
    """Level scales, resolutions, table sizes and offsets, computed like tiny-cuda-nn (float32 maths)."""
    L = _check_positive_int("n_levels", n_levels)
    F = _check_positive_int("n_features_per_level", n_features_per_level)
    log2_T = _check_positive_int("log2_hashmap_size", log2_hashmap_size)
    base = _check_positive_int("base_resolution", base_resolution)
    if log2_T > 31:  # tcnn computes 1u << log2_hashmap_size
        raise ValueError(f"hash grid: log2_hashmap_size must be <= 31, got {log2_T}")
    if not per_level_scale > 0:
        raise ValueError(f"hash grid: per_level_scale must be > 0, got {per_level_scale!r}")
    f32 = np.float32
    log2_b = np.log2(f32(per_level_scale))  # float32, as std::log2(float)
    max_dense = np.iinfo(np.uint32).max // 2
    scales, resolutions, sizes, hashed = [], [], [], []
    with np.errstate(over="ignore"):
        for level in range(L):
            scale = np.exp2(f32(level) * log2_b) * f32(base) - f32(1.0)  # float32 throughout
            res = int(np.ceil(scale)) + 1
            dense_entries = res ** 3 if float(res) ** 3 <= max_dense else max_dense
            size = min(-(-dense_entries // 8) * 8, 1 << log2_T)
            scales.append(float(scale))
            resolutions.append(res)
            sizes.append(size)
            hashed.append(res ** 3 > size)
    offsets = [0]
    for s in sizes:
        offsets.append(offsets[-1] + s)
    return GridLayout(L, F, log2_T, base, float(f32(per_level_scale)), tuple(scales), tuple(resolutions),
                      tuple(sizes), tuple(offsets), tuple(hashed))


def hashgrid_param_count(n_levels: int, n_features_per_level: int, log2_hashmap_size: int,
                         base_resolution: int, per_level_scale: float) -> int:
    """Number of table values (``F * sum_l T_l``) of a tiny-cuda-nn HashGrid with these settings."""
    return grid_layout(n_levels, n_features_per_level, log2_hashmap_size, base_resolution,
                       per_level_scale).n_params


# ----------------------------------------------------------------------------------------------
# corner indices and weights
# ----------------------------------------------------------------------------------------------
class _Plan:
    """Per-(layout, device, dtype) constant tensors used by the lookup (built once, cached)."""

    def __init__(self, layout: GridLayout, device: torch.device, dtype: torch.dtype):
        L, Ld = layout.n_levels, layout.n_dense
        mask = (1 << layout.log2_hashmap_size) - 1
        res_max = max(layout.resolutions)
        # int32 suffices when no intermediate reaches 2^31: hashed terms (<= res * (prime mod T)),
        # dense global indices before the wrap (< offset + res + res^2 + res^3 < n_entries + 2 T).
        # Reducing the primes modulo T first is exact: T is a power of two and only idx mod T is used.
        fits32 = layout.n_entries + 2 * (mask + 1) < 2 ** 31 and (res_max + 1) * (mask + 1) < 2 ** 31
        self.itype = torch.int32 if fits32 else torch.int64
        strides = [[1, r, r * r] if not h else [p & mask for p in HASH_PRIMES]
                   for r, h in zip(layout.resolutions, layout.hashed)]
        self.layout = layout
        self.dtype = dtype
        self.n_dense = Ld
        self.mask = mask
        it = dict(dtype=self.itype, device=device)
        wide = torch.float32 if device.type == "mps" else torch.float64   # MPS has no float64
        self.scales = torch.tensor(layout.scales, dtype=wide, device=device).view(L, 1, 1)
        self.half = torch.tensor(0.5, dtype=wide, device=device)
        self.strides = torch.tensor(strides, **it).view(L, 3, 1)
        sizes = torch.tensor(layout.sizes[:Ld], **it).view(Ld, 1, 1, 1, 1)
        offsets = torch.tensor(layout.offsets[:L], **it).view(L, 1, 1, 1, 1)
        self.dense_sizes = sizes
        self.dense_offsets, self.hashed_offsets = offsets[:Ld], offsets[Ld:]
        self.dense_limits = sizes + offsets[:Ld]        # wrap test after the offset was added
        self.jac_scales = self.scales.to(dtype).view(L, 1, 1, 1)  # d p / d x
        # per-level constants for the fused CPU kernel (models/hashgrid_cpu.py)
        self.kernel_args = None
        if device.type == "cpu" and dtype == torch.float32 and self.itype == torch.int32:
            self.kernel_args = (self.scales.view(L), self.jac_scales.view(L), self.strides.view(L, 3).long(),
                                offsets.view(L).long(), torch.tensor(layout.sizes, dtype=torch.int64),
                                torch.tensor(layout.hashed, dtype=torch.bool), mask)


@functools.lru_cache(maxsize=32)
def _plan(layout: GridLayout, device: torch.device, dtype: torch.dtype) -> _Plan:
    return _Plan(layout, device, dtype)


def _outer3(ax: torch.Tensor, ay: torch.Tensor, az: torch.Tensor, op, out: torch.Tensor) -> torch.Tensor:
    """out[l, cz, cy, cx, n] = az[l, cz, n] op (ay[l, cy, n] op ax[l, cx, n]); a*: (L, 2, n)."""
    return op(az[:, :, None, None], op(ay[:, None, :, None], ax[:, None, None, :]), out=out)


def _cell(x: torch.Tensor, plan: _Plan, idx_out: torch.Tensor | None = None):
    """Corner indices and fractional positions of n points, corner-major.

    x: (n, 3) in [0, 1] (already clamped), dtype = plan.dtype.
    Returns idx (L, 8, n) of plan.itype (global entry index: level offset included; corner
    c = cx + 2 cy + 4 cz) and frac (L, 3, n) = p - floor(p). ``idx_out`` receives idx if given.
    Corner-major layout keeps every elementwise op a long contiguous loop over points.
    """
    L, Ld = plan.layout.n_levels, plan.n_dense
    n = x.shape[0]
    # p = x * scale + 0.5 rounded once to float32 (tcnn uses fmaf): the float64 product of two
    # float32 numbers is exact
    p = torch.addcmul(plan.half, x.to(plan.half.dtype).t().unsqueeze(0), plan.scales).to(plan.dtype)  # (L, 3, n)
    g = torch.floor(p)
    frac = p - g
    g = g.to(plan.itype)
    t0 = g * plan.strides                        # per-axis term of the lower corner: dense g * (1, res, res^2),
    t1 = t0 + plan.strides                       # hashed g * prime; (L, 3, n) each
    idx = torch.empty(L, 2, 2, 2, n, dtype=plan.itype, device=x.device) if idx_out is None else \
        idx_out.view(L, 2, 2, 2, n)
    if Ld > 0:
        tx, ty, tz = (torch.stack([t0[:Ld, d], t1[:Ld, d]], 1) for d in range(3))   # (Ld, 2, n)
        tx += plan.dense_offsets.view(Ld, 1, 1)
        dense = _outer3(tx, ty, tz, torch.add, idx[:Ld])
        # g <= res - 1 inside [0, 1], so the local index < res + res^2 + res^3 < 2 T: one
        # subtraction is the modulo
        dense -= (dense >= plan.dense_limits) * plan.dense_sizes
    if Ld < L:
        tx, ty, tz = (torch.stack([t0[Ld:, d], t1[Ld:, d]], 1) & plan.mask for d in range(3))
        hashed = _outer3(tx, ty, tz, torch.bitwise_xor, idx[Ld:])
        hashed += plan.hashed_offsets
    return idx.view(L, 8, n), frac


def _weights(frac: torch.Tensor) -> torch.Tensor:
    """Trilinear corner weights (L, 8, n) from frac (L, 3, n); tcnn's product order x, y, z."""
    w1 = torch.stack([1 - frac, frac], 1)                                 # (L, 2, 3, n)
    L, n = frac.shape[0], frac.shape[2]
    out = torch.empty(L, 2, 2, 2, n, dtype=frac.dtype, device=frac.device)
    return _outer3(w1[:, :, 0], w1[:, :, 1], w1[:, :, 2], torch.mul, out).view(L, 8, n)


def _gather(table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows of the (E, F) table at idx (any shape) -> idx.shape + (F,)."""
    if table.shape[1] == 2 and table.dtype in (torch.float32, torch.float64):
        # a pair of features is one complex number: a 1-D gather of 8/16-byte items is faster
        flat = table.view(torch.complex64 if table.dtype == torch.float32 else torch.complex128).view(-1)
        return torch.view_as_real(flat.index_select(0, idx.reshape(-1))).view(idx.shape + (2,))
    return table.index_select(0, idx.reshape(-1)).view(idx.shape + (table.shape[1],))


def _interpolate(f: torch.Tensor, frac: torch.Tensor, plan: _Plan, want_jac: bool):
    """Trilinear interpolation as three nested lerps (= sum_c w_c f_c up to rounding) and optionally
    its derivative.

    f: (L, 8, n, F) corner features (corner-major), frac: (L, 3, n).
    Returns out (L, n, F) and jac (L, 3, n, F) = d out / d x (None unless want_jac).
    """
    L, n, F = f.shape[0], f.shape[2], f.shape[3]
    f = f.view(L, 2, 2, 2, n, F)                                          # (L, cz, cy, cx, n, F)
    # weights expanded over F once, so that every op below runs one long loop over (n, F)
    wx, wy, wz = frac[:, :, :, None].expand(L, 3, n, F).contiguous().unbind(1)  # (L, n, F) each
    dx = f[:, :, :, 1] - f[:, :, :, 0]                                    # (L, 2, 2, n, F)
    a = torch.addcmul(f[:, :, :, 0], dx, wx[:, None, None])               # lerp along x
    dy = a[:, :, 1] - a[:, :, 0]                                          # (L, 2, n, F)
    b = torch.addcmul(a[:, :, 0], dy, wy[:, None])                        # lerp along y
    dz = b[:, 1] - b[:, 0]                                                # (L, n, F)
    out = torch.addcmul(b[:, 0], dz, wz)                                  # lerp along z
    if not want_jac:
        return out, None
    jac = torch.empty(L, 3, n, F, dtype=f.dtype, device=f.device)
    # d/dx_d = scale * (difference along d, interpolated along the other axes)
    dxy = torch.addcmul(dx[:, :, 0], dx[:, :, 1] - dx[:, :, 0], wy[:, None])   # (L, 2, n, F)
    torch.addcmul(dxy[:, 0], dxy[:, 1] - dxy[:, 0], wz, out=jac[:, 0])
    torch.addcmul(dy[:, 0], dy[:, 1] - dy[:, 0], wz, out=jac[:, 1])
    jac[:, 2] = dz
    jac *= plan.jac_scales
    return out, jac


def corner_indices_and_weights(x01: torch.Tensor, layout: GridLayout):
    """Inspection helper: global entry indices (N, L, 8) int64 and weights (N, L, 8) of every corner.

    Corner ``c = cx + 2 cy + 4 cz``; subtract ``layout.offsets[l]`` for the level-local index.
    Inputs are clamped to [0, 1]; float64 inputs are looked up in float64, others in float32.
    """
    dtype = torch.float64 if x01.dtype == torch.float64 else torch.float32
    x = x01.detach().to(dtype).clamp(0.0, 1.0)
    idx, frac = _cell(x, _plan(layout, x.device, dtype))
    return idx.permute(2, 0, 1).long(), _weights(frac).permute(2, 0, 1)


# ----------------------------------------------------------------------------------------------
# autograd function (pure PyTorch)
# ----------------------------------------------------------------------------------------------
#: The forward keeps corner indices and fractional positions for the backward (instead of
#: recomputing them) while they take at most this many bytes.
SAVE_CORNERS_MAX_BYTES = 1 << 30


def _default_chunk(layout: GridLayout, device: torch.device) -> int:
    if device.type != "cpu":   # GPUs want big launches; this only bounds the temporaries (~1 GB)
        return max(256, (1 << 25) // (8 * layout.n_levels))
    return max(256, _CHUNK_CORNERS // (8 * layout.n_levels))


#: Scatter the table gradient with this many CPU threads (None: torch.get_num_threads()).
SCATTER_THREADS: int | None = None
_pool: ThreadPoolExecutor | None = None
_pool_size = 0


def _reset_pool() -> None:  # a forked child does not inherit the worker threads
    global _pool, _pool_size
    _pool, _pool_size = None, 0


os.register_at_fork(after_in_child=_reset_pool)


def _worker_pool(n: int) -> ThreadPoolExecutor:
    """The module's one thread pool with at least ``n`` workers; a smaller one is shut down when replaced."""
    global _pool, _pool_size
    if _pool_size < n:
        old = _pool
        _pool, _pool_size = ThreadPoolExecutor(n, thread_name_prefix="hashgrid"), n
        if old is not None:
            old.shutdown(wait=True)   # idle: _run_parallel waits for all its jobs before returning
    return _pool


def _run_parallel(jobs) -> None:
    """Run callables on worker threads (the first on this one); they must touch disjoint memory."""
    if len(jobs) == 1:
        jobs[0]()
        return
    pool = _worker_pool(len(jobs) - 1)
    futures = [pool.submit(job) for job in jobs[1:]]
    jobs[0]()
    for f in futures:
        f.result()


def _scatter_table_grad(grad_table: torch.Tensor, idx: torch.Tensor, w: torch.Tensor, g: torch.Tensor,
                        cpu_path: bool | None = None):
    """grad_table (E, F) += w * g at idx for every corner.   idx, w: (L, 8, n); g: (L, n, F).

    cpu_path: use the CPU strategy below (default: when the table is on the CPU); GPUs get one
    2-D index_add_ (atomics)."""
    F = g.shape[-1]
    if not (grad_table.device.type == "cpu" if cpu_path is None else cpu_path):
        grad_table.index_add_(0, idx.reshape(-1), (w[..., None] * g[:, None]).reshape(-1, F))
        return
    # CPU index_add_ on a 2-D tensor runs one small kernel per row; on 1-D it is a tight serial
    # loop. Pairs of features travel as one complex number, so F = 2 is a single pass. Levels own
    # disjoint parts of the table, so groups of levels are scattered by parallel threads (the op
    # releases the GIL); interleaved groups balance cheap dense and expensive hashed levels.
    if F % 2 == 0:
        table_c = grad_table.view(torch.complex64 if grad_table.dtype == torch.float32 else torch.complex128)
        g_c = g.contiguous().view(table_c.dtype)                          # (L, n, F/2)
    else:
        table_c, g_c = grad_table, g
    threads = SCATTER_THREADS if SCATTER_THREADS is not None else torch.get_num_threads()
    k = max(1, min(threads, idx.shape[0]))
    jobs = []
    for j in range(table_c.shape[1]):
        for group in range(k):
            idx_j = idx[group::k].reshape(-1)
            src_j = (w[group::k] * g_c[group::k, None, :, j]).reshape(-1)
            jobs.append(functools.partial(table_c[:, j].index_add_, 0, idx_j, src_j))
    _run_parallel(jobs)


def _block(buf: torch.Tensor | None, i: int, shape: tuple) -> torch.Tensor | None:
    """View of the chunk starting at point i in a flat buffer of back-to-back chunk blocks.
    shape is the block's shape, with the chunk's point count n at position -1 or -2."""
    if buf is None:
        return None
    size, n = math.prod(shape), shape[-1] if len(shape) == 3 else shape[-2]
    start = i * (size // n)
    return buf[start:start + size].view(shape)


def _encode(x, params, layout: GridLayout, chunk: int, need_x: bool, need_p: bool):
    """Forward pass chunk by chunk. x (N, 3) clamped, params' dtype.

    Returns out (N, L*F) and what the backward needs: idx (L, 8, n) and frac (L, 3, n) blocks
    when need_p (None when they would take more than SAVE_CORNERS_MAX_BYTES: recomputed), and
    d out / d x as (N, 3, L*F) when need_x (point-major: the backward is one batched mat-vec).
    Uses the fused CPU kernel (models/hashgrid_cpu.py) when it is available.
    """
    N, L, F = x.shape[0], layout.n_levels, layout.n_features_per_level
    plan = _plan(layout, x.device, params.dtype)
    table = params.view(-1, F)
    idx_bytes = torch.empty((), dtype=plan.itype).element_size()
    save = need_p and N * L * (8 * idx_bytes + 3 * params.element_size()) <= SAVE_CORNERS_MAX_BYTES
    kernel = hashgrid_cpu.get() if plan.kernel_args is not None and F in (1, 2, 4, 8) else None
    if kernel is not None:
        out, jac_all, idx_all, frac_all = kernel.encode_forward(x, table, *plan.kernel_args, chunk, need_x, save)
        return out, (idx_all if save else None), (frac_all if save else None), (jac_all if need_x else None)
    out = torch.empty(N, L, F, dtype=params.dtype, device=x.device)
    idx_all = torch.empty(N * L * 8, dtype=plan.itype, device=x.device) if save else None
    frac_all = torch.empty(N * L * 3, dtype=params.dtype, device=x.device) if save else None
    jac_all = torch.empty(N, 3, L, F, dtype=params.dtype, device=x.device) if need_x else None
    for i in range(0, N, chunk):
        xc = x[i:i + chunk]
        n = xc.shape[0]
        idx, frac = _cell(xc, plan, _block(idx_all, i, (L, 8, n)))
        feats, jac = _interpolate(_gather(table, idx), frac, plan, need_x)
        out[i:i + n] = feats.transpose(0, 1)
        if need_x:
            jac_all[i:i + n] = jac.permute(2, 1, 0, 3)
        if save:
            _block(frac_all, i, (L, 3, n)).copy_(frac)
    return out.view(N, L * F), idx_all, frac_all, (jac_all.view(N, 3, L * F) if need_x else None)


class _HashGridFunction(torch.autograd.Function):
    """y = encode(x, params), chunk by chunk; hand-written backward for params and x.

    When x needs a gradient the forward also computes d out / d x per level (it reuses the
    gathered corner features), so the backward to x is a small contraction.
    """

    @staticmethod
    def forward(ctx, x, params, layout, chunk, need_x, need_p):
        out, idx_all, frac_all, jac_all = _encode(x, params, layout, chunk, need_x, need_p)
        ctx.save_for_backward(x, idx_all, frac_all, jac_all)
        ctx.layout, ctx.chunk, ctx.table_dtype = layout, chunk, params.dtype
        ctx.need_x, ctx.need_p = need_x, need_p
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, idx_all, frac_all, jac_all = ctx.saved_tensors
        layout, chunk, dtype, need_x, need_p = ctx.layout, ctx.chunk, ctx.table_dtype, ctx.need_x, ctx.need_p
        N, L, F = x.shape[0], layout.n_levels, layout.n_features_per_level
        plan = _plan(layout, x.device, dtype)
        grad_out = grad_out.to(dtype).reshape(N, L, F)
        grad_table = torch.zeros(layout.n_entries, F, dtype=dtype, device=x.device) if need_p else None
        grad_x = torch.bmm(jac_all, grad_out.reshape(N, L * F, 1)).view(N, 3) if need_x else None
        if need_p:
            for i in range(0, N, chunk):
                n = min(chunk, N - i)
                g = grad_out[i:i + n].transpose(0, 1)                        # (L, n, F)
                if idx_all is not None:
                    idx, frac = _block(idx_all, i, (L, 8, n)), _block(frac_all, i, (L, 3, n))
                else:
                    idx, frac = _cell(x[i:i + n], plan)
                _scatter_table_grad(grad_table, idx, _weights(frac), g)
        return grad_x, (grad_table.view(-1) if need_p else None), None, None, None, None


def hashgrid_encode(x01: torch.Tensor, params: torch.Tensor, layout: GridLayout, chunk: int | None = None):
    """Pure-PyTorch encoding: x01 (N, 3) in [0, 1]^3 -> (N, L * F) in params' dtype (level-major).

    ``params`` is the flat (n_entries * F,) table; ``chunk`` = points per chunk (None: automatic).
    Differentiable w.r.t. ``params`` and ``x01`` (first order only).
    """
    if x01.dim() != 2 or x01.shape[-1] != 3:
        raise ValueError(f"hash grid: expected points of shape (N, 3), got {tuple(x01.shape)}")
    if params.numel() != layout.n_params:
        raise ValueError(f"hash grid: table has {params.numel()} values, layout needs {layout.n_params}")
    if params.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"hash grid: table must be float32 or float64, got {params.dtype}")
    # clamp (documented): tcnn would wrap outside the unit cube; clamp's gradient masks those points
    x = x01.to(params.dtype).clamp(0.0, 1.0).contiguous()
    chunk = int(chunk) if chunk else _default_chunk(layout, x.device)
    need_x = torch.is_grad_enabled() and x.requires_grad
    need_p = torch.is_grad_enabled() and params.requires_grad
    if not (need_x or need_p):
        return _encode(x, params.detach(), layout, chunk, False, False)[0]
    return _HashGridFunction.apply(x, params, layout, chunk, need_x, need_p)


# ----------------------------------------------------------------------------------------------
# the module (+ optional tiny-cuda-nn backend)
# ----------------------------------------------------------------------------------------------
_logged_backends: set = set()


def _log_once(msg: str) -> None:
    if msg not in _logged_backends:
        _logged_backends.add(msg)
        _logger.info(msg)


def _import_tcnn():
    """The tinycudann module, or None (with the reason logged once) when it cannot be imported."""
    try:
        return importlib.import_module("tinycudann")
    except Exception as e:  # ImportError, or OSError/RuntimeError from its CUDA libraries
        _log_once(f"tinycudann not available ({type(e).__name__}: {e}); hash grid uses pure PyTorch")
        return None


class HashGridEncoding(nn.Module):
    """Multiresolution hash encoding with tiny-cuda-nn's parameter layout.

    Args:
        n_levels, n_features_per_level, log2_hashmap_size, base_resolution: as tcnn's HashGrid.
        per_level_scale / finest_resolution: exactly one; ``b = exp(ln(finest / base) / (L - 1))``.
        init_scale: table initialised uniform in ``(-init_scale, init_scale)`` (tcnn: 1e-4).
        use_tcnn: "auto" (tcnn for CUDA inputs when ``tinycudann`` imports), "never", "always".

    Attributes:
        n_input_dims (3), n_output_dims (L * F), params (flat Parameter, entry-major),
        level_resolutions, level_sizes (T_l), level_offsets (L + 1 prefix sums), layout (GridLayout).

    forward(x01 (N, 3) in [0, 1]^3) -> (N, L * F) level-major, float32 (float64 after ``.double()``);
    outside points are clamped.
    """

    def __init__(self, n_levels: int = HASHGRID["hash_level"], n_features_per_level: int = HASHGRID["hash_features"],
                 log2_hashmap_size: int = HASHGRID["log2_hashmap_size"],
                 base_resolution: int = HASHGRID["base_resolution"], per_level_scale: float | None = None,
                 finest_resolution: float | None = None, init_scale: float = 1e-4, use_tcnn: str = "auto"):
        super().__init__()
        if use_tcnn not in _USE_TCNN_CHOICES:
            raise ValueError(f"hash grid: use_tcnn must be one of {_USE_TCNN_CHOICES}, got {use_tcnn!r}")
        b = resolve_per_level_scale(n_levels, base_resolution, per_level_scale, finest_resolution)
        self.per_level_scale = b
        self.layout = grid_layout(n_levels, n_features_per_level, log2_hashmap_size, base_resolution, b)
        self.n_input_dims = 3
        self.n_output_dims = self.layout.n_levels * self.layout.n_features_per_level
        self.level_resolutions = list(self.layout.resolutions)
        self.level_sizes = list(self.layout.sizes)
        self.level_offsets = list(self.layout.offsets)
        self.chunk_size: int | None = None  # points per chunk of the pure path; None = automatic
        self.params = nn.Parameter(torch.empty(self.layout.n_params).uniform_(-init_scale, init_scale))
        self.use_tcnn = use_tcnn
        self._has_tcnn = use_tcnn != "never" and _import_tcnn() is not None
        if use_tcnn == "always" and not self._has_tcnn:
            raise RuntimeError("hash grid: use_tcnn='always' but tinycudann cannot be imported")
        self._tcnn_encoding = None  # built lazily; deliberately not a registered submodule

    def __getstate__(self):
        # copies and pickles carry the table, not tcnn's native object (rebuilt on first use)
        return {**self.__dict__, "_tcnn_encoding": None}

    def tcnn_config(self) -> dict:
        """The tinycudann encoding config equivalent to this grid."""
        lay = self.layout
        return {"otype": "HashGrid", "n_levels": lay.n_levels, "n_features_per_level": lay.n_features_per_level,
                "log2_hashmap_size": lay.log2_hashmap_size, "base_resolution": lay.base_resolution,
                "per_level_scale": self.per_level_scale}

    def backend_for(self, x01: torch.Tensor) -> str:
        """"tcnn" or "torch": the backend that forward uses for this input."""
        if self._has_tcnn and (self.use_tcnn == "always" or x01.is_cuda):
            return "tcnn"
        return "torch"

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        if self.backend_for(x01) == "tcnn":
            _log_once("hash grid backend: tiny-cuda-nn")
            return self._forward_tcnn(x01)
        _log_once("hash grid backend: pure PyTorch")
        return hashgrid_encode(x01, self.params, self.layout, self.chunk_size)

    def _forward_tcnn(self, x01: torch.Tensor) -> torch.Tensor:
        if x01.dim() != 2 or x01.shape[-1] != 3:
            raise ValueError(f"hash grid: expected points of shape (N, 3), got {tuple(x01.shape)}")
        enc = self._tcnn_encoding
        if enc is None:
            tcnn = importlib.import_module("tinycudann")
            try:
                enc = tcnn.Encoding(3, self.tcnn_config(), dtype=torch.float32)
            except TypeError:  # older tinycudann: no dtype argument (fp16 output)
                enc = tcnn.Encoding(3, self.tcnn_config())
            if enc.params.numel() != self.params.numel():
                raise RuntimeError(f"hash grid: tinycudann expects {enc.params.numel()} parameters, "
                                   f"the pure-PyTorch layout has {self.params.numel()}")
            object.__setattr__(self, "_tcnn_encoding", enc)  # not a submodule: state_dict keeps only `params`
        if enc.params is not self.params:  # share the one Parameter (also after .to() or loading)
            enc.params = self.params
        return enc(x01.clamp(0.0, 1.0)).float()

    def extra_repr(self) -> str:
        lay = self.layout
        return (f"n_levels={lay.n_levels}, n_features_per_level={lay.n_features_per_level}, "
                f"log2_hashmap_size={lay.log2_hashmap_size}, base_resolution={lay.base_resolution}, "
                f"per_level_scale={self.per_level_scale:.6g}, n_params={lay.n_params}, use_tcnn={self.use_tcnn!r}")
