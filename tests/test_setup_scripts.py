"""data/setup_7scenes.py and data/setup_cambridge.py on tiny archives built offline."""
import importlib.util
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.spatial.transform import Rotation

import scene_fixtures as F
from core import frames
from dataset_loaders import load_scene

REPO = Path(__file__).resolve().parent.parent


def _load_script(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "data" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


setup_7scenes = _load_script("setup_7scenes")
setup_cambridge = _load_script("setup_cambridge")

WORLD = {"near": 0, "far": 2, "pose_scale": 0.5, "pose_scale2": 1, "move_all_cam_vec": [0.0, 0.0, 1.0]}


def _png_bytes(h, w, seed):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------
# 7-Scenes
# ----------------------------------------------------------------------------------------------
def _seven_scenes_zip(tmp_path):
    """chess.zip as Microsoft ships it: chess/{Train,Test}Split.txt + chess/seq-XX.zip (inner archives)."""
    stage = F.make_7scenes(tmp_path / "stage", layout="single", colmap="image")
    zips = tmp_path / "zips"
    zips.mkdir()
    with zipfile.ZipFile(zips / "chess.zip", "w") as outer:
        for split in ("TrainSplit.txt", "TestSplit.txt"):
            outer.write(stage.image_root / split, f"chess/{split}")
        for seq_dir in sorted(stage.image_root.glob("seq-*")):
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as inner:
                for f in sorted(seq_dir.iterdir()):
                    inner.write(f, f"{seq_dir.name}/{f.name}")
            outer.writestr(f"chess/{seq_dir.name}.zip", buf.getvalue())
    meta = tmp_path / "meta"
    F.write_meta(meta / "7Scenes" / "chess", pose_avg=np.eye(3, 4), colmap_avg=np.eye(3, 4), world=WORLD)
    (meta / "7Scenes_colmap_poses" / "chess").mkdir(parents=True)
    for s in ("train", "test"):
        (meta / "7Scenes_colmap_poses" / "chess" / f"chess_{s}.txt").write_bytes((stage.image_root / f"chess_{s}.txt").read_bytes())
    return stage, zips, meta


def test_setup_7scenes_from_zips_with_meta(tmp_path):
    stage, zips, meta = _seven_scenes_zip(tmp_path)
    out = tmp_path / "data"
    assert setup_7scenes.main(["--zips", str(zips), "--scenes", "chess", "--out", str(out), "--meta", str(meta)]) == 0
    img_dir = out / "deepslam_data" / "7Scenes" / "chess"
    assert (img_dir / "seq-01" / "frame-000000.color.png").is_file() and not list(img_dir.glob("seq-*.zip"))
    assert (img_dir / "chess_train.txt").is_file() and (out / "7Scenes" / "chess" / "chess_test.txt").is_file()
    assert json.loads((out / "7Scenes" / "chess" / "world_setup.json").read_text()) == WORLD
    for dtype in ("7Scenes", "7Scenes_colmap"):
        s = load_scene(F.make_args(out / "7Scenes" / "chess", dtype))
        assert s.train.names == stage.names("train") and s.provenance["pose_avg"].startswith("read from")
        assert len(s.test) == 5 and s.train[0]["img"].shape == (3, 24, 32)
    s = load_scene(F.make_args(out / "7Scenes" / "chess", "7Scenes"))
    np.testing.assert_allclose(s.train.poses, frames.opencv_c2w_to_apr(stage.poses_c2w("train"), np.eye(3, 4)), atol=1e-9)


def test_setup_7scenes_rejects_bad_archives(tmp_path, capsys):
    zips = tmp_path / "zips"
    zips.mkdir()
    with zipfile.ZipFile(zips / "fire.zip", "w") as zf:
        zf.writestr("../evil.txt", "x")
    assert setup_7scenes.main(["--zips", str(zips), "--scenes", "fire", "--out", str(tmp_path / "o")]) == 2
    assert "outside" in capsys.readouterr().err and not (tmp_path / "evil.txt").exists()
    assert setup_7scenes.main(["--zips", str(zips), "--scenes", "heads", "--out", str(tmp_path / "o")]) == 2
    assert "heads.zip" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# Cambridge
# ----------------------------------------------------------------------------------------------
CAMS = {  # name: (focal, centre, quaternion w-first (world->camera))
    "seq1/frame00001": (1670.0, [1.0, 2.0, 3.0], [0.9, 0.1, -0.3, 0.2]),
    "seq1/frame00002": (1680.0, [-4.0, 0.5, 1.0], [0.5, 0.5, 0.5, -0.5]),
    "seq2/frame00003": (1660.0, [2e5, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]),   # |t| > 10000: outlier
    "seq2/frame00001": (1675.0, [0.0, -1.0, 2.0], [0.7, -0.1, 0.6, 0.2]),  # test image
}
NOT_IN_NVM = "seq1/frame00009"


def _unit(q):
    q = np.asarray(q, float)
    return q / np.linalg.norm(q)


def _cambridge_zip(tmp_path, h=12, w=16):
    zips = tmp_path / "zips"
    zips.mkdir()
    nvm = ["NVM_V3", "", str(len(CAMS))]
    for n, (f, c, q) in CAMS.items():
        nvm.append(f"{n}.jpg {f} " + " ".join(f"{v:.10f}" for v in [*_unit(q), *c]) + " 0 0")
    nvm += ["", "0", ""]
    header = "Visual Landmark Dataset V1\nImageFile, Camera Position [X Y Z W P Q R]\n\n"

    def row(n, c, q):
        return f"{n}.png " + " ".join(f"{v:.10f}" for v in [*c, *_unit(q)])

    train = [row(n, CAMS[n][1], CAMS[n][2]) for n in ("seq1/frame00001", "seq1/frame00002", "seq2/frame00003")]
    train.append(row(NOT_IN_NVM, [0, 0, 0], [1, 0, 0, 0]))
    test = [row("seq2/frame00001", CAMS["seq2/frame00001"][1], CAMS["seq2/frame00001"][2])]
    with zipfile.ZipFile(zips / "KingsCollege.zip", "w") as zf:
        zf.writestr("KingsCollege/reconstruction.nvm", "\n".join(nvm))
        zf.writestr("KingsCollege/dataset_train.txt", header + "\n".join(train) + "\n")
        zf.writestr("KingsCollege/dataset_test.txt", header + "\n".join(test) + "\n")
        for k, n in enumerate([*CAMS, NOT_IN_NVM]):
            zf.writestr(f"KingsCollege/{n}.png", _png_bytes(h, w, k))
    with zipfile.ZipFile(tmp_path / "Cambridge_semantic.zip", "w") as zf:
        for split, names in (("train", ["seq1_frame00001", "seq1_frame00002"]), ("test", ["seq2_frame00001"])):
            for n in names:
                buf = io.BytesIO()
                Image.fromarray(np.full((480, 640), 255, np.uint8)).save(buf, format="PNG")
                zf.writestr(f"Cambridge_semantic/KingsCollege_semantic_{split}/{n}.png", buf.getvalue())
    meta = tmp_path / "meta" / "Cambridge_world_setup" / "KingsCollege"
    F.write_meta(meta, pose_avg=np.eye(3, 4), world=WORLD)
    return zips


def test_setup_cambridge_conversion(tmp_path):
    zips = _cambridge_zip(tmp_path)
    out = tmp_path / "data"
    rc = setup_cambridge.main(["--zips", str(zips), "--scenes", "KingsCollege", "--out", str(out),
                               "--semantic_zip", str(tmp_path / "Cambridge_semantic.zip"), "--meta", str(tmp_path / "meta")])
    assert rc == 0
    scene = out / "Cambridge" / "KingsCollege"
    # filtering: not-in-nvm and outlier images dropped; '/' -> '_'
    assert sorted(p.name for p in (scene / "train" / "rgb").iterdir()) == ["seq1_frame00001.png", "seq1_frame00002.png"]
    assert sorted(p.name for p in (scene / "test" / "rgb").iterdir()) == ["seq2_frame00001.png"]
    assert not (scene / "train" / "init").exists()
    # 16x12 landscape -> height 480, width ceil(480 * 16 / 12) = 640
    assert Image.open(scene / "train" / "rgb" / "seq1_frame00001.png").size == (640, 480)
    for split, n in (("train", "seq1/frame00002"), ("test", "seq2/frame00001")):
        focal, centre, q = CAMS[n]
        stem = n.replace("/", "_")
        lines = (scene / split / "poses" / f"{stem}.txt").read_text().splitlines()
        c2w = np.array([ln.split() for ln in lines], dtype=float)
        assert c2w.shape == (4, 4)
        R_w2c = Rotation.from_quat([q[1], q[2], q[3], q[0]]).as_matrix()  # scipy: x, y, z, w
        np.testing.assert_allclose(c2w[:3, :3], R_w2c.T, atol=1e-9)      # inverse of [R | -R c]
        np.testing.assert_allclose(c2w[:3, 3], centre, atol=1e-9)
        np.testing.assert_allclose(c2w[3], [0, 0, 0, 1])
        assert float((scene / split / "calibration" / f"{stem}.txt").read_text()) == pytest.approx(focal * 640 / 16)
    assert (scene / "world_setup.json").is_file() and (scene / "pose_avg_stats.txt").is_file()
    assert len(list((scene / "train" / "semantic").iterdir())) == 2
    s = load_scene(F.make_args(scene, "Cambridge", "--semantic", df=2))
    assert (len(s.train), len(s.test), s.H, s.W) == (2, 1, 240, 320) and s.train[0]["mask"].all()
    assert s.focal_raw == pytest.approx(744 * 640 / 854)
    raw = np.stack([np.loadtxt(scene / "train" / "poses" / f"seq1_frame0000{i}.txt")[:3] for i in (1, 2)])
    np.testing.assert_allclose(s.train.poses, frames.opencv_c2w_to_apr(raw, np.eye(3, 4)), atol=1e-12)


def test_setup_cambridge_helpers_and_errors(tmp_path, capsys):
    assert setup_cambridge.resized_shape(1080, 1920) == (480, 854)
    assert setup_cambridge.resized_shape(16, 12) == (640, 480)  # portrait: the shorter side becomes 480
    with pytest.raises(setup_cambridge.SetupError, match="NVM_V3"):
        setup_cambridge.parse_nvm_cameras("hello\n", "x.nvm")
    with pytest.raises(setup_cambridge.SetupError, match="x.txt:4"):
        setup_cambridge.parse_dataset_list("a\nb\nc\nimg.png 1 2\n", "x.txt")
    zips = tmp_path / "z"
    zips.mkdir()
    (zips / "ShopFacade.zip").write_bytes(b"not a zip")
    assert setup_cambridge.main(["--zips", str(zips), "--scenes", "ShopFacade", "--out", str(tmp_path / "o")]) == 2
    assert "ShopFacade.zip" in capsys.readouterr().err
