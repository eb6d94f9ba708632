"""The one parser: original config files run unchanged, ours carry the same keys and values."""
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from config import options

REPO = Path(__file__).resolve().parent.parent


def _kv(path):
    out = {}
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "=" in line:
            k, v = (s.strip() for s in line.split("=", 1))
            out[k] = v
    return out


def test_original_configs_parse_unchanged(shared_ref, caplog):
    files = sorted((shared_ref / "config").glob("*/dfnet/*.txt"))
    assert len(files) == 33
    with caplog.at_level(logging.WARNING):
        for f in files:
            args = options.parse_args(["--config", str(f)])
            assert args.tinyscale == 4.0 and args.df == 2.0
            if f.stem.endswith("DFM"):
                assert args.pose_only == 2 and args.svd_reg and args.learning_rate == 1e-5
                assert args.no_verification_step == ("Cambridge" in str(f))
            else:
                assert args.semantic == ("Cambridge" in str(f))
                assert args.new_schedule == (2 if f.stem.endswith("stage2") else 1)
    assert not [r for r in caplog.records if "unknown key" in r.message]


def test_project_configs_mirror_the_original(shared_ref):
    for f in sorted((shared_ref / "config").glob("*/dfnet/*.txt")):
        ours = REPO / "config" / f.relative_to(shared_ref / "config")
        assert ours.is_file(), f"missing project config {ours}"
        a, b = _kv(f), _kv(ours)
        assert a.keys() == b.keys(), ours
        for k in a:
            assert a[k].replace("../", "./") == b[k], (ours, k)


def test_unknown_key_warns_and_legacy_key_is_accepted(tmp_path, caplog):
    cfg = tmp_path / "c.txt"
    cfg.write_text("df=2 # inline comment\nsvd_reg=True\nNeRFW=True\nmade_up_key=3\n")
    with caplog.at_level(logging.INFO):
        args = options.parse_args(["--config", str(cfg)])
    assert args.df == 2.0 and args.svd_reg is True
    assert any("made_up_key" in r.message and r.levelno == logging.WARNING for r in caplog.records)
    assert any("NeRFW" in r.message for r in caplog.records)


def _run(*argv):
    return subprocess.run([sys.executable, "-c", "import sys; from config.options import parse_args; parse_args(sys.argv[1:])", *argv],
                          cwd=REPO, capture_output=True, text=True)


def test_bad_inputs_give_one_clear_line(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("df=abc\n")
    r = _run("--config", str(bad))
    assert r.returncode == 2 and "--df" in r.stderr and "abc" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = _run("--config", str(tmp_path / "nope.txt"))
    assert r.returncode == 2 and "config file not found" in r.stderr and "nope.txt" in r.stderr
    r = _run("--not_an_option", "1")
    assert r.returncode == 2 and "not_an_option" in r.stderr
    r = _run("--dataset_type", "KITTI")
    assert r.returncode == 2 and "KITTI" in r.stderr


def test_legacy_script_relative_paths_map_to_repo(monkeypatch):
    """(A name nothing beside the checkout holds: a ``../logs`` next to the repository exists as written
    and is rightly kept, so the test must not depend on what surrounds the checkout.)"""
    import uuid
    monkeypatch.chdir(REPO)
    name = f"logs_{uuid.uuid4().hex}"
    assert not (REPO.parent / name).exists()
    assert options.resolve_path(f"../{name}") == str(REPO / name)
    assert options.resolve_path("/abs/path") == "/abs/path"


def test_device_auto_is_cpu_here_or_cuda():
    import torch
    dev = options.get_device("auto")
    assert dev.type == ("cuda" if torch.cuda.is_available() else "cpu")


# ----------------------------------------------------------------------------------------------
# legacy keys: one mechanism, one warning per key set to a value other than its silent one
# ----------------------------------------------------------------------------------------------
def _no_effect(caplog):
    return [r.message for r in caplog.records if "has no effect" in r.message]


def test_legacy_keys_warn_once_and_leave_the_namespace(tmp_path, caplog):
    cfg = tmp_path / "c.txt"
    cfg.write_text("num_workers=4\ndfnet=True\nmodel_name=DFM_NFF_APR\nval_batch_size=1\nNeRFW=True\n")
    with caplog.at_level(logging.WARNING):
        args = options.parse_args(["--config", str(cfg), "--use_viewdirs", "False", "--feature_matching_lvl", "0", "1"])
    msgs = _no_effect(caplog)
    for key in ("num_workers", "NeRFW", "use_viewdirs", "feature_matching_lvl"):
        assert sum(f"'{key}' is accepted for compatibility with the original configs" in m for m in msgs) == 1, key
    assert len(msgs) == 4            # dfnet=True, model_name and val_batch_size=1 are the silent values
    assert not any(hasattr(args, key) for key in options.LEGACY_KEYS)


def test_original_configs_trigger_no_legacy_warning(shared_ref, caplog):
    with caplog.at_level(logging.WARNING):
        for f in sorted((shared_ref / "config").glob("*/dfnet/*.txt")):
            options.parse_args(["--config", str(f)])
    assert not _no_effect(caplog)


def test_legacy_keys_are_not_read_anywhere():
    """A key in LEGACY_KEYS has no effect: no code reads ``args.<key>`` (nor getattr(args, "<key>"))."""
    import re
    code = {p: p.read_text() for d in ("core", "config", "models", "dataset_loaders", "dm", "data", "bench")
            for p in (REPO / d).rglob("*.py")}
    code.update({p: p.read_text() for p in REPO.glob("*.py")})
    for key in options.LEGACY_KEYS:
        pat = re.compile(rf"args\.{key}\b|getattr\(args, \"{key}\"")
        assert not [str(p) for p, s in code.items() if pat.search(s)], key


# ----------------------------------------------------------------------------------------------
# one home for defaults
# ----------------------------------------------------------------------------------------------
def _signature_defaults(fn) -> dict:
    import inspect
    return {k: v.default for k, v in inspect.signature(fn).parameters.items() if v.default is not inspect.Parameter.empty}


def test_parser_and_code_share_their_defaults():
    import dataclasses

    from core import defaults
    from dm.refine_apr import APRRefineSettings, RenderCamera
    from dm.refine_pose import PoseRefineSettings
    from models.dfnet_training import DFNetTrainConfig
    from models.fields import HashGridField
    from models.hashgrid import HashGridEncoding
    from models.nefes import HASHGRID_KEYS, hparams_from_args
    from models.renderer import render_rays

    args = options.parse_args([])
    assert {k: getattr(args, k) for k in HASHGRID_KEYS} == defaults.HASHGRID
    hp = hparams_from_args(args)
    assert {k: hp[k] for k in HASHGRID_KEYS} == defaults.HASHGRID
    field = _signature_defaults(HashGridField)
    assert (field["hash_level"], field["hash_features"], field["log2_hashmap_size"], field["base_resolution"],
            field["finest_resolution"], field["hidden"], field["geo_dim"]) == tuple(
        defaults.HASHGRID[k] for k in ("hash_level", "hash_features", "log2_hashmap_size", "base_resolution",
                                       "finest_resolution", "hg_hidden", "hg_geo_dim"))
    enc = _signature_defaults(HashGridEncoding)
    assert (enc["n_levels"], enc["n_features_per_level"], enc["log2_hashmap_size"], enc["base_resolution"]) == tuple(
        defaults.HASHGRID[k] for k in ("hash_level", "hash_features", "log2_hashmap_size", "base_resolution"))
    rr = _signature_defaults(render_rays)
    assert (args.chunk, args.netchunk) == (rr["chunk"], rr["netchunk"]) == (defaults.CHUNK, defaults.NETCHUNK)
    cam = {f.name: f.default for f in dataclasses.fields(RenderCamera) if f.default is not dataclasses.MISSING}
    assert (cam["chunk"], cam["netchunk"], cam["N_samples"], cam["N_importance"]) == (
        args.chunk, args.netchunk, args.N_samples, args.N_importance)
    apr = APRRefineSettings()
    assert (apr.opt_iter, apr.learning_rate, apr.svd_reg, apr.per_pixel, apr.crop, apr.verification) == (
        args.opt_iter, args.learning_rate, args.svd_reg, args.per_pixel, args.refine_crop, not args.no_verification_step)
    pose = PoseRefineSettings()
    assert (pose.opt_iter, pose.lr_r, pose.lr_t, pose.per_pixel) == (args.opt_iter, args.lr_r, args.lr_t, args.per_pixel)
    # DFNet training: the keys it shares with NeFeS / refinement (epochs, learning_rate) have their own defaults
    cfg, from_args = DFNetTrainConfig(), DFNetTrainConfig.from_args(args)
    for f in dataclasses.fields(DFNetTrainConfig):
        if f.name not in ("epochs", "learning_rate"):
            assert getattr(cfg, f.name) == getattr(from_args, f.name), f.name


# ----------------------------------------------------------------------------------------------
# typed errors; the entry points own the thread count
# ----------------------------------------------------------------------------------------------
def test_bad_values_raise_config_errors():
    import pytest

    from core.errors import ConfigError
    with pytest.raises(ConfigError, match="hist_bin=5"):
        options.parse_args(["--hist_bin", "5"])
    with pytest.raises(ConfigError, match="num_threads=-1"):
        options.parse_args(["--num_threads", "-1"])


def test_parse_args_leaves_the_thread_count_to_the_entry_point():
    import torch
    n = torch.get_num_threads()
    try:
        args = options.parse_args(["--num_threads", str(n + 1)])
        assert torch.get_num_threads() == n
        options.apply_num_threads(args)
        assert torch.get_num_threads() == n + 1
    finally:
        torch.set_num_threads(n)


ENTRY_POINTS = ["run_nefes.py", "train_dfnet.py", "test_refinement.py", "eval.py", "-m dataset_loaders.inspect"]


def test_entry_points_turn_config_errors_into_one_line_and_exit_2(tmp_path):
    for entry in ENTRY_POINTS:
        cmd = [sys.executable, *entry.split(), "--hist_bin", "5", "--datadir", str(tmp_path)]
        if "inspect" in entry:
            cmd += ["--out", str(tmp_path / "o")]
        r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and lines == ["error: hist_bin=5: only 10 bins are supported (the ACT takes 10 inputs)"], \
            (entry, r.returncode, r.stderr[-1000:])


def test_misspelled_config_key_suggests_the_nearest_and_strict_makes_it_an_error(tmp_path, caplog):
    """issue 14: ``learing_rate`` in a config file used to warn and run with the default."""
    import pytest
    from core.errors import ConfigError
    cfg = tmp_path / "c.txt"
    cfg.write_text("learing_rate = 3e-5\n")
    with caplog.at_level(logging.WARNING):
        args = options.parse_args(["--config", str(cfg)])
    assert args.learning_rate == 1e-5                                      # the original's behaviour: a warning
    assert "did you mean learning_rate?" in caplog.text and "--strict_config" in caplog.text
    with pytest.raises(ConfigError, match="unknown key 'learing_rate' .did you mean learning_rate.."):
        options.parse_args(["--config", str(cfg), "--strict_config"])
    cfg.write_text("strict_config = True\nlearing_rate = 3e-5\n")           # strict from the file itself
    with pytest.raises(ConfigError, match="learing_rate"):
        options.parse_args(["--config", str(cfg)])


def test_basin_methods_do_not_inherit_the_demo_configs_project_options():
    """bench.basin refines with the synthetic demo's config, which turns the photometric polish on:
    its rows must mean what their names say (``paper`` is the paper's mode alone, ``lm`` uses forward
    differences), whatever that config's defaults become."""
    from bench.basin import METHODS
    from config.options import parse_args
    cfg = ["--config", str(REPO / "config" / "synthetic" / "config_room_DFM.txt")]
    base = parse_args(cfg)
    assert base.lm_polish > 0 and base.lm_jacobian == "flow"     # what would leak without the overrides
    for name in ("paper", "pose_adam", "lm"):
        assert parse_args(cfg + METHODS[name]).lm_polish == 0, name
    assert parse_args(cfg + METHODS["lm"]).lm_jacobian == "fd"
    polish = parse_args(cfg + METHODS["polish"])
    assert (polish.pose_only, polish.lm_polish, polish.lm_polish_start, polish.lm_jacobian) == (2, 6, True, "flow")


def test_basin_success_is_also_reported_over_the_queries_the_field_renders():
    """bench.basin separates an optimiser's failures from a field's: success over all queries and over
    those whose field PSNR at the truth reaches --field_ok (success: error halved and below 1 deg / 1 %)."""
    import numpy as np
    from bench.basin import report, summarize
    zero, five = np.zeros(4), np.full(4, 5.0)
    t1, r1 = np.array([0.001, 0.001, 0.001, 0.001]), np.array([0.2, 3.0, 0.4, 4.0])   # 2 of 4 succeed
    s = summarize(zero, five, t1, r1, np.full(4, 3.0), np.array([True, True, True, False]),
                  flagged=np.array([False, True, False, True]))
    assert (s["n"], s["success"], s["n_rendered"]) == (4, 0.5, 3)
    assert (s["n_flagged"], s["flagged_failed"]) == (2, 2)
    assert abs(s["success_rendered"] - 2 / 3) < 1e-12
    none = summarize(zero, five, t1, r1, np.full(4, 3.0), np.zeros(4, dtype=bool))
    assert none["n_rendered"] == 0 and none["success_rendered"] is None
    text = report([dict(method="m", start="rot5", summary=s, seconds_per_query=1.0),
                   dict(method="m", start="rot5", summary=none, seconds_per_query=1.0)])
    assert "67% of  3           2 ( 2)" in text and "-  of  0           0 ( 0)" in text


def test_basin_counts_the_failures_the_objective_prefers_to_the_truth():
    """A failure that ends at or below the truth's photometric loss is the objective's (the field's), not
    the optimiser's: bench.basin counts those among the failures."""
    import numpy as np
    from bench.basin import report, summarize
    zero, five = np.zeros(4), np.full(4, 5.0)
    t1, r1 = np.full(4, 0.001), np.array([0.2, 3.0, 4.0, 0.3])               # queries 1 and 2 fail
    s = summarize(zero, five, t1, r1, np.full(4, 3.0), objective_bound=np.array([True, True, False, False]))
    assert (s["n_failed"], s["failed_objective_bound"]) == (2, 1)            # query 0 succeeded: not counted
    assert summarize(zero, five, t1, r1, np.full(4, 3.0))["failed_objective_bound"] == 0
    assert report([dict(method="m", start="rot5", summary=s, seconds_per_query=1.0)]).splitlines()[1].endswith("1 of   2")


def test_basin_coverage_splits_success_by_the_queries_distance_to_a_similar_view(tmp_path, capsys):
    import json
    from bench import basin_coverage
    # spread 10 m: coverage 1 %, 2 %, 6 %, none; the first and third succeed (5 deg -> 0.2 deg)
    scene = {"spread_m": 10.0, "query_similar_view_m": [0.1, 0.2, 0.6, None],
             "errors": {"t0": [0, 0, 0, 0], "r0": [5, 5, 5, 5], "t1": [0, 0, 0, 0], "r1": [0.2, 3.0, 0.2, 4.0]}}
    assert basin_coverage.split(scene, [4, 8]) == [("<= 4 %", 2, 0.5), ("4-8 %", 1, 1.0), ("> 8 %", 1, 0.0)]
    assert basin_coverage.split(scene, [0.5])[0] == ("<= 0.5 %", 0, None)
    result = tmp_path / "b.json"
    result.write_text(json.dumps([{"method": "polish", "start": "rot5", "per_scene": {"room9": scene}}]))
    assert basin_coverage.main([str(result), "--bins", "8,4"]) == 0
    assert "room9" in capsys.readouterr().out
    del scene["query_similar_view_m"]
    result.write_text(json.dumps([{"method": "polish", "start": "rot5", "per_scene": {"room9": scene}}]))
    with pytest.raises(SystemExit):
        basin_coverage.main([str(result)])
    assert "older bench.basin" in capsys.readouterr().err


def test_basin_coverage_reads_a_refinement_folder(tmp_path, capsys):
    import json
    import numpy as np
    from bench import basin_coverage
    import torch
    from core.geometry import so3_exp

    def pose(deg):   # one row of a pose file: rotated deg about z, at the origin
        R = so3_exp(torch.tensor([0.0, 0.0, np.radians(deg)], dtype=torch.float64)).numpy()
        return np.concatenate([R, np.zeros((3, 1))], 1).reshape(1, 12)
    gt, apr, ref = (np.concatenate([pose(d) for d in ds]) for ds in ((0, 0), (5, 5), (0.2, 4)))
    for name, arr in (("room_test_gt.txt", gt), ("DFNet_room_results.txt", apr),
                      ("DFNet_room_NeFeS50_APR_pose_results.txt", ref)):
        np.savetxt(tmp_path / name, arr)
    summary = {"scene": "room", "refined_file": "/elsewhere/DFNet_room_NeFeS50_APR_pose_results.txt",
               "coverage": {"train_spread_m": 10.0, "per_query_m": [0.1, None]}}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    entry = basin_coverage.refinement_entry(tmp_path)
    np.testing.assert_allclose(entry["errors"]["r0"], [5, 5], atol=1e-6)
    assert basin_coverage.split(entry, [4]) == [("<= 4 %", 1, 1.0), ("> 4 %", 1, 0.0)]
    assert basin_coverage.main([str(tmp_path), "--bins", "4"]) == 0
    assert "<= 4 %: 100 % of 1 | > 4 %: 0 % of 1" in capsys.readouterr().out
    del summary["coverage"]
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(SystemExit):
        basin_coverage.main([str(tmp_path)])
    assert "no per-query coverage" in capsys.readouterr().err


def test_basin_root_must_hold_trained_scenes(tmp_path, capsys):
    """bench.basin --root: another folder of finished pipelines; a scene missing there is an error (the
    default cache would train it instead, which a typo in --root must not start)."""
    from bench.basin import main
    (tmp_path / "street50" / "demo").mkdir(parents=True)
    with pytest.raises(SystemExit):
        main(["--root", str(tmp_path), "--scenes", "street50,room51", "--methods", "polish", "--starts", "rot5"])
    err = capsys.readouterr().err
    assert "no trained scene street50, room51" in err and "demo_summary.json" in err
