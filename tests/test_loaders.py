"""Dataset loaders on tiny fake scenes: counts, order, APR poses, intrinsics, images, hist, masks, errors."""
import shutil

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import scene_fixtures as F
from core import frames
from dataset_loaders import DatasetError, images, load_scene

CHESS_WORLD = {"near": 0, "far": 2, "pose_scale": 0.5, "pose_scale2": 1, "move_all_cam_vec": [0.0, 0.0, 1.0]}


def _rigid(seed):
    return F.random_c2w(1, seed=seed, max_angle=170.0, spread=3.0)[0]


def _homog(p):
    out = np.tile(np.eye(4), (len(p), 1, 1))
    out[:, :3] = p
    return out


# ----------------------------------------------------------------------------------------------
# 7-Scenes
# ----------------------------------------------------------------------------------------------
def test_7scenes_counts_order_and_apr_poses(tmp_path):
    fake = F.make_7scenes(tmp_path, train_seqs=(2, 1), test_seqs=(3,), frames_per_seq=5)
    A = _rigid(9)
    F.write_meta(fake.datadir, pose_avg=A, world=CHESS_WORLD)
    scene = load_scene(F.make_args(fake.datadir, "7Scenes", trainskip=2, testskip=3))
    # frame ids on disk are 0,3,6,10,13 (written in reverse); skip 2 per sequence -> 0,6,13
    assert scene.train.names[:3] == [f"seq-02/frame-{i:06d}.color.png" for i in (0, 6, 13)]
    assert scene.train.names[3:] == [f"seq-01/frame-{i:06d}.color.png" for i in (0, 6, 13)]
    assert scene.test.names == ["seq-03/frame-000000.color.png", "seq-03/frame-000010.color.png"]
    assert scene.train.gt_idx.tolist() == [0, 6, 13, 5, 11, 18]  # sequence offset (5 files) + frame id
    expected = frames.opencv_c2w_to_apr(fake.poses_c2w("train", 2), A)
    np.testing.assert_allclose(scene.train.poses, expected, atol=1e-9)
    np.testing.assert_allclose(scene.test.poses, frames.opencv_c2w_to_apr(fake.poses_c2w("test", 3), A), atol=1e-9)
    item = scene.train[4]
    assert item["pose"].dtype == torch.float32 and item["pose"].shape == (12,)
    np.testing.assert_allclose(item["pose"].numpy(), expected[4].reshape(12), atol=1e-6)
    assert item["idx"] == 4 and item["hist"].shape == (10,) and item["img"].shape == (3, 24, 32)
    assert "mask" not in item
    assert scene.provenance["pose_avg"].startswith("read from") and "pose_avg_stats.txt" in scene.provenance["pose_avg"]
    assert (scene.near, scene.far) == (0.0, 2.0) and scene.world_setup.pose_scale == 0.5


@pytest.mark.parametrize("where", ["image", "datadir", "colmap_poses"])
def test_colmap_list_lookup_and_apr_poses(tmp_path, where):
    fake = F.make_7scenes(tmp_path, colmap=where, focal_list=26.5)
    A = _rigid(4)
    F.write_meta(fake.datadir, colmap_avg=A, world=CHESS_WORLD)
    scene = load_scene(F.make_args(fake.datadir, "7Scenes_colmap", trainskip=2))
    w2c = F.invert(fake.poses_c2w("train", 2))
    np.testing.assert_allclose(scene.train.poses, frames.colmap_w2c_to_apr(w2c, A), atol=1e-9)
    assert scene.train.names == fake.names("train", 2)
    folder = {"image": fake.image_root, "datadir": fake.datadir,
              "colmap_poses": tmp_path / "7Scenes_colmap_poses" / "chess"}[where]
    assert str(folder / "chess_train.txt") in scene.provenance["poses"]
    assert scene.focal_raw == pytest.approx(26.5) and "pose_avg_stats_colmap.txt" in scene.provenance["pose_avg"]


@pytest.mark.parametrize("dtype", ["7Scenes", "7Scenes_colmap"])
def test_single_folder_layout(tmp_path, dtype):
    fake = F.make_7scenes(tmp_path, layout="single")
    scene = load_scene(F.make_args(fake.datadir, dtype))
    assert scene.train.names == fake.names("train") and len(scene.test) == 5
    assert scene.provenance["images"] == str(fake.datadir)
    assert (fake.datadir / ("pose_avg_stats_colmap.txt" if dtype == "7Scenes_colmap" else "pose_avg_stats.txt")).is_file()


def test_auto_frames_of_dslam_and_colmap_coincide_for_the_same_cameras(tmp_path):
    """Same cameras through both ground-truth formats: the automatic centring gives the same APR frame,
    and in any case the two differ by one rigid world transform (same camera axes)."""
    fake = F.make_7scenes(tmp_path)
    d = load_scene(F.make_args(fake.datadir, "7Scenes"))
    c = load_scene(F.make_args(fake.datadir, "7Scenes_colmap"))
    for split in ("train", "test"):
        Pd, Pc = _homog(getattr(d, split).poses), _homog(getattr(c, split).poses)
        G = Pc[0] @ np.linalg.inv(Pd[0])
        np.testing.assert_allclose(G @ Pd, Pc, atol=1e-9)
        assert np.linalg.det(G[:3, :3]) == pytest.approx(1.0)
        np.testing.assert_allclose(getattr(c, split).poses, getattr(d, split).poses, atol=1e-9)
    for s in (d, c):  # documented centring: centroid at the origin, mean viewing direction -z
        np.testing.assert_allclose(s.train.poses[:, :, 3].mean(0), 0.0, atol=1e-9)
        v = -s.train.poses[:, :, 2].mean(0)
        np.testing.assert_allclose(v / np.linalg.norm(v), [0, 0, -1], atol=1e-9)


def test_intrinsics_and_working_size(tmp_path):
    fake = F.make_7scenes(tmp_path, h=24, w=32, focal_list=26.5)
    s = load_scene(F.make_args(fake.datadir, "7Scenes", df=2))
    assert (s.H_raw, s.W_raw, s.H, s.W) == (24, 32, 12, 16)
    assert s.focal_raw == pytest.approx(585 * 32 / 640) and s.focal == pytest.approx(585 * 32 / 640 / 2)
    assert s.render_size(4) == (3, 4, pytest.approx(585 * 32 / 640 / 8))
    s = load_scene(F.make_args(fake.datadir, "7Scenes", df=1.5))
    assert (s.H, s.W) == (16, 21) and s.focal == pytest.approx(29.25 / 1.5)
    assert s.train[0]["img"].shape == (3, 16, 21)
    s = load_scene(F.make_args(fake.datadir, "7Scenes", df=2, focal=30))
    assert s.focal_raw == 30 and s.focal == 15 and "--focal" in s.provenance["focal"]
    s = load_scene(F.make_args(fake.datadir, "7Scenes_colmap", df=2))
    assert s.focal == pytest.approx(26.5 / 2)
    cam = F.make_cambridge(tmp_path, w=40, h=24)
    s = load_scene(F.make_args(cam.datadir, "Cambridge", df=2))
    assert s.focal_raw == pytest.approx(744 * 40 / 854) and (s.H, s.W) == (12, 20)


def test_images_are_float_inter_area_resizes_and_cache_is_consistent(tmp_path):
    fake = F.make_7scenes(tmp_path)
    s = load_scene(F.make_args(fake.datadir, "7Scenes", df=2))
    raw = (np.asarray(Image.open(fake.image_root / s.train.names[2]).convert("RGB")) / 255.0).astype(np.float32)
    want = cv2.resize(raw, (16, 12), interpolation=cv2.INTER_AREA).transpose(2, 0, 1)
    got = s.train[2]["img"]
    assert got.dtype == torch.float32 and np.abs(got.numpy() - want).max() < 1e-5
    items = torch.stack([s.train[i]["img"] for i in range(len(s.train))])
    allimg = s.train.images()
    assert allimg.shape == (10, 3, 12, 16) and torch.equal(allimg, items)
    assert torch.equal(s.train[2]["img"], items[2])
    # df = 1: exactly k / 255, as ToTensor on the PIL image
    s1 = load_scene(F.make_args(fake.datadir, "7Scenes"))
    raw_u8 = np.asarray(Image.open(fake.image_root / s1.test.names[0]).convert("RGB"))
    assert torch.equal(s1.test[0]["img"], torch.from_numpy(raw_u8.transpose(2, 0, 1).copy()).float() / 255)
    # no cache: same values, nothing kept
    s2 = load_scene(F.make_args(fake.datadir, "7Scenes", "--cache_images", "False", df=2))
    assert torch.equal(s2.train[2]["img"], got) and not s2.train._u16
    assert torch.equal(s2.train.hists, s.train.hists)


def test_dataloader_batches(tmp_path):
    fake = F.make_7scenes(tmp_path)
    s = load_scene(F.make_args(fake.datadir, "7Scenes", df=2))
    batch = next(iter(torch.utils.data.DataLoader(s.train, batch_size=4, shuffle=False)))
    assert batch["img"].shape == (4, 3, 12, 16) and batch["pose"].shape == (4, 12) and batch["hist"].shape == (4, 10)


# ----------------------------------------------------------------------------------------------
# histogram
# ----------------------------------------------------------------------------------------------
def test_histogram_by_hand_grey_rows():
    # 24 rows x 32: 5 rows grey 13 (Y=.051, bin 0), 7 rows 89 (.349, bin 3), 6 rows 166 (.651, bin 6),
    # 6 rows 242 (.949, bin 9) -> 160/768=20.83%, 224/768=29.17%, 25%, 25%
    img = np.zeros((24, 32, 3), np.uint8)
    img[:5], img[5:12], img[12:18], img[18:] = 13, 89, 166, 242
    h = images.luminance_histogram(torch.from_numpy(images.to_working(img, (24, 32), 1.0).transpose(2, 0, 1).copy()))
    assert h.dtype == torch.float32
    assert h.tolist() == [21, 0, 0, 29, 0, 0, 25, 0, 0, 25]


def test_histogram_by_hand_luma_weights():
    # pure blue / red / green: Y = 0.114 (bin 1), 0.299 (bin 2), 0.587 (bin 5); a third each -> 33 %
    img = np.zeros((24, 32, 3), np.uint8)
    img[:8, :, 2] = 255
    img[8:16, :, 0] = 255
    img[16:, :, 1] = 255
    h = images.luminance_histogram(torch.from_numpy(images.to_working(img, (24, 32), 1.0).transpose(2, 0, 1).copy()))
    assert h.tolist() == [0, 33, 33, 0, 0, 33, 0, 0, 0, 0]


def test_loader_hist_is_computed_at_working_size(tmp_path):
    fake = F.make_7scenes(tmp_path)
    img = np.zeros((24, 32, 3), np.uint8)
    img[:5], img[5:12], img[12:18], img[18:] = 13, 89, 166, 242
    s = load_scene(F.make_args(fake.datadir, "7Scenes"))
    Image.fromarray(img).save(fake.image_root / s.train.names[0])
    s = load_scene(F.make_args(fake.datadir, "7Scenes"))
    assert s.train[0]["hist"].tolist() == [21, 0, 0, 29, 0, 0, 25, 0, 0, 25]
    assert s.train.hists[0].tolist() == [21, 0, 0, 29, 0, 0, 25, 0, 0, 25]
    s2 = load_scene(F.make_args(fake.datadir, "7Scenes", df=2))  # hist of the resized float image
    work = images.to_working(img, (12, 16), 2.0)
    assert torch.equal(s2.train[0]["hist"], images.luminance_histogram(torch.from_numpy(work.transpose(2, 0, 1).copy())))


# ----------------------------------------------------------------------------------------------
# Cambridge
# ----------------------------------------------------------------------------------------------
def test_cambridge_sorting_poses_and_preload(tmp_path):
    cam = F.make_cambridge(tmp_path, n_train=6, n_test=3, semantic=False)
    A = _rigid(5)
    F.write_meta(cam.datadir, pose_avg=A, world=CHESS_WORLD)
    s = load_scene(F.make_args(cam.datadir, "Cambridge", trainskip=2))
    names = sorted(F.cambridge_names(6))
    assert names[0].startswith("seq10_")  # lexicographic: seq10_* before seq1_*
    assert s.train.names == [f"train/rgb/{n}" for n in names[::2]]
    c2w = np.stack([cam.c2w[n] for n in s.train.names])
    np.testing.assert_allclose(s.train.poses, frames.opencv_c2w_to_apr(c2w, A), atol=1e-9)
    assert s.train._images is not None and s.test._images is not None  # pre-loaded, as the original
    lazy = load_scene(F.make_args(cam.datadir, "Cambridge", trainskip=2), preload=False)
    assert lazy.train._images is None and torch.equal(lazy.train[1]["img"], s.train[1]["img"])


def test_cambridge_masks_at_render_size(tmp_path):
    cam = F.make_cambridge(tmp_path, h=24, w=40, semantic=True)
    s = load_scene(F.make_args(cam.datadir, "Cambridge", "--semantic", tinyscale=4))
    m = s.train[0]["mask"]
    assert m.dtype == torch.bool and m.shape == (6, 10) == s.render_size(4)[:2]
    assert m[:, :5].all() and not m[:, 5:].any()
    assert s.test[0]["mask"].shape == (6, 10)
    assert "mask" not in load_scene(F.make_args(cam.datadir, "Cambridge")).train[0]


def test_shopfacade_quirk(tmp_path):
    cam = F.make_cambridge(tmp_path, scene="ShopFacade", n_train=45, n_test=2, h=8, w=12)
    s = load_scene(F.make_args(cam.datadir, "Cambridge", "--semantic", tinyscale=4))
    names = [f"train/rgb/{n}" for n in sorted(F.cambridge_names(45))]
    kept = [n for i, n in enumerate(names) if i not in (35, 42)]
    assert len(s.train) == 43 and s.train.names == kept and s.train.masks.shape[0] == 43
    assert len(s.test) == 2 and "ShopFacade" in s.provenance["notes"]
    s2 = load_scene(F.make_args(cam.datadir, "Cambridge", trainskip=2))
    assert s2.train.names == kept[::2]
    c2w = np.stack([cam.c2w[n] for n in s2.train.names])
    np.testing.assert_allclose(s2.train.poses, frames.opencv_c2w_to_apr(c2w, s2.pose_avg), atol=1e-9)


def test_cambridge_calibration_warning(tmp_path, caplog):
    cam = F.make_cambridge(tmp_path, w=40, calib_focal=744 * 40 / 854 * 1.1)
    s = load_scene(F.make_args(cam.datadir, "Cambridge"))
    assert s.focal_raw == pytest.approx(744 * 40 / 854)  # warned, not changed
    assert any("calibration" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


# ----------------------------------------------------------------------------------------------
# errors: one line naming the file
# ----------------------------------------------------------------------------------------------
def _err(args, *fragments):
    with pytest.raises(DatasetError) as ei:
        s = load_scene(args)
        s.train.images()
        s.test.images()
    msg = str(ei.value)
    assert "\n" not in msg
    for f in fragments:
        assert str(f) in msg, msg
    return msg


def test_error_missing_datadir_and_image_folder(tmp_path):
    _err(F.make_args(tmp_path / "nope", "7Scenes"), tmp_path / "nope", "not found")
    (tmp_path / "7Scenes" / "chess").mkdir(parents=True)
    _err(F.make_args(tmp_path / "7Scenes" / "chess", "7Scenes"), tmp_path / "deepslam_data" / "7Scenes" / "chess")
    _err(F.make_args(tmp_path / "7Scenes" / "chess", "Cambridge"), tmp_path / "7Scenes" / "chess" / "train" / "rgb")


def test_error_split_files_and_sequences(tmp_path):
    fake = F.make_7scenes(tmp_path)
    (fake.image_root / "TestSplit.txt").unlink()
    _err(F.make_args(fake.datadir, "7Scenes"), fake.image_root / "TestSplit.txt")
    (fake.image_root / "TestSplit.txt").write_text("sequence3\nsequence9\n")
    _err(F.make_args(fake.datadir, "7Scenes"), fake.image_root / "seq-09", "TestSplit.txt")
    (fake.image_root / "seq-09").mkdir()
    (fake.image_root / "TestSplit.txt").write_text("sequence9\n")
    _err(F.make_args(fake.datadir, "7Scenes"), "TestSplit.txt", "zero test frames")
    (fake.image_root / "TestSplit.txt").write_text("seq 3\n")
    _err(F.make_args(fake.datadir, "7Scenes"), "TestSplit.txt", "sequenceK")


def test_error_bad_images(tmp_path):
    fake = F.make_7scenes(tmp_path)
    bad = fake.image_root / "seq-03" / "frame-000003.color.png"
    bad.write_bytes(bad.read_bytes()[:60])  # truncated PNG
    _err(F.make_args(fake.datadir, "7Scenes"), bad, "cannot read image")
    F.write_image(bad, 20, 32)
    _err(F.make_args(fake.datadir, "7Scenes"), bad, "32x20")  # wrong size


@pytest.mark.parametrize("content, fragment", [("1 2 3\n", "16 numbers"), ("a b c\n", "non-numeric"),
                                               ("nan " * 16, "NaN"),
                                               ("2 0 0 0\n0 2 0 0\n0 0 2 0\n0 0 0 1\n", "orthonormal")])
def test_error_bad_pose_files(tmp_path, content, fragment):
    fake = F.make_7scenes(tmp_path)
    bad = fake.image_root / "seq-01" / "frame-000006.pose.txt"
    bad.write_text(content)
    _err(F.make_args(fake.datadir, "7Scenes"), bad, fragment)


def test_error_colmap_list(tmp_path):
    fake = F.make_7scenes(tmp_path)
    lst = fake.image_root / "chess_train.txt"
    lines = lst.read_text().splitlines()
    victim = [ln for ln in lines if ln.startswith("seq-01/frame-000010")][0]
    lst.write_text("\n".join(ln for ln in lines if ln != victim) + "\n")
    _err(F.make_args(fake.datadir, "7Scenes_colmap"), lst, "seq-01/frame-000010.color.png")
    lst.write_text("seq-01/frame-000000.color.png 1 0 0\n")
    _err(F.make_args(fake.datadir, "7Scenes_colmap"), f"{lst}:1", "9 fields")
    lst.unlink()
    (fake.image_root / "chess_test.txt").unlink()
    _err(F.make_args(fake.datadir, "7Scenes_colmap"), "chess_train.txt", "not found")


def test_error_cambridge(tmp_path):
    cam = F.make_cambridge(tmp_path, semantic=False)
    _err(F.make_args(cam.datadir, "Cambridge", "--semantic"), cam.datadir / "train" / "semantic")
    victim = sorted((cam.datadir / "test" / "poses").iterdir())[1]
    victim.unlink()
    _err(F.make_args(cam.datadir, "Cambridge"), cam.datadir / "test", "3 images", "2 pose files")


def test_error_unknown_dataset_type_and_skip(tmp_path):
    fake = F.make_7scenes(tmp_path)
    args = F.make_args(fake.datadir, "7Scenes")
    args.dataset_type = "LLFF"
    _err(args, "LLFF")
    _err(F.make_args(fake.datadir, "7Scenes", trainskip=0), "trainskip")


def test_histogram_matches_the_torch_histc_recipe():
    """Our numpy binning = the original's torch.histc recipe, including every grey level (bin edges)."""
    g = torch.Generator().manual_seed(0)
    imgs = [torch.randint(0, 256, (3, 30, 40), generator=g).float() / 255 for _ in range(5)]
    imgs.append(torch.arange(256).float().div(255).reshape(1, 16, 16).expand(3, 16, 16))
    for img in imgs:
        y = 0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2]
        ref = torch.histc(y, bins=10, min=0.0, max=1.0)
        assert torch.equal(images.luminance_histogram(img), torch.round(ref / ref.sum() * 100))


def test_frustum_bounds_single_camera():
    from dataset_loaders.scene import SceneData, Split
    c2w = np.concatenate([np.eye(3), np.zeros((3, 1))], 1)[None]
    split = Split("train", [], ["x"], c2w, (24, 32), (24, 32), 1.0)
    ws = frames.WorldSetup(near=0, far=2, pose_scale=1, pose_scale2=1, move_all_cam_vec=[0, 0, 1])
    s = SceneData("s", "7Scenes", None, split, split, 24, 32, 16.0, 24, 32, 16.0, 0.0, 2.0, ws, c2w[0])
    # camera at (0, 0, 1) in NeRF, looking along -z; far corners at z = 1 - 2, x = ±2·16/16, y = ±2·12/16
    np.testing.assert_allclose(s.frustum_bounds(), [[-2, -1.5, -1], [2, 1.5, 1]])


def test_colmap_loader_reproduces_paper_test_gt(shared_ref, tmp_path):
    """Full loader path (split order, sorted frames, list lookup, shipped pose_avg_stats) against the
    paper's chess test ground truth. Only file names matter for the test poses: empty pose files."""
    ref = shared_ref / "data"
    d = tmp_path / "chess"
    d.mkdir()
    for f in ("chess_test.txt", "chess_train.txt"):
        shutil.copy(ref / "7Scenes_colmap_poses" / "chess" / f, d / f)
    for f in ("pose_avg_stats_colmap.txt", "world_setup.json"):
        shutil.copy(ref / "7Scenes" / "chess" / f, d / f)
    (d / "TrainSplit.txt").write_text("sequence1\n")
    (d / "TestSplit.txt").write_text("sequence3\nsequence5\n")
    for seq, n in (("seq-01", 2), ("seq-03", 1000), ("seq-05", 1000)):
        (d / seq).mkdir()
        for i in range(n):
            (d / seq / f"frame-{i:06d}.pose.txt").touch()
    F.write_image(d / "seq-01" / "frame-000000.color.png", 48, 64)
    s = load_scene(F.make_args(d, "7Scenes_colmap", "--load_pose_avg_stats", df=2))
    gt = np.loadtxt(shared_ref / "paper_result" / "DFNet_NeFeS50_7Scenes_colmap" / "chess" / "chess_test_gt.txt")
    assert len(s.test) == 2000 and s.focal == pytest.approx(526.22 * 64 / 64 / 2)
    assert np.abs(s.test.poses.reshape(-1, 12) - gt).max() < 1e-6
    assert s.test.gt_idx.tolist() == list(range(2000))


def test_seven_scenes_pose_file_of_12_numbers_is_its_3x4_top(tmp_path):
    """issue 14: decided and documented: a pose file without the constant last row is accepted."""
    from dataset_loaders.seven_scenes import read_pose_file
    fake = F.make_7scenes(tmp_path)
    path = fake.image_root / "seq-01" / "frame-000006.pose.txt"
    full = read_pose_file(path)
    rows = path.read_text().split()
    path.write_text(" ".join(rows[:12]) + "\n")
    np.testing.assert_array_equal(read_pose_file(path), full)
    load_scene(F.make_args(fake.datadir, "7Scenes"))                     # the loader takes it too


def test_seven_scenes_transposed_pose_matrix_is_an_error(tmp_path):
    fake = F.make_7scenes(tmp_path)
    path = fake.image_root / "seq-01" / "frame-000006.pose.txt"
    M = np.array(path.read_text().split(), dtype=float).reshape(4, 4)
    M[:3, 3] = [0.5, -0.2, 1.0]
    path.write_text("\n".join(" ".join(map(str, r)) for r in M.T) + "\n")
    _err(F.make_args(fake.datadir, "7Scenes"), path, "not [0, 0, 0, 1]")


def test_an_emptied_sequence_folder_is_reported_with_the_counts(tmp_path, caplog):
    import logging
    fake = F.make_7scenes(tmp_path)
    for p in (fake.image_root / "seq-01").glob("*.pose.txt"):
        p.unlink()
    with caplog.at_level(logging.WARNING):
        scene = load_scene(F.make_args(fake.datadir, "7Scenes"))
    assert "seq-02: 5, seq-01: 0" in caplog.text and "train split" in caplog.text
    assert len(scene.train) == 5
