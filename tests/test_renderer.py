"""Rays, samplers and compositing against closed forms; gradients; chunking (spec §2.4)."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from models.appearance import AffineColorTransform
from models.fields import NeFeSMLPField
from models.fusion import FusionNet
from models.losses import feature_cosine_loss
from models.nefes import NeFeS
from models.rays import get_rays, patch_pixels, pixel_grid
from models.renderer import distortion, render_image, render_patches, render_pixels, render_rays
from models.samplers import coarse_depths, sample_pdf


class SlabField(nn.Module):
    """Constant density between depths a and b along -z (camera at the origin looking down -z),
    constant colour/feature there; optional constant transient density/colour/beta."""

    def __init__(self, sigma, a, b, rgb=(0.2, 0.5, 0.9), sigma_t=None, beta_t=0.7):
        super().__init__()
        self.sig, self.a, self.b, self.sig_t, self.beta = sigma, a, b, sigma_t, beta_t
        self.has_transient = sigma_t is not None
        self.feat_dim = 128
        self.static_head = nn.Linear(4, 131)
        with torch.no_grad():
            self.static_head.weight.zero_()
            self.static_head.bias.zero_()
            self.static_head.weight[:3, 0] = torch.tensor(rgb)
            self.static_head.weight[3:, 0] = torch.linspace(-1, 1, 128)
        self.dens_param = nn.Parameter(torch.tensor(1.0))

    def density(self, x):
        t = -x[:, 2]
        return self.sig * ((t >= self.a) & (t < self.b)).to(x.dtype) * self.dens_param

    def hidden(self, x, d, transient=True):
        sigma = self.density(x)
        h = torch.zeros(x.shape[0], 4, dtype=x.dtype)
        h[:, 0] = 1.0
        out = {"sigma": sigma, "h": h}
        if self.has_transient and transient:
            inside = (sigma > 0).to(x.dtype)
            out["sigma_t"] = self.sig_t * inside
            out["rgb_t"] = torch.full((x.shape[0], 3), 0.25, dtype=x.dtype)
            out["beta_t"] = torch.full((x.shape[0],), self.beta, dtype=x.dtype)
        return out

    def forward(self, x, d, transient=True):
        out = self.hidden(x, d, transient)
        cf = self.static_head(out.pop("h"))
        out["rgb"], out["feat"] = cf[:, :3], cf[:, 3:]
        return out


def _container(coarse, fine):
    return NeFeS(coarse, fine, AffineColorTransform(), FusionNet(), "toy", {})


# ---------------------------------------------------------------------------------------------- rays
def test_pixel_convention():
    h, w, f = 6, 8, 5.0
    R = torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])          # 90 deg about z
    c2w = torch.cat([R, torch.tensor([[1.0], [2.0], [3.0]])], 1)
    o, d = get_rays(c2w, h, w, f)
    assert o.shape == (48, 3) and torch.allclose(o, torch.tensor([1.0, 2.0, 3.0]).expand(48, 3))
    centre = 3 * w + 4                        # pixel (u=W/2=4, v=H/2=3): the optical axis
    assert torch.allclose(d[centre], R @ torch.tensor([0.0, 0.0, -1.0]))
    d00 = torch.tensor([(0 - 4.0) / f, -(0 - 3.0) / f, -1.0])        # pixel (0,0): top-left, no +0.5
    assert torch.allclose(d[0], R @ d00)
    assert torch.allclose(torch.linalg.norm(d[0]), torch.linalg.norm(d00))   # not normalised
    # odd sizes: principal point W/2, H/2 as floats
    _, d = get_rays(torch.eye(4)[:3], 5, 7, 2.0)
    assert torch.allclose(d[0], torch.tensor([-1.75, 1.25, -1.0]))


def test_pixel_center_moves_every_ray_by_the_same_fraction_of_a_pixel():
    """pixel_center 0.5 casts the ray of pixel (u, v) through (u + 0.5, v + 0.5); project inverts it with
    the same centre; a model's hparams decide which convention render_pixels uses."""
    from models.rays import camera_dirs, project
    h, w, f = 6, 8, 5.0
    uv = pixel_grid(h, w, dtype=torch.float64)
    d = camera_dirs(uv, h, w, f, 0.5)
    assert torch.allclose(d, camera_dirs(uv + 0.5, h, w, f))
    assert torch.allclose(d[3 * w + 4], torch.tensor([0.5 / f, -0.5 / f, -1.0], dtype=torch.float64))
    assert torch.allclose(project(2.5 * d, h, w, f, 0.5), uv)
    assert not torch.allclose(project(2.5 * d, h, w, f), uv)
    # the renderer takes the convention from the model: a 0.5-centred render of pixel (u, v) is the
    # 0-centred render of the point (u + 0.5, v + 0.5)
    fine = NeFeSMLPField(transient=False, netdepth=2, netwidth=16, multires=2, multires_views=1)
    m = _container(NeFeSMLPField(transient=False, netdepth=2, netwidth=16, multires=2, multires_views=1), fine)
    c2w, hist = torch.eye(4)[None, :3], torch.full((1, 10), 0.1)
    kw = dict(N_samples=8, N_importance=0, with_feat=False)
    plain = render_pixels(m, c2w, uv.float() + 0.5, h, w, f, 0.5, 3.0, hist, **kw)["rgb"]
    m.pixel_center = 0.5
    centred = render_pixels(m, c2w, uv.float(), h, w, f, 0.5, 3.0, hist, **kw)["rgb"]
    assert torch.allclose(centred, plain, atol=1e-6)
    assert not torch.allclose(centred, render_pixels(_container(m.coarse, fine), c2w, uv.float(), h, w, f, 0.5, 3.0,
                                                     hist, **kw)["rgb"], atol=1e-4)


def test_patch_pixel_order():
    uv = patch_pixels(torch.tensor([[2, 5], [0, 1]]), size=3)
    assert uv.shape == (18, 2)
    assert uv[0].tolist() == [5, 2] and uv[1].tolist() == [6, 2] and uv[3].tolist() == [5, 3]
    assert uv[9].tolist() == [1, 0]


# ---------------------------------------------------------------------------------------------- samplers
def test_stratified_depths_stay_in_their_intervals():
    g = torch.Generator().manual_seed(0)
    z = coarse_depths(100, 9, 1.0, 3.0, perturb=True, generator=g)
    grid = torch.linspace(1.0, 3.0, 9)
    mids = 0.5 * (grid[1:] + grid[:-1])
    lo, hi = torch.cat([grid[:1], mids]), torch.cat([mids, grid[-1:]])
    assert ((z >= lo) & (z <= hi)).all() and (z.std(0) > 0).all()
    assert torch.equal(coarse_depths(3, 9, 1.0, 3.0), grid.expand(3, 9))


def test_inverse_cdf_samples_land_in_high_weight_bins():
    bins = torch.linspace(0, 10, 11).expand(4, 11)
    w = torch.full((4, 10), 1e-8)
    w[:, 6] = 1.0                                      # all mass in [6, 7]
    s = sample_pdf(bins, w, 64, det=False, generator=torch.Generator().manual_seed(1))
    frac = ((s >= 6) & (s <= 7)).float().mean()
    assert frac > 0.99
    # two bins 3:1 -> deterministic samples split 3:1
    w = torch.full((1, 10), 0.0)
    w[0, 2], w[0, 8] = 3.0, 1.0
    s = sample_pdf(bins[:1], w, 400, det=True)
    in2, in8 = ((s >= 2) & (s <= 3)).float().sum(), ((s >= 8) & (s <= 9)).float().sum()
    assert abs(in2 / in8 - 3.0) < 0.1 and (s.diff() >= 0).all()
    assert not s.requires_grad
    # uniform pdf on [0, 10]: linspace quantiles hit both ends, midpoint quantiles the cell centres
    flat = torch.ones(1, 10)
    assert torch.allclose(sample_pdf(bins[:1], flat, 5, det=True)[0], torch.tensor([0.0, 2.5, 5.0, 7.5, 10.0]))
    assert torch.allclose(sample_pdf(bins[:1], flat, 5, det=True, det_midpoints=True)[0],
                          torch.tensor([1.0, 3.0, 5.0, 7.0, 9.0]))


# ---------------------------------------------------------------------------------------------- compositing
def _centre_ray(dtype=torch.float64):
    return torch.zeros(1, 3, dtype=dtype), torch.tensor([[0.0, 0.0, -1.0]], dtype=dtype)


def test_constant_slab_opacity_and_depth_closed_form():
    # samples every 0.125 from 0 to 4 (exact in binary); the slab [1, 2) holds samples 1.0 .. 1.875
    s0 = 2.5
    f = SlabField(s0, 1.0, 2.0).double()
    m = _container(f, f).double()
    o, d = _centre_ray()
    out = render_rays(m, o, d, 0.0, 4.0, N_samples=33, N_importance=0)
    q = math.exp(-s0 * 0.125)
    k = np.arange(8)
    w = (1 - q) * q ** k                                   # discrete weights of the slab samples
    assert out["acc"].item() == pytest.approx(1 - math.exp(-s0 * 1.0), rel=1e-9)
    assert out["depth"].item() == pytest.approx(float((w * (1.0 + 0.125 * k)).sum()), rel=1e-9)
    # continuous closed form (entry at 1, length 1) within the discretisation error O(delta)
    cont = (1 / s0 - math.exp(-s0) * (1 + 1 / s0)) + 1.0 * (1 - math.exp(-s0))
    assert out["depth"].item() == pytest.approx(cont, abs=0.08)
    assert torch.allclose(out["rgb"][0], out["acc"][0] * torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64))


def test_transient_compositing_closed_form():
    s, st, beta = 1.5, 0.5, 0.7
    f = SlabField(s, 1.0, 2.0, rgb=(1.0, 0.0, 0.0), sigma_t=st, beta_t=beta).double()
    m = _container(f, f).double()
    o, d = _centre_ray()
    # slab ends are coarse samples, so inserting fine samples keeps the optical depth exact
    out = render_rays(m, o, d, 0.0, 4.0, N_samples=513, N_importance=16)
    acc = 1 - math.exp(-(s + st))
    assert out["acc"].item() == pytest.approx(acc, rel=1e-9)
    assert out["transient_sigmas"].shape == (1, 529)
    # shares of the joint opacity: static s/(s+st), transient st/(s+st) (continuous limit; the
    # discretisation bias is about delta*s/2 = 0.6%)
    ws = (out["rgb"][0, 0] - 0.25 * (out["beta"][0] - 0.1) / beta).item()   # static colour (1,0,0)
    wt = ((out["beta"][0] - 0.1) / beta).item()
    assert ws == pytest.approx(s / (s + st) * acc, rel=1e-2)
    assert wt == pytest.approx(st / (s + st) * acc, rel=1e-2)
    assert out["rgb"][0, 1].item() == pytest.approx(0.25 * wt, rel=1e-9)
    # transient off: static-only transmittance, no beta
    out_s = render_rays(m, o, d, 0.0, 4.0, N_samples=257, N_importance=16, transient=False)
    assert out_s["acc"].item() == pytest.approx(1 - math.exp(-s), rel=1e-9)
    assert "beta" not in out_s and "transient_sigmas" not in out_s


def test_fine_samples_concentrate_on_surface():
    f = SlabField(50.0, 1.95, 2.05).double()               # thin, dense slab at depth 2
    m = _container(f, f).double()
    o, d = _centre_ray()
    out = render_rays(m, o, d, 0.0, 4.0, N_samples=17, N_importance=32)
    # the expected depth is close to 2 only if the fine samples resolved the slab
    assert out["depth"].item() == pytest.approx(2.0, abs=0.05)
    assert out["acc"].item() > 0.95


def test_distortion_matches_its_definition_and_penalises_spread_weight():
    # brute force: sum_ij w_i w_j |s_i - s_j| + 1/3 sum_i w_i^2 (interval length), s = depth scaled to [0, 1]
    g = torch.Generator().manual_seed(0)
    z = torch.sort(torch.rand(3, 12, generator=g, dtype=torch.float64) * 3 + 1, -1).values
    w = torch.rand(3, 12, generator=g, dtype=torch.float64) / 12
    s = (z - 1.0) / 3.0
    edges = torch.cat([s[:, :1], 0.5 * (s[:, 1:] + s[:, :-1]), s[:, -1:]], -1)
    brute = (w[:, :, None] * w[:, None, :] * (s[:, :, None] - s[:, None, :]).abs()).sum((1, 2)) \
        + (w ** 2 * (edges[:, 1:] - edges[:, :-1])).sum(-1) / 3
    assert torch.allclose(distortion(w, z, 1.0, 4.0), brute, rtol=1e-10)
    # the same total weight: one surface scores far lower than a floater in front of it
    z = torch.linspace(0.0, 4.0, 33, dtype=torch.float64)[None]
    surface = torch.zeros_like(z); surface[0, 16] = 0.9
    floater = torch.zeros_like(z); floater[0, 4] = 0.45; floater[0, 16] = 0.45
    assert distortion(floater, z, 0.0, 4.0).item() > 10 * distortion(surface, z, 0.0, 4.0).item()


def test_training_render_returns_the_distortion_of_both_fields():
    o, d = _centre_ray()
    thin, thick = (_container(SlabField(s0, a, b), SlabField(s0, a, b)).double() for s0, a, b in
                   ((50.0, 1.95, 2.05), (1.0, 0.5, 3.5)))
    out = {k: render_rays(m, o, d, 0.0, 4.0, N_samples=17, N_importance=16, need_coarse=True, with_distortion=True)
           for k, m in (("thin", thin), ("thick", thick))}
    assert out["thin"]["distortion"].shape == (1,)
    assert out["thick"]["distortion"].item() > 3 * out["thin"]["distortion"].item()
    assert "distortion" not in render_rays(thin, o, d, 0.0, 4.0, N_samples=17, N_importance=16, need_coarse=True)


def test_fine_only_renders_the_fine_samples():
    f = SlabField(50.0, 1.95, 2.05, sigma_t=0.0).double()
    m = _container(f, f).double()
    o, d = _centre_ray()
    out = render_rays(m, o, d, 0.0, 4.0, N_samples=33, N_importance=8, fine_only=True)
    assert out["transient_sigmas"].shape == (1, 8)
    assert out["depth"].item() == pytest.approx(2.0, abs=0.1) and out["acc"].item() > 0.95
    m.fine_only = True                                     # the model's default (stored in hparams)
    assert render_rays(m, o, d, 0.0, 4.0, N_samples=33, N_importance=8)["transient_sigmas"].shape == (1, 8)
    assert render_rays(m, o, d, 0.0, 4.0, 33, 8, fine_only=False)["transient_sigmas"].shape == (1, 41)


# ---------------------------------------------------------------------------------------------- gradients
def _tiny_mlp_model(seed=0):
    torch.manual_seed(seed)
    kw = dict(netdepth=2, netwidth=32, multires=3, multires_views=2, skips=(1,))
    m = NeFeS(NeFeSMLPField(False, **kw), NeFeSMLPField(True, **kw), AffineColorTransform(), FusionNet(),
              "nefes_mlp", {})
    with torch.no_grad():
        m.fine.static_sigma[0].bias.fill_(1.0)
        m.coarse.static_sigma[0].bias.fill_(1.0)
    return m


def test_feature_weights_are_detached():
    m = _tiny_mlp_model()
    o = torch.zeros(20, 3)
    d = torch.nn.functional.normalize(torch.randn(20, 3), dim=-1)
    out = render_rays(m, o, d, 0.0, 3.0, 8, 8, perturb=True, need_coarse=True)
    out["feat"].square().sum().backward()
    for p in list(m.fine.static_sigma.parameters()) + list(m.fine.transient_sigma.parameters()):
        assert p.grad is None or torch.all(p.grad == 0)
    assert m.fine.static_rgb[0].weight.grad.abs().sum() > 0       # features still learn
    m.zero_grad()
    out = render_rays(m, o, d, 0.0, 3.0, 8, 8, perturb=True, need_coarse=True)
    out["rgb"].square().sum().backward()
    assert m.fine.static_sigma[0].weight.grad.abs().sum() > 0     # colour shapes density


def test_linear_heads_and_chunking_do_not_change_results():
    m = _tiny_mlp_model(3)
    o = torch.randn(23, 3) * 0.1
    d = torch.nn.functional.normalize(torch.randn(23, 3), dim=-1)
    a = render_rays(m, o, d, 0.0, 3.0, 12, 10, need_coarse=True)
    b = render_rays(m, o, d, 0.0, 3.0, 12, 10, need_coarse=True, chunk=5, netchunk=37)
    c = render_rays(m, o, d, 0.0, 3.0, 12, 10, need_coarse=True, linear_heads=False)
    assert set(a) == set(b) == set(c)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
        assert torch.allclose(a[k], c[k], atol=1e-5), k


class SmoothBlob(nn.Module):
    """Smooth density and hidden vector (for finite differences through the renderer)."""

    def __init__(self, transient):
        super().__init__()
        self.has_transient, self.feat_dim = transient, 128
        g = torch.Generator().manual_seed(7)
        self.A = nn.Parameter(torch.randn(3, 8, generator=g, dtype=torch.float64))
        self.static_head = nn.Linear(8, 131).double()

    def density(self, x):
        return 3.0 * torch.exp(-((x - torch.tensor([0.0, 0.0, -1.5], dtype=x.dtype)) ** 2).sum(-1) / 0.5)

    def hidden(self, x, d, transient=True):
        out = {"sigma": self.density(x), "h": torch.sin(2.0 * x @ self.A) + 0.1 * d.sum(-1, keepdim=True)}
        if self.has_transient and transient:
            out["sigma_t"] = 0.2 * torch.exp(-(x ** 2).sum(-1))
            out["rgb_t"] = torch.sigmoid(x)
            out["beta_t"] = 1.0 + x[:, 0] ** 2
        return out


class ConstDensity(SmoothBlob):
    """Constant densities: the compositing weights do not depend on the pose."""

    def density(self, x):
        return torch.full(x.shape[:1], 0.3, dtype=x.dtype)

    def hidden(self, x, d, transient=True):
        out = super().hidden(x, d, transient)
        if "sigma_t" in out:
            out["sigma_t"] = torch.full_like(out["sigma"], 0.1)
        return out


def test_density_path_gradients_match_finite_differences():
    # colour, depth and opacity see the density through the (non-detached) weights
    m = NeFeS(ConstDensity(False), SmoothBlob(True), AffineColorTransform(), FusionNet(), "toy", {}).double()
    g = torch.Generator().manual_seed(4)
    o = (torch.randn(3, 3, generator=g, dtype=torch.float64) * 0.1).requires_grad_()
    d = torch.randn(3, 3, generator=g, dtype=torch.float64).requires_grad_()
    for key in ("rgb", "depth", "acc"):
        fn = lambda o, d: render_rays(m, o, d, 0.1, 3.0, 24, 8)[key]  # noqa: E731
        assert torch.autograd.gradcheck(fn, (o, d), eps=1e-6, atol=1e-6), key


def test_pose_gradient_matches_finite_differences():
    # full pipeline (rays, ACT, features, fusion CNN with batch-stat BN, cosine loss) to the pose.
    # Densities are constant so that the detached feature weights make no difference: then finite
    # differences of the whole pipeline equal the analytic gradient.
    m = NeFeS(ConstDensity(False), ConstDensity(True), AffineColorTransform(), FusionNet(), "toy", {}).double()
    m.eval()
    h, w, f = 5, 6, 5.0
    hist = torch.tensor([3.0, 10, 20, 30, 15, 10, 5, 4, 2, 1], dtype=torch.float64)
    g = torch.Generator().manual_seed(2)
    target = torch.randn(1, 128, h, w, generator=g, dtype=torch.float64)
    target_rgb = torch.rand(1, 3, h, w, generator=g, dtype=torch.float64)

    def loss_fn(c2w):
        out = render_image(m, c2w, h, w, f, 0.1, 3.0, hist, N_samples=24, N_importance=8)
        return feature_cosine_loss(out["fused"], target) + ((out["rgb"] - target_rgb) ** 2).mean()

    c2w = torch.tensor([[1.0, 0, 0, 0.05], [0, 1, 0, -0.03], [0, 0, 1, 0.1]], dtype=torch.float64, requires_grad=True)
    loss_fn(c2w).backward()
    grad = c2w.grad.clone()
    assert grad.abs().max() > 1e-3
    eps = 1e-6
    num = torch.zeros_like(grad)
    with torch.no_grad():
        for i in range(3):
            for j in range(4):
                e = torch.zeros_like(grad)
                e[i, j] = eps
                num[i, j] = (loss_fn(c2w + e) - loss_fn(c2w - e)) / (2 * eps)
    assert torch.allclose(grad, num, rtol=1e-5, atol=1e-8), (grad, num)


# ---------------------------------------------------------------------------------------------- image/patches
def test_patches_match_full_image_and_order():
    m = _tiny_mlp_model(1)
    h, w, f = 12, 14, 10.0
    c2w = torch.stack([torch.eye(4)[:3], torch.tensor([[0.0, 0, 1, 0.2], [0, 1, 0, 0], [-1, 0, 0, 0.1]])])
    hist = torch.tensor([[3.0, 10, 20, 30, 15, 10, 5, 4, 2, 1], [30.0, 30, 20, 10, 5, 5, 0, 0, 0, 0]])
    full = render_image(m, c2w, h, w, f, 0.0, 2.0, hist, fuse=False, N_samples=8, N_importance=8)
    corners = torch.tensor([[1, 2], [5, 6], [0, 0]])
    p = render_patches(m, c2w, h, w, f, 0.0, 2.0, hist, corners, size=4, N_samples=8, N_importance=8)
    assert p["rgb"].shape == (6, 3, 4, 4) and p["fused"].shape == (6, 128, 4, 4)
    for b in range(2):
        for i, (r, c) in enumerate(corners.tolist()):
            k = b * 3 + i                       # image -> patch
            assert torch.allclose(p["rgb"][k], full["rgb"][b, :, r:r + 4, c:c + 4], atol=1e-5)
            assert torch.allclose(p["feat"][k], full["feat"][b, :, r:r + 4, c:c + 4], atol=1e-5)
    assert p["rays"]["rgb"].shape == (2 * 3 * 16, 3)


def test_colour_only_render_matches_the_full_render():
    m = _tiny_mlp_model(2)
    c2w = torch.stack([torch.eye(4)[:3], torch.tensor([[0.0, 0, 1, 0.2], [0, 1, 0, 0], [-1, 0, 0, 0.1]])])
    hist = torch.tensor([[3.0, 10, 20, 30, 15, 10, 5, 4, 2, 1], [30.0, 30, 20, 10, 5, 5, 0, 0, 0, 0]])
    kw = dict(N_samples=8, N_importance=8)
    full = render_image(m, c2w, 9, 11, 8.0, 0.0, 2.0, hist, **kw)
    col = render_image(m, c2w, 9, 11, 8.0, 0.0, 2.0, hist, with_feat=False, **kw)
    assert "feat" not in col and "fused" not in col and "fused" in full
    for k in ("rgb", "depth", "acc"):
        assert torch.allclose(col[k], full[k], atol=1e-6)


def test_render_pixels_applies_act_per_image():
    m = _tiny_mlp_model(2)
    c2w = torch.eye(4)[:3].expand(2, 3, 4)
    uv = pixel_grid(3, 4)
    hist = torch.tensor([[3.0, 10, 20, 30, 15, 10, 5, 4, 2, 1], [90.0, 10, 0, 0, 0, 0, 0, 0, 0, 0]])
    with torch.no_grad():
        m.act.params.normal_(0, 0.05)
    out = render_pixels(m, c2w, uv, 3, 4, 3.0, 0.0, 2.0, hist, N_samples=6, N_importance=6)
    raw = out["rgb_raw"].reshape(2, 12, 3)
    assert torch.allclose(raw[0], raw[1])                         # same pose, same raw colour
    assert not torch.allclose(out["rgb"][:12], out["rgb"][12:])   # different ACT per image
    assert torch.allclose(out["rgb"].reshape(2, 12, 3), m.apply_act(raw, hist))
