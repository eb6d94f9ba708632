"""Input encodings for the NeFeS fields: frequency positional encoding and spherical harmonics.

* :class:`FrequencyEncoding` is the encoding of the released NeFeS field (NeRF's PE): the input
  itself, then ``sin(2^k x)`` and ``cos(2^k x)`` for ``k = 0 .. L-1``, frequency by frequency
  (sin block then cos block per frequency), **no pi factor** and no input normalisation.
  ``L=10`` on positions gives 63 dims, ``L=4`` on view directions 27 dims.
* :class:`SphericalHarmonics` gives the real SH basis up to degree 4 (16 values) of a **unit**
  direction; the hash-grid field uses it for view directions (cheaper than the 27-d PE).
* :func:`get_encoder` is the one factory: ``get_encoder(name, **cfg) -> (module, out_dim)`` so no
  caller hard-codes an input width. The hash grid itself lives in ``models/hashgrid.py``.
"""
from __future__ import annotations

import torch
from torch import nn


class FrequencyEncoding(nn.Module):
    """NeRF positional encoding ``[x, sin(2^0 x), cos(2^0 x), ..., sin(2^(L-1) x), cos(2^(L-1) x)]``.

    Args:
        n_freqs: number of octaves L (``multires``); 0 gives the identity.
        in_dims: input width (3 for points and directions).
    Shapes: ``(N, in_dims) -> (N, in_dims * (1 + 2 L))``.
    """

    def __init__(self, n_freqs: int, in_dims: int = 3):
        super().__init__()
        self.n_freqs = int(n_freqs)
        self.in_dims = int(in_dims)
        self.n_output_dims = self.in_dims * (1 + 2 * self.n_freqs)
        # 2^0 .. 2^(L-1), as the original's log-spaced bands (exact powers of two in fp32)
        self.register_buffer("freqs", 2.0 ** torch.arange(self.n_freqs, dtype=torch.float32), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.n_freqs == 0:
            return x
        xf = x[..., None, :] * self.freqs[:, None]                       # (N, L, D)
        sc = torch.stack([torch.sin(xf), torch.cos(xf)], dim=-2)          # (N, L, 2, D)
        return torch.cat([x, sc.flatten(-3)], dim=-1)                    # (N, D + 2LD)


class SphericalHarmonics(nn.Module):
    """Real spherical-harmonic basis of degree ``degree`` (1..4) of unit directions.

    Shapes: ``(N, 3)`` unit vectors ``-> (N, degree**2)``. The constants are the standard
    orthonormal real SH normalisations (``Y_l^m`` without the Condon-Shortley phase), ordered by
    degree then order m = -l..l, so that the integral of ``Y_i Y_j`` over the sphere is ``delta_ij``.
    """

    def __init__(self, degree: int = 4):
        super().__init__()
        if not 1 <= degree <= 4:
            raise ValueError(f"SphericalHarmonics: degree must be in 1..4, got {degree}")
        self.degree = int(degree)
        self.n_output_dims = self.degree ** 2

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        x, y, z = d.unbind(-1)
        out = [torch.full_like(x, 0.28209479177387814)]
        if self.degree > 1:
            c1 = 0.48860251190291987
            out += [c1 * y, c1 * z, c1 * x]
        if self.degree > 2:
            xx, yy, zz = x * x, y * y, z * z
            out += [1.0925484305920792 * x * y, 1.0925484305920792 * y * z,
                    0.31539156525252005 * (3 * zz - 1),
                    1.0925484305920792 * x * z, 0.5462742152960396 * (xx - yy)]
        if self.degree > 3:
            out += [0.5900435899266435 * y * (3 * xx - yy), 2.890611442640554 * x * y * z,
                    0.4570457994644658 * y * (5 * zz - 1), 0.3731763325901154 * z * (5 * zz - 3),
                    0.4570457994644658 * x * (5 * zz - 1), 1.445305721320277 * z * (xx - yy),
                    0.5900435899266435 * x * (xx - 3 * yy)]
        return torch.stack(out, dim=-1)


def get_encoder(name: str, **cfg) -> tuple[nn.Module, int]:
    """Build an encoding by name and return it with its output width.

    ``"frequency"`` (``n_freqs``, ``in_dims``), ``"sh"`` (``degree``), ``"hashgrid"`` (the keyword
    arguments of :class:`models.hashgrid.HashGridEncoding`).
    """
    if name == "frequency":
        enc = FrequencyEncoding(**cfg)
    elif name == "sh":
        enc = SphericalHarmonics(**cfg)
    elif name == "hashgrid":
        from models.hashgrid import HashGridEncoding  # lazy: models.hashgrid imports nothing from here
        enc = HashGridEncoding(**cfg)
    else:
        raise ValueError(f"unknown encoding '{name}' (expected frequency, sh or hashgrid)")
    return enc, int(enc.n_output_dims)
