"""eval.py: scoring result files from the command line, --config mode, errors, --paper_tables."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import dataset_loaders
from dm import metrics

REPO = Path(__file__).resolve().parent.parent


def _load_eval():
    spec = importlib.util.spec_from_file_location("nefes_eval", REPO / "eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


nefes_eval = _load_eval()


def _run(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("NEFES_DEBUG", None)
    return subprocess.run([sys.executable, "eval.py", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture()
def files(tmp_path):
    """GT of 4 identity-rotation poses; pred shifted along x by 0.015, 0.03, 0.3, 1.0 m (no rotation error)."""
    gt = np.zeros((4, 3, 4))
    gt[:, :, :3] = np.eye(3)
    gt[:, :, 3] = np.arange(12.0).reshape(4, 3)
    pred = gt.copy()
    pred[:, 0, 3] += [0.015, 0.03, 0.3, 1.0]
    return SimpleNamespace(gt=metrics.save_pose_file(tmp_path / "gt.txt", gt),
                           pred=metrics.save_pose_file(tmp_path / "pred.txt", pred),
                           exact=metrics.save_pose_file(tmp_path / "exact.txt", gt), poses=gt, tmp=tmp_path)


def test_cli_gt_pred_json(files):
    out = files.tmp / "out" / "res.json"
    proc = _run("--gt", files.gt, "--pred", files.pred, "--json", out)
    assert proc.returncode == 0, proc.stderr
    assert "median" in proc.stdout and "n = 4" in proc.stdout
    res = json.loads(out.read_text())
    assert res["n"] == 4
    assert res["median_t"] == pytest.approx((0.03 + 0.3) / 2, abs=1e-6)
    assert res["mean_t"] == pytest.approx((0.015 + 0.03 + 0.3 + 1.0) / 4, abs=1e-6)
    assert res["median_r"] == pytest.approx(0.0, abs=1e-6) and res["mean_r"] == pytest.approx(0.0, abs=1e-6)
    assert res["recalls"]["0.25m_2deg"] == 0.5 and res["recalls"]["0.02m_2deg"] == 0.25
    assert res["recalls"]["0.01m_1deg"] == 0.0 and res["recalls"]["5m_10deg"] == 1.0
    assert set(res["recalls"]) == {metrics.recall_key(t, r) for t, r in metrics.RECALL_THRESHOLDS}


def test_cli_bad_file_one_line_exit_2(files):
    bad = files.tmp / "bad.txt"
    bad.write_text("1 2 3\n")
    proc = _run("--gt", files.gt, "--pred", bad)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "Traceback" not in proc.stderr


def test_mismatched_counts_and_nothing_to_do(files, capsys):
    short = metrics.save_pose_file(files.tmp / "short.txt", files.poses[:3])
    assert nefes_eval.main(["--gt", str(files.gt), "--pred", str(short)]) == 2
    err = capsys.readouterr().err
    assert "3 poses" in err and "has 4" in err and str(short) in err
    assert nefes_eval.main([]) == 2
    assert "nothing to evaluate" in capsys.readouterr().err
    assert nefes_eval.main(["--gt", str(files.gt), "--pred", str(files.pred), "--name", "a", "--name", "b"]) == 2
    assert nefes_eval.main(["--gt", str(files.gt), "--pred", str(files.pred), "--pred", str(files.pred)]) == 2
    assert "names must differ" in capsys.readouterr().err
    assert nefes_eval.main(["--gt", str(files.tmp / "missing.txt"), "--pred", str(files.pred)]) == 2
    assert "missing.txt: pose file not found" in capsys.readouterr().err


def test_several_predictions_with_names_and_plots(files, capsys):
    out = files.tmp / "cmp.json"
    rc = nefes_eval.main(["--gt", str(files.gt), "--pred", str(files.pred), "--pred", str(files.exact),
                          "--name", "APR", "--name", "APR+NeFeS", "--json", str(out),
                          "--plot_dir", str(files.tmp / "plots")])
    assert rc == 0
    table = capsys.readouterr().out.splitlines()
    assert table[1].startswith("APR ") and table[2].startswith("APR+NeFeS")
    res = json.loads(out.read_text())
    assert list(res["methods"]) == ["APR", "APR+NeFeS"]
    assert res["methods"]["APR+NeFeS"]["median_t"] == 0.0 and res["methods"]["APR+NeFeS"]["recalls"]["0.01m_1deg"] == 1.0
    assert res["methods"]["APR"]["pred"] == str(files.pred)
    for name in ("trajectories.png", "error_cdf.png"):
        assert (files.tmp / "plots" / name).stat().st_size > 1000


def test_config_mode_gt_from_loader_and_default_prediction(files, monkeypatch, capsys):
    """--config: GT from load_scene(args).test.poses; PRED found in <basedir>/<expname>/."""
    seen = {}

    def fake_load_scene(args):
        seen["datadir"] = args.datadir
        return SimpleNamespace(test=SimpleNamespace(poses=files.poses))

    monkeypatch.setattr(dataset_loaders, "load_scene", fake_load_scene, raising=False)
    scene_dir = files.tmp / "data" / "chess"
    scene_dir.mkdir(parents=True)
    cfg = files.tmp / "config_chess_DFM.txt"
    cfg.write_text(f"datadir = {scene_dir}\nbasedir = {files.tmp / 'logs'}  # comment\nexpname = exp\n"
                   "dataset_type = 7Scenes_colmap\npose_only = 2\n")
    # no result yet: one clear line
    assert nefes_eval.main(["--config", str(cfg)]) == 2
    assert "pass --pred" in capsys.readouterr().err
    result = files.tmp / "logs" / "exp" / "DFNet_chess_NeFeS50_APR_pose_results.txt"
    metrics.save_pose_file(result, np.loadtxt(files.pred))
    out = files.tmp / "cfg.json"
    assert nefes_eval.main(["--config", str(cfg), "--json", str(out)]) == 0
    assert seen["datadir"] == str(scene_dir)
    res = json.loads(out.read_text())
    assert res["pred"] == str(result) and res["median_t"] == pytest.approx(0.165, abs=1e-6)
    # explicit --pred wins over the default
    assert nefes_eval.main(["--config", str(cfg), "--pred", str(files.exact), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["median_t"] == 0.0


def test_cli_paper_tables(shared_ref, tmp_path):
    out = tmp_path / "tables.json"
    proc = _run("--paper_tables", "--root", shared_ref / "paper_result", "--json", out)
    assert proc.returncode == 0, proc.stderr
    assert "Table 1" in proc.stdout and "Table 2" in proc.stdout and "mean of medians" in proc.stdout
    res = json.loads(out.read_text())
    assert res["Cambridge"]["scenes"]["ShopFacade"]["DFNet+NeFeS50"]["median_t"] == pytest.approx(0.1487, abs=1e-4)


def test_paper_tables_missing_root(tmp_path, capsys):
    assert nefes_eval.main(["--paper_tables", "--root", str(tmp_path)]) == 2
    assert str(tmp_path) in capsys.readouterr().err
