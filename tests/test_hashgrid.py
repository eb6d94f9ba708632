"""Hash grid: layout, corner indices/weights and outputs against an independent brute-force reference,
gradients (gradcheck and autograd references), clamping, and the tiny-cuda-nn adapter (fake module)."""
import copy
import math
import os
import sys
import types
from fractions import Fraction

import numpy as np
import pytest
import torch
from torch import nn

import models.hashgrid as hg
from models.hashgrid import HashGridEncoding, grid_layout, hashgrid_encode, hashgrid_param_count

B_NERFH = math.exp(math.log(2048 / 16) / 15)

# (n_levels, F, log2_T, base_resolution, per_level_scale): dense, hashed and the res^3 == T boundary
SMALL_CONFIGS = [
    (6, 2, 12, 4, 2.0),      # res 4, 8, 16 (16^3 == 2^12: still dense), 32, 64, 128 (hashed)
    (5, 2, 10, 3, 1.5),      # non-integer scales
    (4, 1, 9, 5, 1.7),       # F = 1
    (3, 4, 8, 2, 2.5),       # F = 4
]


# ----------------------------------------------------------------------------------------------
# independent brute-force reference (python integers, numpy float32, exact fma via Fraction)
# ----------------------------------------------------------------------------------------------
def ref_layout(L, F, log2_T, base, b):
    f32 = np.float32
    log2_b = np.log2(f32(b))
    scales, res, sizes = [], [], []
    for level in range(L):
        s = f32(f32(np.exp2(f32(f32(level) * log2_b)) * f32(base)) - f32(1))
        r = int(math.ceil(float(s))) + 1
        scales.append(s)
        res.append(r)
        sizes.append(min((r ** 3 + 7) // 8 * 8, 2 ** log2_T))
    return scales, res, sizes


def fma_f32(a: np.float32, x: np.float32, c: float) -> np.float32:
    """float32(a * x + c) with a single rounding (round to nearest, ties to even), like fmaf."""
    exact = Fraction(float(a)) * Fraction(float(x)) + Fraction(c)
    guess = np.float32(float(exact))
    cands = [np.nextafter(guess, np.float32(-np.inf)), guess, np.nextafter(guess, np.float32(np.inf))]
    errs = [abs(Fraction(float(v)) - exact) for v in cands]
    best = min(errs)
    ties = [v for v, e in zip(cands, errs) if e == best]
    return min(ties, key=lambda v: int(np.array(v).view(np.uint32)) & 1)  # even mantissa on a tie


def ref_corners(xyz, scale, res, T):
    """[(local index, float32 weight)] for corners c = cx + 2cy + 4cz of one point at one level."""
    p = [fma_f32(scale, np.float32(v), 0.5) for v in xyz]
    g = [int(math.floor(float(v))) for v in p]
    frac = [np.float32(v - np.float32(gi)) for v, gi in zip(p, g)]
    out = []
    for c in range(8):
        bits = [(c >> d) & 1 for d in range(3)]
        pos = [g[d] + bits[d] for d in range(3)]
        if res ** 3 <= T:   # dense
            idx = (pos[0] + pos[1] * res + pos[2] * res * res) & 0xFFFFFFFF
        else:               # spatial hash in uint32
            idx = (pos[0] * 1) & 0xFFFFFFFF
            idx ^= (pos[1] * 2654435761) & 0xFFFFFFFF
            idx ^= (pos[2] * 805459861) & 0xFFFFFFFF
        w = np.float32(1.0)
        for d in range(3):
            w = np.float32(w * (frac[d] if bits[d] else np.float32(1) - frac[d]))
        out.append((idx % T, w))
    return out


def ref_encode(x: np.ndarray, table: np.ndarray, cfg) -> np.ndarray:
    """(N, 3) float32, (E, F) -> (N, L*F) float64 by brute force."""
    L, F, log2_T, base, b = cfg
    scales, res, sizes = ref_layout(*cfg)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    out = np.zeros((len(x), L, F))
    for n, xyz in enumerate(x):
        for level in range(L):
            for idx, w in ref_corners(xyz, scales[level], res[level], sizes[level]):
                out[n, level] += float(w) * table[offsets[level] + idx].astype(np.float64)
    return out.reshape(len(x), L * F)


def border_points(scales, gen):
    """Points with coordinates 0, 1, 0.5 and on/near cell borders of several levels."""
    pts = [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.5], [1.0, 0.0, 1.0]]
    for s in scales:
        k = torch.randint(1, max(2, int(s)), (3,), generator=gen).double()
        border = ((k - 0.5) / float(s)).clamp(0, 1)     # x * scale + 0.5 == k (up to float32 rounding)
        pts.append(border.tolist())
        pts.append([border[0].item(), 1.0, 0.0])
    return torch.tensor(pts, dtype=torch.float32)


# ----------------------------------------------------------------------------------------------
# layout
# ----------------------------------------------------------------------------------------------
def test_nerfh_tcnn_layout_matches_spec():
    assert hashgrid_param_count(16, 2, 19, 16, B_NERFH) == 12_196_240
    enc = HashGridEncoding(16, 2, 19, 16, finest_resolution=2048, use_tcnn="never")
    assert enc.level_resolutions == [16, 23, 31, 43, 59, 81, 112, 154, 213, 295, 407, 562, 777, 1073, 1483, 2048]
    assert enc.level_sizes == [4096, 12168, 29792, 79512, 205384] + [524288] * 11
    assert enc.level_offsets == [0] + list(np.cumsum(enc.level_sizes))
    assert enc.level_offsets[-1] == 6_098_120
    assert enc.params.numel() == 12_196_240 and enc.params.dtype == torch.float32
    assert enc.n_output_dims == 32
    assert enc.layout.hashed == (False,) * 5 + (True,) * 11
    assert abs(enc.per_level_scale - 1.38191) < 1e-5
    # per_level_scale given directly: same grid
    enc2 = HashGridEncoding(16, 2, 19, 16, per_level_scale=B_NERFH, use_tcnn="never")
    assert enc2.layout == enc.layout
    # initialisation like tcnn: uniform(-1e-4, 1e-4)
    assert enc.params.abs().max() <= 1e-4 and enc.params.std() > 3e-5


@pytest.mark.parametrize("cfg", SMALL_CONFIGS)
def test_layout_matches_reference(cfg):
    scales, res, sizes = ref_layout(*cfg)
    lay = grid_layout(*cfg)
    assert list(lay.resolutions) == res
    assert list(lay.sizes) == sizes
    assert [np.float32(s) for s in lay.scales] == scales
    assert list(lay.offsets) == [0] + list(np.cumsum(sizes))
    assert lay.n_params == sum(sizes) * cfg[1] == hashgrid_param_count(*cfg)
    assert list(lay.hashed) == [r ** 3 > t for r, t in zip(res, sizes)]


def test_constructor_errors():
    with pytest.raises(ValueError, match="exactly one"):
        HashGridEncoding(4, 2, 10, 4, per_level_scale=2.0, finest_resolution=32)
    with pytest.raises(ValueError, match="exactly one"):
        HashGridEncoding(4, 2, 10, 4)
    with pytest.raises(ValueError, match="use_tcnn"):
        HashGridEncoding(4, 2, 10, 4, per_level_scale=2.0, use_tcnn="maybe")
    with pytest.raises(ValueError, match="log2_hashmap_size"):
        HashGridEncoding(4, 2, 0, 4, per_level_scale=2.0)
    enc = HashGridEncoding(4, 2, 10, 4, per_level_scale=2.0, use_tcnn="never")
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        enc(torch.rand(5, 2))


# ----------------------------------------------------------------------------------------------
# corner indices / weights / outputs against brute force
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cfg", SMALL_CONFIGS[:2] + [(16, 2, 19, 16, B_NERFH)])
def test_corner_indices_and_weights_brute_force(cfg):
    gen = torch.Generator().manual_seed(1)
    lay = grid_layout(*cfg)
    scales, res, sizes = ref_layout(*cfg)
    x = torch.cat([border_points(scales, gen), torch.rand(12, 3, generator=gen)])
    idx, w = hg.corner_indices_and_weights(x, lay)
    assert idx.shape == (len(x), cfg[0], 8) and idx.dtype == torch.int64
    on_border = 0
    for n in range(len(x)):
        for level in range(cfg[0]):
            ref = ref_corners(x[n].numpy(), scales[level], res[level], sizes[level])
            got_idx = (idx[n, level] - lay.offsets[level]).tolist()
            assert got_idx == [r[0] for r in ref], (n, level)
            np.testing.assert_allclose(w[n, level].numpy(), [r[1] for r in ref], rtol=0, atol=1e-7)
            on_border += any(r[1] == 0 for r in ref)   # some coordinate exactly on a cell border
    assert on_border >= 5
    # weights are a partition of unity; every index inside its level's table
    torch.testing.assert_close(w.sum(-1), torch.ones(len(x), cfg[0]))
    lo = torch.tensor(lay.offsets[:-1])[None, :, None]
    hi = torch.tensor(lay.offsets[1:])[None, :, None]
    assert ((idx >= lo) & (idx < hi)).all()


def test_single_rounding_like_fmaf():
    """Points where float32(float32(s * x) + 0.5) and fmaf(s, x, 0.5) fall in different cells."""
    cfg = (16, 2, 19, 16, B_NERFH)
    scales, res, sizes = ref_layout(*cfg)
    found = []
    for level, s in enumerate(scales):
        k = np.arange(1, int(s) + 1)
        x = np.float32((k - 0.5) / np.float64(s)).astype(np.float32)
        for _ in range(4):                      # a few float32 steps below each border
            x = np.nextafter(x, np.float32(0)).astype(np.float32)
        for _ in range(8):
            two_roundings = (s * x + np.float32(0.5)).astype(np.float32)
            for v in x[np.floor(np.float64(s) * x + 0.5) != np.floor(two_roundings)]:
                if math.floor(float(fma_f32(s, v, 0.5))) != math.floor(float(np.float32(s * v) + np.float32(0.5))):
                    found.append((level, v))
            x = np.nextafter(x, np.float32(1)).astype(np.float32)
    assert len(found) >= 3   # they exist for this grid (found by brute force)
    lay = grid_layout(*cfg)
    x = torch.tensor([[v, v, v] for _, v in found], dtype=torch.float32)
    idx, _ = hg.corner_indices_and_weights(x, lay)
    for n, (level, _) in enumerate(found):
        ref = ref_corners(x[n].numpy(), scales[level], res[level], sizes[level])
        assert (idx[n, level] - lay.offsets[level]).tolist() == [r[0] for r in ref]


@pytest.mark.parametrize("cfg", SMALL_CONFIGS)
@pytest.mark.parametrize("chunk", [None, 7])
def test_output_brute_force(cfg, chunk):
    gen = torch.Generator().manual_seed(2)
    lay = grid_layout(*cfg)
    table = torch.randn(lay.n_params, generator=gen)
    x = torch.cat([border_points(ref_layout(*cfg)[0], gen), torch.rand(20, 3, generator=gen)])
    out = hashgrid_encode(x, table, lay, chunk=chunk)
    assert out.shape == (len(x), cfg[0] * cfg[1]) and out.dtype == torch.float32
    ref = ref_encode(x.numpy(), table.view(-1, cfg[1]).numpy(), cfg)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5, atol=1e-5)


def test_module_forward_and_clamping():
    enc = HashGridEncoding(6, 2, 12, 4, per_level_scale=2.0, init_scale=1.0, use_tcnn="never")
    x = torch.tensor([[-0.3, 0.5, 1.7], [0.2, 0.4, 0.6]])
    y = enc(x)
    torch.testing.assert_close(y, enc(x.clamp(0, 1)))
    ref = ref_encode(x.clamp(0, 1).numpy(), enc.params.detach().view(-1, 2).numpy(), (6, 2, 12, 4, 2.0))
    np.testing.assert_allclose(y.detach().numpy(), ref, rtol=1e-5, atol=1e-6)
    assert enc(torch.zeros(0, 3)).shape == (0, 12)
    # float64 table: float64 output (used by gradcheck)
    assert enc.double()(x.double()).dtype == torch.float64


# ----------------------------------------------------------------------------------------------
# gradients
# ----------------------------------------------------------------------------------------------
def interior_points(lay, n, gen, margin=0.05):
    """Points whose fractional cell position is at least `margin` from a border at every level."""
    keep = []
    while len(keep) < n:
        x = torch.rand(64, 3, generator=gen, dtype=torch.float64)
        p = x[:, None, :] * torch.tensor(lay.scales, dtype=torch.float64)[None, :, None] + 0.5
        frac = p - p.floor()
        ok = ((frac > margin) & (frac < 1 - margin)).flatten(1).all(1)
        keep.extend(x[ok])
    return torch.stack(keep[:n])


@pytest.mark.parametrize("cfg", [(3, 2, 6, 2, 2.0), (3, 1, 5, 3, 1.5), (2, 4, 5, 2, 2.0)])
def test_gradcheck_table_and_points(cfg):
    gen = torch.Generator().manual_seed(3)
    lay = grid_layout(*cfg)
    table = torch.randn(lay.n_params, generator=gen, dtype=torch.float64).requires_grad_()
    x = interior_points(lay, 6, gen).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, t: hashgrid_encode(a, t, lay, chunk=4), (x, table))
    # table only / points only
    assert torch.autograd.gradcheck(lambda t: hashgrid_encode(x.detach(), t, lay), (table,))
    assert torch.autograd.gradcheck(lambda a: hashgrid_encode(a, table.detach(), lay), (x,))


def autograd_reference(x, table, lay):
    """Differentiable torch reference built from the (already verified) corner indices/weights
    and an independent derivative: the weights recomputed from x with torch ops."""
    L, F = lay.n_levels, lay.n_features_per_level
    idx, _ = hg.corner_indices_and_weights(x, lay)
    scales = torch.tensor(lay.scales, dtype=x.dtype)
    p = x.clamp(0, 1)[:, None, :] * scales[None, :, None] + 0.5
    frac = p - p.detach().floor()                                        # (N, L, 3)
    bits = torch.tensor([[(c >> d) & 1 for d in range(3)] for c in range(8)], dtype=torch.bool)
    w = torch.where(bits, frac[:, :, None, :], 1 - frac[:, :, None, :]).prod(-1)   # (N, L, 8)
    feats = table.view(-1, F)[idx]                                       # (N, L, 8, F)
    return (feats * w[..., None]).sum(2).reshape(len(x), L * F)


@pytest.mark.parametrize("cfg", SMALL_CONFIGS)
@pytest.mark.parametrize("save,threads", [(True, 3), (False, 1)])
def test_gradients_match_autograd_reference(cfg, save, threads, monkeypatch):
    if not save:
        monkeypatch.setattr(hg, "SAVE_CORNERS_MAX_BYTES", 0)   # backward recomputes the corners
    monkeypatch.setattr(hg, "SCATTER_THREADS", threads)          # level groups scattered in parallel
    gen = torch.Generator().manual_seed(4)
    lay = grid_layout(*cfg)
    table = torch.randn(lay.n_params, generator=gen).requires_grad_()
    x = torch.cat([torch.rand(40, 3, generator=gen), torch.tensor([[-0.2, 0.5, 1.3]])]).requires_grad_()
    g = torch.randn(len(x), cfg[0] * cfg[1], generator=gen)
    gx, gt = torch.autograd.grad(hashgrid_encode(x, table, lay, chunk=16), (x, table), g)
    rx, rt = torch.autograd.grad(autograd_reference(x, table, lay), (x, table), g)
    torch.testing.assert_close(gt, rt, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx, rx, rtol=1e-4, atol=1e-4)
    # clamped coordinates get no gradient
    assert gx[-1, 0] == 0 and gx[-1, 2] == 0 and gx[-1, 1] != 0


def test_training_step_reduces_loss():
    enc = HashGridEncoding(4, 2, 10, 4, per_level_scale=2.0, use_tcnn="never")
    teacher = HashGridEncoding(4, 2, 10, 4, per_level_scale=2.0, init_scale=1.0, use_tcnn="never")
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(256, 3, generator=gen)
    with torch.no_grad():
        target = teacher(x)
    opt = torch.optim.Adam(enc.parameters(), lr=5e-2, fused=True)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = (enc(x) - target).square().mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]


def test_state_dict_has_only_the_flat_table():
    enc = HashGridEncoding(4, 2, 10, 4, per_level_scale=2.0, use_tcnn="never")
    sd = enc.state_dict()
    assert list(sd) == ["params"] and sd["params"].shape == (enc.layout.n_params,)
    enc2 = HashGridEncoding(4, 2, 10, 4, per_level_scale=2.0, use_tcnn="never")
    enc2.load_state_dict(sd)
    x = torch.rand(10, 3)
    torch.testing.assert_close(enc2(x), enc(x))


# ----------------------------------------------------------------------------------------------
# tiny-cuda-nn adapter, against a fake `tinycudann` that delegates to the reference path
# ----------------------------------------------------------------------------------------------
def make_fake_tcnn(with_dtype=True):
    class Encoding(nn.Module):
        instances = []

        def __init__(self, n_input_dims, encoding_config, seed=1337, **kw):
            if not with_dtype and kw:
                raise TypeError("unexpected keyword argument 'dtype'")
            super().__init__()
            c = encoding_config
            self.n_input_dims, self.config, self.dtype = n_input_dims, dict(c), kw.get("dtype")
            self.layout = grid_layout(c["n_levels"], c["n_features_per_level"], c["log2_hashmap_size"],
                                      c["base_resolution"], c["per_level_scale"])
            self.params = nn.Parameter(torch.zeros(self.layout.n_params))
            self.n_output_dims = c["n_levels"] * c["n_features_per_level"]
            self.calls = 0
            Encoding.instances.append(self)

        def forward(self, x):
            self.calls += 1
            out = hashgrid_encode(x, self.params, self.layout)
            return out if self.dtype == torch.float32 else out.half()   # tcnn's default is fp16

    return types.SimpleNamespace(Encoding=Encoding, __name__="tinycudann")


@pytest.mark.parametrize("with_dtype", [True, False])
def test_tcnn_adapter_with_fake_module(monkeypatch, with_dtype):
    fake = make_fake_tcnn(with_dtype)
    monkeypatch.setitem(sys.modules, "tinycudann", fake)
    cfg = dict(n_levels=4, n_features_per_level=2, log2_hashmap_size=10, base_resolution=4, per_level_scale=2.0)
    enc = HashGridEncoding(**cfg, init_scale=0.5, use_tcnn="always")
    ref = HashGridEncoding(**cfg, use_tcnn="never")
    ref.load_state_dict(enc.state_dict())
    x = torch.rand(30, 3)
    assert enc.backend_for(x) == "tcnn"
    y = enc(x)
    (inst,) = fake.Encoding.instances
    assert inst.n_input_dims == 3 and inst.calls == 1
    assert inst.config == {"otype": "HashGrid", "n_levels": 4, "n_features_per_level": 2,
                           "log2_hashmap_size": 10, "base_resolution": 4, "per_level_scale": 2.0}
    assert inst.dtype == (torch.float32 if with_dtype else None)
    assert inst.params is enc.params                     # one shared Parameter, same flat layout
    assert list(enc.state_dict()) == ["params"]          # the tcnn module is not a submodule
    assert y.dtype == torch.float32
    tol = dict(rtol=0, atol=0) if with_dtype else dict(rtol=2e-3, atol=2e-3)
    torch.testing.assert_close(y, ref(x), **tol)
    # gradients land in the shared parameter
    y.sum().backward()
    ref(x).sum().backward()
    torch.testing.assert_close(enc.params.grad, ref.params.grad)
    # after moving/reloading, the adapter follows the module's current Parameter
    enc.params = nn.Parameter(enc.params.detach().clone() * 2)
    enc(x)
    assert inst.params is enc.params
    # copies carry the table, not the tcnn object (rebuilt on first use)
    clone = copy.deepcopy(enc)
    assert clone._tcnn_encoding is None
    torch.testing.assert_close(clone(x), enc(x))
    assert len(fake.Encoding.instances) == 2 and fake.Encoding.instances[1].params is clone.params


def test_tcnn_selection(monkeypatch):
    fake = make_fake_tcnn()
    monkeypatch.setitem(sys.modules, "tinycudann", fake)
    cfg = dict(n_levels=2, n_features_per_level=2, log2_hashmap_size=8, base_resolution=4, per_level_scale=2.0)
    auto = HashGridEncoding(**cfg, use_tcnn="auto")
    x = torch.rand(5, 3)
    assert auto.backend_for(x) == "torch"              # CPU input: pure PyTorch even with tcnn present
    auto(x)
    assert fake.Encoding.instances == []
    never = HashGridEncoding(**cfg, use_tcnn="never")
    assert never.backend_for(x) == "torch"
    # tinycudann missing: "auto" falls back, "always" is an error naming the problem
    monkeypatch.setitem(sys.modules, "tinycudann", None)   # makes `import tinycudann` raise ImportError
    assert HashGridEncoding(**cfg, use_tcnn="auto").backend_for(x) == "torch"
    with pytest.raises(RuntimeError, match="tinycudann"):
        HashGridEncoding(**cfg, use_tcnn="always")


def test_no_grad_and_non_contiguous_grad_output():
    enc = HashGridEncoding(4, 2, 10, 4, per_level_scale=2.0, init_scale=1.0, use_tcnn="never")
    x = torch.rand(50, 3)
    with torch.no_grad():
        y0 = enc(x)
    assert not y0.requires_grad
    torch.testing.assert_close(y0, enc(x))
    G = torch.randn(enc.n_output_dims, 50)
    (g_t,) = torch.autograd.grad(enc(x).t(), enc.params, G)          # grad_out is a transposed view
    (g_c,) = torch.autograd.grad(enc(x), enc.params, G.t().contiguous())
    torch.testing.assert_close(g_t, g_c)


def test_benchmark_script_smoke(tmp_path):
    """bench.hashgrid runs end to end (no timing is checked here)."""
    from bench import hashgrid as bench
    out = tmp_path / "hashgrid.txt"
    bench.main(["--device", "cpu", "--sizes", "6", "--repeats", "1", "--out", str(out)])
    rows = [r for r in out.read_text().splitlines() if r.startswith("cpu")]
    assert len(rows) == len(bench.CONFIGS) and all("train" in r and "pos" in r for r in rows)
    x = bench.make_points(1000, "rays", torch.Generator().manual_seed(0))
    assert x.shape == (1000, 3) and x.min() >= 0 and x.max() <= 1


@pytest.mark.parametrize("F", [1, 2, 4])
def test_scatter_strategies_agree(F):
    """The CPU scatter (complex pairs, level-parallel threads) equals the plain one used on GPUs."""
    gen = torch.Generator().manual_seed(6)
    L, n, per_level = 5, 300, 23
    E = L * per_level
    # levels own disjoint parts of the table, as in a real grid (the threads rely on it)
    idx = (torch.randint(0, per_level, (L, 8, n), generator=gen)
           + per_level * torch.arange(L).view(L, 1, 1)).to(torch.int32)
    w, g = torch.rand(L, 8, n, generator=gen), torch.randn(L, n, F, generator=gen)
    plain, fast = torch.zeros(E, F), torch.zeros(E, F)
    hg._scatter_table_grad(plain, idx, w, g, cpu_path=False)
    hg._scatter_table_grad(fast, idx, w, g, cpu_path=True)
    ref = torch.zeros(E, F, dtype=torch.float64)
    ref.index_put_((idx.long()[..., None].expand(L, 8, n, F).reshape(-1), torch.arange(F).repeat(L * 8 * n)),
                   (w[..., None] * g[:, None]).double().reshape(-1), accumulate=True)
    torch.testing.assert_close(plain.double(), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast.double(), ref, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------- fused CPU kernel
def _kernel_or_reason():
    from models import hashgrid_cpu
    if hashgrid_cpu.get() is None:   # optional accelerator (like tiny-cuda-nn): say why it is missing
        pytest.skip(f"the optional fused CPU hash-grid kernel is unavailable here: {hashgrid_cpu.error()}")


@pytest.mark.parametrize("cfg", SMALL_CONFIGS + [(8, 2, 17, 16, 1.9)])
@pytest.mark.parametrize("chunk", [None, 7])
def test_cpu_kernel_matches_pure_path(cfg, chunk, monkeypatch):
    _kernel_or_reason()
    gen = torch.Generator().manual_seed(6)
    lay = grid_layout(*cfg)
    table = torch.randn(lay.n_params, generator=gen)
    x = torch.cat([torch.rand(300, 3, generator=gen), torch.tensor([[-0.2, 0.5, 1.3], [1.0, 1.0, 0.0]])])
    g = torch.randn(len(x), cfg[0] * cfg[1], generator=gen)
    runs = {}
    for use_kernel in (True, False):
        monkeypatch.setenv("NEFES_CPU_KERNEL", "1" if use_kernel else "0")
        c = chunk or hg._default_chunk(lay, x.device)
        # what the forward keeps for the backward: corner indices and fractions (training), d out / d x
        raw = hg._encode(x.clamp(0, 1), table, lay, c, True, True)
        xs, ts = x.clone().requires_grad_(), table.clone().requires_grad_()
        out = hashgrid_encode(xs, ts, lay, chunk=chunk)
        runs[use_kernel] = (raw, out.detach(), *torch.autograd.grad(out, (xs, ts), g))
    (k_raw, k_out, k_gx, k_gt), (p_raw, p_out, p_gx, p_gt) = runs[True], runs[False]
    assert torch.equal(k_raw[1], p_raw[1])                                   # corner indices: exact
    torch.testing.assert_close(k_raw[2], p_raw[2], rtol=0, atol=0)          # fractions: exact
    # d out / d x takes differences of differences, scaled by the level resolution: float rounding
    # (fused multiply-adds or not) shows at ~1e-6 of the largest value
    torch.testing.assert_close(k_raw[3], p_raw[3], rtol=1e-5, atol=1e-6 * p_raw[3].abs().max().item())
    torch.testing.assert_close(k_out, p_out, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(k_gx, p_gx, rtol=1e-5, atol=1e-6 * p_gx.abs().max().item())
    torch.testing.assert_close(k_gt, p_gt, rtol=1e-6, atol=1e-6)


def test_cpu_kernel_can_be_switched_off(monkeypatch):
    from models import hashgrid_cpu
    monkeypatch.setenv("NEFES_CPU_KERNEL", "0")
    assert hashgrid_cpu.get() is None


def test_growing_the_scatter_pool_shuts_the_old_one_down(monkeypatch):
    monkeypatch.setattr(hg, "_pool", None)
    monkeypatch.setattr(hg, "_pool_size", 0)
    done = []
    hg._run_parallel([lambda i=i: done.append(i) for i in range(3)])    # 2 worker threads
    small = hg._pool
    hg._run_parallel([lambda i=i: done.append(i) for i in range(5)])    # needs 4: replaced
    assert sorted(done) == [0, 0, 1, 1, 2, 2, 3, 4] and hg._pool is not small and hg._pool_size == 4
    with pytest.raises(RuntimeError):           # the old pool is shut down (its threads end), not leaked
        small.submit(lambda: None)
    hg._run_parallel([lambda: None] * 3)        # a smaller job reuses the big pool
    assert hg._pool_size == 4
    hg._pool.shutdown()


def test_kernel_build_restores_path(monkeypatch):
    from models import hashgrid_cpu
    monkeypatch.setenv("PATH", "/usr/bin")
    with hashgrid_cpu._venv_bin_on_path():
        assert os.environ["PATH"].split(os.pathsep)[0] == os.path.dirname(sys.executable)
    assert os.environ["PATH"] == "/usr/bin"


def test_cpu_kernel_source_is_staged_outside_a_path_with_a_space(tmp_path, monkeypatch):
    """Issue 14: torch's ninja build does not quote paths; a checkout under a folder with a space
    builds from a staged copy of the source instead of silently losing the kernel."""
    from models import hashgrid_cpu
    spaced = tmp_path / "My Projects" / "hashgrid_cpu.cpp"
    spaced.parent.mkdir()
    spaced.write_bytes(hashgrid_cpu.SOURCE.read_bytes())
    monkeypatch.setattr(hashgrid_cpu, "SOURCE", spaced)
    staged = hashgrid_cpu._source_for_build()
    assert not any(c.isspace() for c in str(staged)) and staged.read_bytes() == spaced.read_bytes()
    monkeypatch.setattr(hashgrid_cpu, "SOURCE", staged)
    assert hashgrid_cpu._source_for_build() == staged          # a path without spaces is used as it is
