"""Shared fixtures. Everything runs on CPU at tiny sizes."""
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
import os

# ../shared next to the checkout (as in CI); NEFES_SHARED points elsewhere if needed.
SHARED_REF = Path(os.environ.get("NEFES_SHARED", REPO.parent / "shared")) / "nefes-reference"

SCENES_7 = ("chess", "fire", "heads", "office", "pumpkin", "redkitchen", "stairs")
SCENES_CAMBRIDGE = ("KingsCollege", "OldHospital", "ShopFacade", "StMarysChurch")


@pytest.fixture(scope="session")
def shared_ref() -> Path:
    """../shared/nefes-reference, or skip the test with a clear message when it is absent."""
    if not SHARED_REF.is_dir():
        pytest.skip(f"reference data not found at {SHARED_REF} (fidelity test needs ../shared/nefes-reference)")
    return SHARED_REF


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: intra-op threads only add overhead (and stall badly on a busy machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_room(tmp_path_factory) -> Path:
    """A tiny synthetic 7-Scenes-layout room (64x48, 2x10 train + 4 test frames), generated once."""
    from data.synthetic import generate
    out = tmp_path_factory.mktemp("synthetic") / "room"
    generate("room", out, seed=0, width=64, height=48, n_train_seq=2, frames_per_seq=10, n_test_seq=1,
             test_frames_per_seq=4, progress=False)
    return out


TINY_FIELD = ["--field_type", "hashgrid", "--hash_level", "4", "--log2_hashmap_size", "12", "--finest_resolution", "64",
              "--hg_hidden", "16", "--N_samples", "8", "--N_importance", "4", "--N_rand", "64", "--batch_size", "2",
              "--lrate", "0.01", "--chunk", "4096"]


def tiny_nefes_args(datadir, basedir, expname, *extra) -> list:
    """Command-line arguments of a tiny NeFeS run on ``datadir`` (the tiny synthetic room)."""
    return ["--datadir", str(datadir), "--dataset_type", "7Scenes", "--basedir", str(basedir), "--expname", expname,
            "--df", "1", "--tinyscale", "2", "--trainskip", "2", "--testskip", "2", "--transient_at_test",
            "--dfnet_width", "0.125", "--strict_config", *TINY_FIELD, *map(str, extra)]


@pytest.fixture(scope="session")
def tiny_models(tiny_room, tmp_path_factory):
    """(tiny NeFeS checkpoint trained 1 epoch on the tiny room, random tiny DFNet checkpoint)."""
    import run_nefes
    from models.dfnet import DFNet, save_dfnet
    base = tmp_path_factory.mktemp("refine_models")
    assert run_nefes.main(tiny_nefes_args(tiny_room, base, "nefes", "--epochs", 1, "--i_weights", 1,
                                          "--i_testset", 5, "--stage1_color_only")) == 0
    torch.manual_seed(0)
    save_dfnet(base / "dfnet.pt", DFNet(width=0.125))
    return base / "nefes" / "000000.tar", base / "dfnet.pt"


@pytest.fixture(scope="session")
def tiny_sharp_field(tiny_room, tmp_path_factory) -> Path:
    """A tiny NeFeS trained 40 colour epochs on the tiny room (~5 s on CPU): unlike the 1-epoch
    ``tiny_models`` field, its renders change clearly with the pose, so a loss has a clear minimum."""
    import run_nefes
    base = tmp_path_factory.mktemp("sharp_field")
    assert run_nefes.main(tiny_nefes_args(tiny_room, base, "nefes", "--epochs", 40, "--i_weights", 40,
                                          "--i_testset", 1000, "--stage1_color_only")) == 0
    return sorted((base / "nefes").glob("*.tar"))[-1]


def refinement_problem(datadir, nefes_ckpt):
    """What a direct-refinement test needs on the tiny room, every test frame:
    dict(nefes (frozen), cam (RenderCamera, 8+4 samples), gt (N, 3, 4), hists (N, 10), imgs (N, 3, H, W), fused (the fused
    maps at the true poses, render size), working (H, W))."""
    from config.options import parse_args
    from dataset_loaders import load_scene
    from dm.refine_apr import RenderCamera
    from models.nefes import load_nefes
    args = parse_args(tiny_nefes_args(datadir, "/tmp", "x", "--testskip", 1))
    scene = load_scene(args)
    nefes, _ = load_nefes(nefes_ckpt, "cpu", args)
    nefes.requires_grad_(False)
    h, w, f = scene.render_size(args.tinyscale)
    cam = RenderCamera(h, w, f, scene.near, scene.far, scene.world_setup, 8, 4, True)
    gt = torch.as_tensor(scene.test.poses, dtype=torch.float32)
    hists = torch.stack([scene.test[i]["hist"] for i in range(len(gt))])
    imgs = torch.stack([scene.test[i]["img"] for i in range(len(gt))])
    with torch.no_grad():
        fused = cam.render(nefes, gt, hists)["fused"]
    return dict(nefes=nefes, cam=cam, gt=gt, hists=hists, imgs=imgs, fused=fused, working=(scene.H, scene.W))
