"""Both fields learn a tiny analytic scene (colour + features), then render through the fusion CNN
identically after a checkpoint round trip. Targets come from bench.field's closed-form room, so this
test needs no dataset on disk."""
import pytest
import torch

from bench.field import render_room, room_cameras, scene_box
from dataset_loaders.images import luminance_histogram
from models.losses import l1_feature_loss, nerfw_color_loss, psnr
from models.nefes import build_from_hparams, load_nefes, save_nefes
from models.renderer import render_image, render_pixels

H, W, FOCAL, FAR = 24, 32, 29.0, 4.0
N_RAYS = 256   # per step (2 images x 128 rays)

PAPER_TINY = dict(field_type="nefes_mlp", netdepth=4, netwidth=64, multires=6, multires_views=2, skips=[2],
                  use_fusion_res=False, no_fusion_BN=False, feat_dim=128)
HASH_TINY = dict(field_type="hashgrid", hash_level=6, hash_features=2, log2_hashmap_size=14, base_resolution=8,
                 finest_resolution=128, hg_hidden=32, hg_geo_dim=15, hg_coarse_level=2,
                 hg_coarse_log2_hashmap_size=14, hg_coarse_finest_resolution=32, hg_coarse_hidden=16,
                 fine_only=True, use_fusion_res=False, no_fusion_BN=False, feat_dim=128)


@pytest.fixture(scope="module")
def scene():
    poses = room_cameras(6, seed=3)
    gts = [render_room(p, H, W, FOCAL, with_feat=True) for p in poses]
    imgs = torch.stack([g["rgb"] for g in gts])
    feats = torch.stack([g["feat"] for g in gts])
    hists = torch.stack([luminance_histogram(i) for i in imgs])
    return poses, imgs, feats, hists


@pytest.fixture(autouse=True)
def _one_thread():
    # one thread: robust on a shared 2-core machine (OpenMP barriers stall under oversubscription)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _batch(g, poses, imgs, feats, hists):
    idx = torch.randint(0, poses.shape[0], (2,), generator=g)
    pix = torch.randint(0, H * W, (2, N_RAYS // 2), generator=g)
    uv = torch.stack([pix % W, pix // W], -1).float()
    rgb = imgs[idx].flatten(2).gather(2, pix[:, None].expand(2, 3, -1)).permute(0, 2, 1).reshape(-1, 3)
    ft = feats[idx].flatten(2).gather(2, pix[:, None].expand(2, 128, -1)).permute(0, 2, 1).reshape(-1, 128)
    return idx, uv, rgb, ft


def _eval_psnr(model, poses, imgs, hists, ns, ni):
    with torch.no_grad():
        out = render_image(model, poses[:2], H, W, FOCAL, 0.0, FAR, hists[:2], fuse=False, N_samples=ns, N_importance=ni)
    return psnr(out["rgb"], imgs[:2]).item()


@pytest.mark.parametrize("hp,lr,steps,ns,ni", [(PAPER_TINY, 2e-3, 220, 16, 16), (HASH_TINY, 1e-2, 220, 16, 16)],
                         ids=["nefes_mlp", "hashgrid"])
def test_field_learns_scene_and_round_trips(tmp_path, scene, hp, lr, steps, ns, ni):
    poses, imgs, feats, hists = scene
    box = scene_box(poses, FAR) if hp["field_type"] == "hashgrid" else None
    model = build_from_hparams(hp, box)
    opt = torch.optim.Adam(model.parameters(), lr=lr, eps=1e-15 if box is not None else 1e-8)
    g = torch.Generator().manual_seed(0)
    p0 = _eval_psnr(model, poses, imgs, hists, ns, ni)
    losses = []
    for step in range(steps):
        idx, uv, rgb, ft = _batch(g, poses, imgs, feats, hists)
        out = render_pixels(model, poses[idx], uv, H, W, FOCAL, 0.0, FAR, hists[idx], perturb=True,
                            need_coarse=True, N_samples=ns, N_importance=ni, generator=g)
        loss = nerfw_color_loss(out["rgb"], rgb, out["beta"], out["transient_sigmas"], out["rgb0"])["total"]
        loss = loss + 0.04 * l1_feature_loss(out["feat"], ft)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    p1 = _eval_psnr(model, poses, imgs, hists, ns, ni)
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < first - 0.5, (first, last)
    assert p1 > p0 + 5.0 and p1 > 16.0, (p0, p1)

    # colour + features through the fusion CNN, save, reload: identical renders
    model.eval()
    kw = dict(N_samples=ns, N_importance=ni)
    with torch.no_grad():
        a = render_image(model, poses[0], H, W, FOCAL, 0.0, FAR, hists[0], **kw)
    path = tmp_path / "nefes.tar"
    save_nefes(path, model, steps, opt)
    model2, ckpt = load_nefes(path, torch.device("cpu"))
    model2.eval()
    with torch.no_grad():
        b = render_image(model2, poses[0], H, W, FOCAL, 0.0, FAR, hists[0], **kw)
    assert ckpt["global_step"] == steps and model2.field_type == hp["field_type"]
    assert a["fused"].shape == (1, 128, H, W)
    for k in ("rgb", "feat", "fused", "depth"):
        assert torch.equal(a[k], b[k]), k
