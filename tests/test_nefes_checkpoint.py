"""NeFeS checkpoints: an original-format ``nefes.tar`` (built here from the §7.1 names and shapes),
our own save/load round trip, hash-grid scene box + hparams, and clear errors."""
import logging

import numpy as np
import pytest
import torch

from models.nefes import NeFeSCheckpointError, build_from_hparams, load_nefes, save_nefes
from models.renderer import render_image

W, CX, CD = 128, 63, 27


def _original_shapes(fine: bool) -> dict:
    """Tensor names/shapes of the released NeFeS (spec §7.1), typed here independently of models/."""
    s = {}
    for i in range(1, 9):
        n_in = CX if i == 1 else (W + CX if i == 5 else W)
        s[f"xyz_encoding_{i}.0.weight"] = (W, n_in)
        s[f"xyz_encoding_{i}.0.bias"] = (W,)
    s.update({"xyz_encoding_final.weight": (W, W), "xyz_encoding_final.bias": (W,),
              "dir_encoding.0.weight": (W // 2, W + CD), "dir_encoding.0.bias": (W // 2,),
              "static_sigma.0.weight": (1, W), "static_sigma.0.bias": (1,),
              "static_rgb.0.weight": (131, W // 2), "static_rgb.0.bias": (131,)})
    if fine:
        s.update({"transient_encoding.0.weight": (64, W + CD), "transient_encoding.0.bias": (64,),
                  "transient_encoding.2.weight": (64, 64), "transient_encoding.2.bias": (64,),
                  "transient_encoding.4.weight": (64, 64), "transient_encoding.4.bias": (64,),
                  "transient_sigma.0.weight": (1, 64), "transient_sigma.0.bias": (1,),
                  "transient_rgb.0.weight": (3, 64), "transient_rgb.0.bias": (3,),
                  "transient_beta.0.weight": (1, 64), "transient_beta.0.bias": (1,)})
    else:
        s.update({"fusion_net.net.0.weight": (64, 131, 3, 3), "fusion_net.net.0.bias": (64,),
                  "fusion_net.net.2.weight": (64, 64, 3, 3), "fusion_net.net.2.bias": (64,),
                  "fusion_net.net.4.weight": (64, 64, 3, 3), "fusion_net.net.4.bias": (64,),
                  "fusion_net.net.6.weight": (128, 64, 5, 5), "fusion_net.net.6.bias": (128,),
                  "fusion_net.net.7.weight": (128,), "fusion_net.net.7.bias": (128,),
                  "fusion_net.net.7.running_mean": (128,), "fusion_net.net.7.running_var": (128,),
                  "exposure_embedding.params": (3072,)})
    return s


def _random_state(shapes: dict, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shp in shapes.items():
        fan_in = shp[1] * (int(np.prod(shp[2:])) if len(shp) > 2 else 1) if len(shp) > 1 else 1
        sd[k] = torch.randn(shp, generator=g) / np.sqrt(fan_in)
    if "fusion_net.net.7.running_var" in sd:
        sd["fusion_net.net.7.running_var"] = sd["fusion_net.net.7.running_var"].abs() + 0.5
        sd["fusion_net.net.7.num_batches_tracked"] = torch.tensor(1234)
    if "exposure_embedding.params" in sd:
        sd["exposure_embedding.params"] = sd["exposure_embedding.params"] * 0.05
    return sd


@pytest.fixture(scope="module")
def original_tar(tmp_path_factory):
    fn, fine = _random_state(_original_shapes(False), 1), _random_state(_original_shapes(True), 2)
    path = tmp_path_factory.mktemp("orig") / "nefes.tar"
    torch.save({"global_step": 600, "network_fn_state_dict": fn, "network_fine_state_dict": fine,
                "optimizer_state_dict": {"state": {}, "param_groups": []}}, path)
    return path, fn, fine


# ---- numpy reference of the released field's forward pass (spec §2.3) -------------------------
def _pe(x, L):
    out = [x]
    for k in range(L):
        out += [np.sin(2.0 ** k * x), np.cos(2.0 ** k * x)]
    return np.concatenate(out, -1)


def _lin(sd, name, x):
    return x @ sd[name + ".weight"].double().numpy().T + sd[name + ".bias"].double().numpy()


def _softplus(x):
    return np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0)


def _reference_field(sd, x, d, transient):
    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    ex, ed = _pe(x, 10), _pe(d, 4)
    h = ex
    for i in range(1, 9):
        if i == 5:
            h = np.concatenate([ex, h], -1)
        h = relu(_lin(sd, f"xyz_encoding_{i}.0", h))
    out = {"sigma": _softplus(_lin(sd, "static_sigma.0", h))[:, 0]}
    geo = np.concatenate([_lin(sd, "xyz_encoding_final", h), ed], -1)
    cf = _lin(sd, "static_rgb.0", relu(_lin(sd, "dir_encoding.0", geo)))
    out["rgb"], out["feat"] = cf[:, :3], cf[:, 3:]
    if transient:
        t = geo
        for j in (0, 2, 4):
            t = relu(_lin(sd, f"transient_encoding.{j}", t))
        out["sigma_t"] = _softplus(_lin(sd, "transient_sigma.0", t))[:, 0]
        out["rgb_t"] = 1 / (1 + np.exp(-_lin(sd, "transient_rgb.0", t)))
        out["beta_t"] = _softplus(_lin(sd, "transient_beta.0", t))[:, 0]
    return out


def test_original_checkpoint_loads_and_matches_reference(original_tar):
    path, fn, fine = original_tar
    model, ckpt = load_nefes(path, torch.device("cpu"))
    assert model.field_type == "nefes_mlp" and ckpt["global_step"] == 600
    assert model.hparams["netdepth"] == 8 and model.hparams["netwidth"] == 128
    assert model.hparams["multires"] == 10 and model.hparams["multires_views"] == 4
    assert torch.equal(model.act.params, fn["exposure_embedding.params"])
    assert torch.equal(model.fusion.net[6].weight, fn["fusion_net.net.6.weight"])
    g = torch.Generator().manual_seed(5)
    x = torch.randn(16, 3, generator=g)
    d = torch.nn.functional.normalize(torch.randn(16, 3, generator=g), dim=-1)
    for field, sd, tr in ((model.coarse, fn, False), (model.fine, fine, True)):
        ref = _reference_field(sd, x.double().numpy(), d.double().numpy(), tr)
        out = field(x, d)
        for k, v in ref.items():
            assert np.allclose(out[k].detach().numpy(), v, rtol=1e-4, atol=1e-5), k
        assert np.allclose(field.density(x).detach().numpy(), ref["sigma"], rtol=1e-4, atol=1e-5)


def test_original_checkpoint_renders(original_tar):
    model, _ = load_nefes(original_tar[0], torch.device("cpu"))
    model.eval()
    c2w = torch.tensor([[1.0, 0, 0, 0.1], [0, 1, 0, -0.2], [0, 0, 1, 0.5]])
    hist = torch.tensor([2.0, 8, 15, 25, 20, 12, 8, 5, 3, 2])
    out = render_image(model, c2w, 6, 8, 7.0, 0.0, 2.0, hist, N_samples=8, N_importance=8)
    assert out["rgb"].shape == (1, 3, 6, 8) and out["feat"].shape == (1, 128, 6, 8)
    assert out["fused"].shape == (1, 128, 6, 8)
    assert all(torch.isfinite(v).all() for v in out.values())
    assert ((out["rgb"] > 0) & (out["rgb"] < 1)).all()


def test_original_checkpoint_without_fusion_bn(tmp_path, original_tar):
    _, fn, fine = original_tar
    fn = {k: v for k, v in fn.items() if not k.startswith("fusion_net.net.7")}
    p = tmp_path / "nobn.tar"
    torch.save({"global_step": 1, "network_fn_state_dict": fn, "network_fine_state_dict": fine,
                "optimizer_state_dict": None}, p)
    model, _ = load_nefes(p, "cpu")
    assert model.hparams["no_fusion_BN"] and len(model.fusion.net) == 7


def test_save_load_round_trip_paper(tmp_path):
    torch.manual_seed(1)
    hp = dict(field_type="nefes_mlp", netdepth=3, netwidth=32, multires=4, multires_views=2, skips=[2],
              use_fusion_res=True, no_fusion_BN=False, feat_dim=128)
    m = build_from_hparams(hp)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    path = tmp_path / "sub" / "000010.tar"
    save_nefes(path, m, 10, opt, note="x")
    assert sorted(p.name for p in path.parent.iterdir()) == ["000010.tar"]       # no temp file left
    m2, ckpt = load_nefes(path, "cpu")
    assert ckpt["global_step"] == 10 and ckpt["note"] == "x" and ckpt["optimizer_state_dict"] is not None
    assert set(ckpt) >= {"network_fn_state_dict", "network_fine_state_dict", "field_type", "hparams", "scene_box"}
    assert m2.hparams == hp and m2.fusion.use_res
    for (k, a), (k2, b) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k


def test_hashgrid_checkpoint_stores_box_and_hparams(tmp_path):
    box = torch.tensor([[-2.0, -1.5, -3.0], [2.5, 1.0, 0.5]])
    hp = dict(field_type="hashgrid", hash_level=4, hash_features=2, log2_hashmap_size=12, base_resolution=4,
              finest_resolution=64, hg_hidden=32, hg_geo_dim=15, hg_coarse_level=2, hg_coarse_log2_hashmap_size=10,
              hg_coarse_finest_resolution=16, hg_coarse_hidden=16, use_fusion_res=False, no_fusion_BN=False,
              feat_dim=128)
    m = build_from_hparams(hp, box)
    with torch.no_grad():
        m.fine.encoding.params.normal_(0, 0.1)
    path = tmp_path / "hg.tar"
    save_nefes(path, m, 3)
    ck = torch.load(path, weights_only=True)
    assert ck["field_type"] == "hashgrid" and ck["scene_box"] == box.tolist() and ck["hparams"] == hp
    assert "exposure_embedding.params" in ck["network_fn_state_dict"]
    m2, _ = load_nefes(path, "cpu")
    assert m2.field_type == "hashgrid" and torch.equal(m2.scene_box, box) and m2.hparams == hp
    assert torch.equal(m2.fine.scene_box, box) and torch.equal(m2.fine.encoding.params, m.fine.encoding.params)
    x, d = torch.rand(10, 3) - 0.5, torch.nn.functional.normalize(torch.randn(10, 3), dim=-1)
    assert torch.equal(m2.fine(x, d)["feat"], m.fine(x, d)["feat"])


def test_pixel_center_comes_from_the_config_and_then_from_the_checkpoint(tmp_path, caplog):
    """A new field records the config's pixel_center; loading it back keeps it whatever the config says;
    a checkpoint without the key (the original's) renders with 0."""
    from argparse import Namespace
    from models.nefes import hparams_from_args
    args = Namespace(field_type="nefes_mlp", netdepth=2, netwidth=16, multires=2, multires_views=1, pixel_center=0.5)
    m = build_from_hparams(hparams_from_args(args))
    assert m.pixel_center == 0.5 and m.hparams["pixel_center"] == 0.5
    save_nefes(tmp_path / "c.tar", m, 1)
    m2, _ = load_nefes(tmp_path / "c.tar", "cpu", Namespace(pixel_center=0.0))
    assert m2.pixel_center == 0.5
    ck = torch.load(tmp_path / "c.tar", weights_only=True)
    del ck["hparams"]["pixel_center"]
    torch.save(ck, tmp_path / "old.tar")
    assert load_nefes(tmp_path / "old.tar", "cpu")[0].pixel_center == 0.0
    with caplog.at_level(logging.WARNING, logger="models.nefes"):   # centred rays asked of a field cast at 0
        assert load_nefes(tmp_path / "old.tar", "cpu", Namespace(pixel_center=0.5))[0].pixel_center == 0.0
    assert "trained with pixel_center=0; pixel_center=0.5 ignored" in caplog.text


# ---- errors: one line naming the file and the problem ---------------------------------------
def test_missing_file(tmp_path):
    with pytest.raises(NeFeSCheckpointError, match=r"nope\.tar: NeFeS checkpoint not found"):
        load_nefes(tmp_path / "nope.tar", "cpu")


def test_corrupt_file(tmp_path):
    p = tmp_path / "bad.tar"
    p.write_bytes(b"this is not a torch file" * 10)
    with pytest.raises(NeFeSCheckpointError, match="bad.tar: cannot read") as e:
        load_nefes(p, "cpu")
    assert "\n" not in str(e.value)


def test_wrong_keys(tmp_path, original_tar):
    _, fn, fine = original_tar
    fine = {k: v for k, v in fine.items() if k != "transient_beta.0.weight"}
    p = tmp_path / "wrong.tar"
    torch.save({"global_step": 1, "network_fn_state_dict": fn, "network_fine_state_dict": fine}, p)
    with pytest.raises(NeFeSCheckpointError, match="transient_beta.0.weight"):
        load_nefes(p, "cpu")
    torch.save({"weights": {}}, p)
    with pytest.raises(NeFeSCheckpointError, match="network_fn_state_dict"):
        load_nefes(p, "cpu")
