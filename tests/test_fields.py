"""Fields, encodings, ACT and fusion CNN (spec §2.3, §2.5, §2.6, §7.1, §7.2)."""
import math

import numpy as np
import pytest
import torch

from models.appearance import AffineColorTransform
from models.encodings import FrequencyEncoding, SphericalHarmonics, get_encoder
from models.fields import NeFeSMLPField
from models.fusion import FusionNet
from models.nefes import PAPER_HPARAMS, build_from_hparams

# §7.1, typed from the spec (not from our modules)
TRUNK_SHAPES = {
    **{f"xyz_encoding_{i}.0.weight": (128, 128) for i in range(2, 9)},
    "xyz_encoding_1.0.weight": (128, 63), "xyz_encoding_5.0.weight": (128, 191),
    **{f"xyz_encoding_{i}.0.bias": (128,) for i in range(1, 9)},
    "xyz_encoding_final.weight": (128, 128), "xyz_encoding_final.bias": (128,),
    "dir_encoding.0.weight": (64, 155), "dir_encoding.0.bias": (64,),
    "static_sigma.0.weight": (1, 128), "static_sigma.0.bias": (1,),
    "static_rgb.0.weight": (131, 64), "static_rgb.0.bias": (131,),
}
TRANSIENT_SHAPES = {
    "transient_encoding.0.weight": (64, 155), "transient_encoding.0.bias": (64,),
    "transient_encoding.2.weight": (64, 64), "transient_encoding.2.bias": (64,),
    "transient_encoding.4.weight": (64, 64), "transient_encoding.4.bias": (64,),
    "transient_sigma.0.weight": (1, 64), "transient_sigma.0.bias": (1,),
    "transient_rgb.0.weight": (3, 64), "transient_rgb.0.bias": (3,),
    "transient_beta.0.weight": (1, 64), "transient_beta.0.bias": (1,),
}


# ---------------------------------------------------------------------------------------------- encodings
def test_frequency_encoding_layout():
    enc = FrequencyEncoding(10)
    x = torch.tensor([[0.3, -1.2, 2.5]])
    y = enc(x)[0]
    assert y.shape == (63,)
    assert torch.allclose(y[:3], x[0])
    for k in range(10):          # per octave: sin block then cos block, no pi factor
        f = 2.0 ** k
        assert torch.allclose(y[3 + 6 * k: 6 + 6 * k], torch.sin(f * x[0]), atol=1e-6)
        assert torch.allclose(y[6 + 6 * k: 9 + 6 * k], torch.cos(f * x[0]), atol=1e-6)
    assert get_encoder("frequency", n_freqs=4)[1] == 27


def test_get_encoder_factory():
    enc, n = get_encoder("hashgrid", n_levels=3, n_features_per_level=2, log2_hashmap_size=10,
                         base_resolution=4, finest_resolution=16)
    assert n == 6 and enc(torch.rand(5, 3)).shape == (5, 6)
    assert get_encoder("sh", degree=3)[1] == 9
    with pytest.raises(ValueError, match="unknown encoding"):
        get_encoder("fourier")


def test_spherical_harmonics_orthonormal():
    # Fibonacci-sphere quadrature: integral of Y_i Y_j over the sphere = delta_ij
    n = 20000
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1 - 2 * i / n
    phi = math.pi * (1 + 5 ** 0.5) * i
    r = torch.sqrt(1 - z * z)
    d = torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], -1)
    Y = SphericalHarmonics(4)(d)
    assert Y.shape == (n, 16)
    gram = 4 * math.pi * (Y.T @ Y) / n
    assert torch.allclose(gram, torch.eye(16, dtype=torch.float64), atol=2e-3)


# ---------------------------------------------------------------------------------------------- paper field
def test_paper_field_parameter_names_and_shapes():
    coarse, fine = NeFeSMLPField(transient=False), NeFeSMLPField(transient=True)
    assert {k: tuple(v.shape) for k, v in coarse.state_dict().items()} == TRUNK_SHAPES
    assert {k: tuple(v.shape) for k, v in fine.state_dict().items()} == {**TRUNK_SHAPES, **TRANSIENT_SHAPES}


def test_paper_field_outputs_and_activations():
    f = NeFeSMLPField(transient=True)
    x, d = torch.randn(50, 3), torch.nn.functional.normalize(torch.randn(50, 3), dim=-1)
    out = f(x, d)
    assert out["sigma"].shape == (50,) and out["rgb"].shape == (50, 3) and out["feat"].shape == (50, 128)
    assert (out["sigma"] >= 0).all() and (out["sigma_t"] >= 0).all() and (out["beta_t"] >= 0).all()
    assert (out["rgb_t"] > 0).all() and (out["rgb_t"] < 1).all()
    assert torch.allclose(f.density(x), out["sigma"])
    # static colour is linear (unbounded): some value outside [0, 1] for large weights
    with torch.no_grad():
        f.static_rgb[0].bias.fill_(3.0)
    assert (f(x, d)["rgb"] > 1).any()


def test_build_seeds_like_original_and_keeps_rng():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    m = build_from_hparams(PAPER_HPARAMS)
    assert torch.equal(torch.get_rng_state(), before)
    fsd, csd = m.fine.state_dict(), m.coarse.state_dict()
    for k in csd:      # both constructors start from seed 0: shared layers identical
        assert torch.equal(csd[k], fsd[k]), k
    m2 = build_from_hparams(PAPER_HPARAMS)
    assert torch.equal(m2.fusion.net[0].weight, m.fusion.net[0].weight)


# ---------------------------------------------------------------------------------------------- ACT
def _act_reference(params: np.ndarray, hist: np.ndarray) -> np.ndarray:
    """tcnn FullyFusedMLP 16->32->32->32->16, no biases, inputs padded with ones (spec §7.2)."""
    shapes = [(32, 16), (32, 32), (32, 32), (16, 32)]
    mats, off = [], 0
    for o, i in shapes:
        mats.append(params[off:off + o * i].reshape(o, i))
        off += o * i
    assert off == 3072
    x = np.concatenate([np.trunc(hist), np.ones((hist.shape[0], 6))], axis=1)
    for m in mats[:3]:
        x = np.maximum(x @ m.T, 0.0)
    return (x @ mats[3].T)[:, :12]


def test_act_matches_numpy_reference():
    act = AffineColorTransform()
    assert act.params.shape == (3072,) and list(act.state_dict()) == ["params"]
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        act.params.copy_(torch.randn(3072, generator=g) * 0.2)
    hist = torch.tensor([[0, 5, 12, 30, 25, 10, 8, 6, 3, 1], [50, 50, 0, 0, 0, 0, 0, 0, 0, 0]], dtype=torch.float32)
    ref = _act_reference(act.params.detach().double().numpy(), hist.double().numpy())
    assert np.allclose(act.embed(hist).detach().numpy(), ref, rtol=1e-5, atol=1e-4)
    rgb = torch.rand(2, 7, 3) * 2 - 0.5
    out = act(rgb, hist).detach().numpy()
    for b in range(2):
        K, bias = ref[b, :9].reshape(3, 3), ref[b, 9:12]
        exp = 1 / (1 + np.exp(-(rgb[b].double().numpy() @ K.T + bias)))
        assert np.allclose(out[b], exp, atol=1e-5)


def test_act_default_init_is_identity_like():
    act = AffineColorTransform()
    hist = torch.tensor([[0, 5, 12, 30, 25, 10, 8, 6, 3, 1.0]])
    c = torch.linspace(0, 1, 11).reshape(1, 11, 1).expand(1, 11, 3)
    out = act(c, hist)
    assert (out[..., 0].diff() > 0).all()                 # monotone in the colour
    assert (out - 1 / (1 + torch.exp(-(4 * c - 2)))).abs().max() < 0.25


# ---------------------------------------------------------------------------------------------- fusion
def test_fusion_layer_names():
    keys = set(FusionNet().state_dict())
    exp = {f"net.{i}.{p}" for i in (0, 2, 4, 6) for p in ("weight", "bias")}
    exp |= {f"net.7.{p}" for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}
    assert keys == exp
    assert "net.7.weight" not in FusionNet(no_bn=True).state_dict()


def test_fusion_bn_uses_batch_statistics_in_eval():
    net = FusionNet()
    with torch.no_grad():
        net.net[7].running_mean.fill_(5.0)
        net.net[7].running_var.fill_(9.0)
        net.net[7].weight.uniform_(0.5, 2.0)
        net.net[7].bias.uniform_(-1, 1)
    net.eval()
    rgb, feat = torch.rand(1, 3, 12, 10), torch.randn(1, 128, 12, 10)
    out = net(rgb, feat)
    # batch-statistics BN: normalise the pre-BN map with its own per-channel mean / biased variance
    x = torch.cat([(rgb - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
                   / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), feat], 1)
    y = net.net[:7](x)
    mu, var = y.mean(dim=(0, 2, 3), keepdim=True), y.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    bn = net.net[7]
    ref = (y - mu) / torch.sqrt(var + 1e-5) * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)
    assert torch.allclose(out, ref, atol=1e-4)
    assert torch.allclose(out.mean(dim=(0, 2, 3)), bn.bias, atol=1e-4)
    assert torch.all(net.net[7].running_mean == 5.0)          # eval does not touch the running stats
    net.train()
    net(rgb, feat)
    assert not torch.all(net.net[7].running_mean == 5.0)


def test_fusion_normalises_colour_and_residual():
    torch.manual_seed(0)
    a, b = FusionNet(no_bn=True), FusionNet(no_bn=True, use_res=True)
    b.load_state_dict(a.state_dict())
    rgb, feat = torch.rand(2, 3, 8, 8), torch.randn(2, 128, 8, 8)
    ref_in = torch.cat([(rgb - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
                        / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), feat], 1)
    assert torch.allclose(a(rgb, feat), a.net(ref_in), atol=1e-6)
    assert torch.allclose(b(rgb, feat), a(rgb, feat) + feat, atol=1e-6)


# ---------------------------------------------------------------------------------------------- hash grid
def test_hashgrid_field_outputs_and_box():
    from models.fields import HashGridField
    box = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 2.0, 3.0]])
    f = HashGridField(box, transient=True, hash_level=4, log2_hashmap_size=12, base_resolution=4,
                      finest_resolution=32, hidden=32)
    x = torch.tensor([[0.0, 0.5, 1.0], [0.9, 1.9, 2.9], [1.5, 0.0, 0.0], [0.0, -1.1, 0.0]])
    d = torch.nn.functional.normalize(torch.randn(4, 3), dim=-1)
    out = f(x, d)
    assert out["rgb"].shape == (4, 3) and out["feat"].shape == (4, 128)
    assert out["sigma_t"].shape == (4,) and out["beta_t"].shape == (4,) and out["rgb_t"].shape == (4, 3)
    assert (out["sigma"][:2] > 0).all() and (out["sigma"][2:] == 0).all()     # zero outside the box
    assert torch.allclose(f.density(x), out["sigma"])
    assert torch.equal(f.scene_box, box)
    coarse = HashGridField(box, transient=False, hash_level=2, log2_hashmap_size=10, base_resolution=4,
                           finest_resolution=8, hidden=16)
    assert "sigma_t" not in coarse(x, d)
    with torch.no_grad():                                   # saturated density: finite, still 0 outside
        f.sigma_net[2].bias[0] = 500.0
    sig = f.density(x)
    assert torch.isfinite(sig).all() and (sig[2:] == 0).all()
    with pytest.raises(ValueError, match="scene_box"):
        HashGridField(torch.tensor([[0.0, 0, 0], [1, 0, 1]]), transient=False)
