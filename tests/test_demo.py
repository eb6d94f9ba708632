"""demo.py: the orchestration runs every real entry point and collects the results (a seconds-long
smoke run with tiny overrides; the real demo's numbers come from ``python -m bench.demo``)."""
import json
import math
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import demo
from conftest import REPO, TINY_FIELD
from dm import metrics

SMOKE_NEFES = ["--epochs", "1", "--i_weights", "1", "--i_testset", "5", *TINY_FIELD]
SMOKE = {
    "stage1": SMOKE_NEFES,
    "dfnet": ["--epochs", "1", "--dfnet_width", "0.125", "--batch_size", "4", "--rvs_refresh_rate", "1",
              "--N_samples", "8", "--N_importance", "4"],
    "stage2": [*SMOKE_NEFES, "--epochs", "2", "--epoch_to_fusion", "1"],
    "refine": ["--opt_iter", "2", "--N_samples", "8", "--N_importance", "4"],
}


@pytest.fixture
def bare_room(tiny_room, tmp_path):
    """The tiny room with images and poses only (other tests may have written meta files into it)."""
    room = tmp_path / "room"
    shutil.copytree(tiny_room, room, ignore=shutil.ignore_patterns("world_setup*", "pose_avg*"))
    return room


def test_scene_args_adapt_to_the_scene(bare_room, tmp_path):
    args, info = demo.scene_args(bare_room, "7Scenes", tmp_path / "meta")
    assert info["df"] == 1 and info["n_train"] == 20 and info["n_test"] == 4
    assert info["nefes_skip"] == 1 and info["testskip"] == 1
    assert "--no_verification_step" not in args
    assert not any(p.name.startswith(("world_setup", "pose_avg")) for p in bare_room.iterdir())  # meta under out


def test_smoke_demo_on_an_existing_scene(bare_room, tmp_path):
    out = tmp_path / "out"
    # one process: the reruns below (refine_ablation) compare poses to the bit, at the same thread count
    summary = demo.run_demo(out, bare_room, "7Scenes", "cpu", extra=SMOKE, ranks=1)
    assert summary["world_size"] == 1 and "wall_seconds_per_query" in summary
    for key in ("apr", "refined", "seconds_per_query", "total_seconds", "seconds"):
        assert key in summary
    assert set(summary["seconds"]) == {"nefes_stage1", "dfnet", "nefes_stage2", "refinement"}
    assert all((out / "logs" / name).is_dir() for name in summary["experiments"].values())
    res = out / "logs" / "DFNet_NeFeS50_room"
    assert (res / "DFNet_room_NeFeS2_APR_pose_results.txt").is_file() and (res / "trajectories.png").is_file()
    assert json.loads((out / "demo_summary.json").read_text())["n"] == summary["n"]
    assert summary["configs"] == demo.configs_fingerprint()      # bench.scenes compares it with the configs now
    assert (out / "meta" / "world_setup.json").is_file()
    text = demo.format_summary(summary)
    assert "ratio refined / APR" in text
    cov = summary["coverage"]
    assert len(cov["per_query_m"]) == summary["n"]
    assert ("coverage: refined poses a median" in text) == (cov["median_m"] is not None)
    # the demo's polish flags queries; the summary reports the medians over those it did not flag
    assert summary["trusted"]["n"] == sum(v >= 22 for v in summary["render_psnr"]["per_query"])
    assert "trusted queries (render PSNR >= 22 dB at the refined pose): " in text

    # bench.flag_split pools finished runs and splits them by that flag
    from bench import flag_split
    run = flag_split.load_run(out)
    assert run["scene"] == "out" and len(run["psnr"]) == summary["n"]
    lines = flag_split.report([run], {}, 25.0).splitlines()
    n_trusted = int(lines[2].split("n=")[1].split()[0])
    assert lines[0].startswith(f"{summary['n']} queries from out") and n_trusted == summary["trusted"]["n"]
    walks = flag_split.walk_lines(run)
    assert len(walks) == len(set(run["walk"])) >= 1 and all(line.startswith("out seq-") for line in walks)
    with pytest.raises(SystemExit, match="demo_summary.json not found"):
        flag_split.load_run(tmp_path)

    # the refinement command stored in the summary reruns with overrides (bench.refine_ablation)
    from bench import refine_ablation
    assert refine_ablation.main(["--demo_dir", str(out), "--variants", "paper_crop_lr,demo", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "refine_ablation.json").read_text())
    assert [r["variant"] for r in rows] == ["paper_crop_lr", "demo"]
    args = (out / "logs" / "ablation_paper_crop_lr" / "args.txt").read_text()
    assert "refine_crop = 10" in args and "learning_rate = 1e-05" in args
    assert rows[1]["refined"] == summary["refined"]          # the demo variant reproduces the demo exactly

    # paired timing of two environments on the same demo (bench.refine_pair)
    from bench import refine_pair
    assert refine_pair.main(["--demo_dir", str(out), "--queries", "2", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "refine_pair.txt").read_text()
    assert "(2 queries" in text and "NEFES_CPU_KERNEL=0" in text and "b / a: median" in text
    # ... or of two sets of refinement options (worker b's appended to the demo's command)
    assert refine_pair.main(["--demo_dir", str(out), "--queries", "1", "--out", str(tmp_path),
                             "--args_b", "--lm_polish_N_importance 4"]) == 0
    lines = (tmp_path / "refine_pair.txt").read_text().splitlines()
    assert lines[1].startswith("a [unchanged]") and lines[2].startswith("b [--lm_polish_N_importance 4]")

    # how well the field renders its views (bench.field_quality): colour and depth against the depth maps
    from bench import field_quality
    assert field_quality.main(["--demo_dir", str(out), "--train_every", "5", "--out", str(tmp_path)]) == 0
    _check_field_quality((tmp_path / "field_quality.txt").read_text(), n_test=summary["n"], n_train=4)

    # where the time goes (bench.refine_profile): every piece timed, and the estimate against the whole
    from bench import refine_profile
    assert refine_profile.main(["--demo_dir", str(out), "--queries", "1", "--repeat", "1", "--ops", "5",
                                "--out", str(tmp_path)]) == 0
    text = (tmp_path / "refine_profile.txt").read_text()
    timed = dict(re.findall(r"^  (\S.*?)\s+([0-9.]+) ms", text, flags=re.M))
    assert set(timed) == {"apr", "render", "render (no grad)", "polish render", "whole query", "estimate"}
    assert all(float(v) > 0 for v in timed.values())
    assert "opt_iter 2" in text and "Self CPU" in text   # the demo's overrides; the operator table


def test_smoke_demo_on_a_cambridge_scene(tmp_path):
    """Cambridge layout (semantic masks present): no verification step, masked NeFeS losses."""
    from data.synthetic import generate
    street = tmp_path / "street"
    generate("street", street, seed=5, width=107, height=60, n_train_seq=2, frames_per_seq=4, n_test_seq=1,
             test_frames_per_seq=3, progress=False)
    args, info = demo.scene_args(street, "Cambridge", tmp_path / "meta")
    assert "--no_verification_step" in args and "--semantic" in args and info["df"] == 1
    out = tmp_path / "out"
    summary = demo.run_demo(out, street, "Cambridge", "cpu", extra=SMOKE, ranks=2)   # torchrun, one thread each
    assert summary["n"] == 3 and summary["world_size"] == 2 and summary["threads_per_rank"] >= 1
    assert "per query (wall, cpu x 2 ranks x" in demo.format_summary(summary)
    assert all(math.isfinite(summary["refined"][k]) for k in ("median_t", "median_r", "mean_t", "mean_r"))
    res = out / "logs" / "DFNet_NeFeS50_street"
    refined = metrics.load_pose_file(res / "DFNet_street_NeFeS2_APR_pose_results.txt")   # (N, 3, 4)
    assert refined.shape == (3, 3, 4) and metrics.load_pose_file(res / "street_test_gt.txt").shape == (3, 3, 4)
    R = refined[:, :, :3]                          # svd_reg: refined poses are proper rotations (text: 1e-6)
    assert np.allclose(R @ R.transpose(0, 2, 1), np.eye(3), atol=1e-5) and np.allclose(np.linalg.det(R), 1, atol=1e-5)
    assert (out / "meta" / "world_setup.json").is_file()
    # no depth maps in this layout: the true depth comes from the generator's scene, cast at the pose files
    from bench import field_quality
    assert field_quality.main(["--demo_dir", str(out), "--out", str(tmp_path)]) == 0
    _check_field_quality((tmp_path / "field_quality.txt").read_text(), n_test=3, n_train=1)

    # the refinement's wall clock as one process and as two ranks (bench.refine_ranks)
    from bench import refine_ranks
    # (one thread per process in both, so that each query's float computation is the same: equal poses)
    assert refine_ranks.main(["--demo_dirs", str(out), "--ranks", "1,2", "--repeat", "1", "--out", str(tmp_path),
                              "--args", "--num_threads 1"]) == 0
    rows = json.loads((tmp_path / "refine_ranks.json").read_text())
    assert [r["ranks"] for r in rows] == [1, 2] and rows[0]["speedup"] == 1.0
    assert [r["threads_per_rank"] for r in rows] == [1, 1] and all(r["wall_s_per_query"] > 0 and r["n"] == 3 for r in rows)
    assert rows[1]["max_diff_t"] == 0.0 and rows[1]["max_diff_r"] < 1e-6
    assert "| 2 x " in (tmp_path / "refine_ranks.txt").read_text()


def test_refinement_processes(monkeypatch):
    """One rank per core on a CPU (at most one per query), one on a GPU, the user's number when given."""
    import torch
    from dm import distributed
    monkeypatch.setattr(distributed, "available_cores", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert demo.refine_ranks("auto", 0, 20) == 2 and demo.refine_ranks("cpu", 0, 1) == 1
    assert demo.refine_ranks("cpu", 3, 20) == 3 and demo.refine_ranks("cuda", 0, 20) == 1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert demo.refine_ranks("auto", 0, 20) == 1 and demo.refine_ranks("cpu", 0, 20) == 2
    assert demo.launcher(1) == ([sys.executable], {})
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    prefix, env = demo.launcher(2)
    assert prefix[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"] and env == {"OMP_NUM_THREADS": "1"}
    with pytest.raises(SystemExit):
        demo.main(["--refine_ranks", "-1"])
    # bench.demo checks the time target on the wall clock the user waits, not on each query's own time
    from dm.refine_run import waited_per_query
    assert waited_per_query({"seconds_per_query": 5.0, "wall_seconds_per_query": 2.5}) == 2.5
    assert waited_per_query({"seconds_per_query": 5.0, "wall_seconds_per_query": None}) == 5.0   # nothing refined
    assert waited_per_query({"seconds_per_query": 5.0}) == 5.0                                    # an older summary
    from bench.demo import report
    m = dict(device="cpu", nefes_stage1_minutes=3, nefes_stage1_psnr=30, nefes_minutes=7, nefes_psnr=30, dfnet_minutes=4,
             apr_t=0.1, apr_r=2, refined_t=0.01, refined_r=0.2, ratio_t=0.1, ratio_r=0.1, seconds_per_query=5.1,
             seconds_per_query_median=5.0, wall_seconds_per_query=2.6, refine_ranks=2, demo_minutes=14)
    line = [x for x in report(m).splitlines() if "refinement:" in x][0]
    assert "2.60 s per query (wall clock, 2 process(es); each query 5.10 s" in line and line.endswith("ok)")


def test_refinement_falls_back_to_one_process(monkeypatch, tmp_path):
    """A several-process refinement that fails (torchrun unable to start) is retried once as one process."""
    from core.errors import StepFailed
    calls = []

    def fake_run_step(name, cmd, log, env=None):
        calls.append(cmd)
        if "torch.distributed.run" in cmd:
            raise StepFailed("APR + NeFeS refinement (2 processes) failed (exit code 1)")
        return 1.0
    monkeypatch.setattr(demo, "run_step", fake_run_step)
    assert demo.refine_step(2, ["test_refinement.py", "--config", "c.txt"], tmp_path / "log") >= 1.0
    assert calls[1] == [sys.executable, "test_refinement.py", "--config", "c.txt"] and len(calls) == 2
    calls.clear()
    assert demo.refine_step(1, ["test_refinement.py"], tmp_path / "log") == 1.0 and len(calls) == 1
    monkeypatch.setattr(demo, "run_step", lambda *a, **k: (_ for _ in ()).throw(StepFailed("bad config")))
    with pytest.raises(StepFailed, match="bad config"):     # the one-process retry's own error reaches the user
        demo.refine_step(2, ["test_refinement.py"], tmp_path / "log")
    failing = []
    monkeypatch.setattr(demo, "run_step", lambda name, cmd, *a: failing.append(cmd) or (_ for _ in ()).throw(StepFailed("x")))
    with pytest.raises(StepFailed):                          # one process already: no second try
        demo.refine_step(1, ["test_refinement.py"], tmp_path / "log")
    assert len(failing) == 1


def _check_field_quality(text: str, n_test: int, n_train: int) -> None:
    rows = {m[0]: m[1:] for m in re.findall(r"^  (test|train)\s+(\d+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9]+)%$", text, re.M)}
    assert set(rows) == {"test", "train"}, text
    assert int(rows["test"][0]) == n_test and int(rows["train"][0]) == n_train
    for views, psnr, depth_err, within in rows.values():
        assert 0 < float(psnr) < 60 and 0 <= float(depth_err) < 10 and 0 <= int(within) <= 100


def test_field_quality_true_depth_is_the_generators_depth(tiny_room):
    """The two sources of true depth agree: the depth maps a 7-Scenes layout stores, and the generator's
    scene cast again at the frame's pose file (the only source for a Cambridge layout)."""
    import numpy as np
    from bench import field_quality
    synthetic = field_quality._synthetic_scene(tiny_room)
    assert synthetic is not None
    image = sorted(tiny_room.glob("seq-*/frame-*.color.png"))[3]
    from_png = field_quality.true_depth(image, synthetic, 24, 32)
    cast = field_quality.cast_depth(synthetic, np.loadtxt(field_quality._pose_file(image)), 24, 32)
    ok = np.isfinite(from_png) & np.isfinite(cast)
    assert ok.mean() > 0.9
    rel = np.abs(from_png[ok] - cast[ok]) / cast[ok]
    assert np.median(rel) < 0.02 and (rel < 0.05).mean() > 0.8
    # and a wrong pose (the camera moved 0.3 m along its axis) does not agree
    c2w = np.loadtxt(field_quality._pose_file(image))
    c2w[:3, 3] += 0.3 * c2w[:3, 2]
    moved = field_quality.cast_depth(synthetic, c2w, 24, 32)
    ok = np.isfinite(from_png) & np.isfinite(moved)
    assert np.median(np.abs(from_png[ok] - moved[ok]) / moved[ok]) > 0.05


def test_cli_rejects_a_scene_without_dataset_type(tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "demo.py"), "--scene", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and "--dataset_type" in r.stderr


def test_coverage_line_reads_the_summary():
    line, = demo._coverage_line({"median_m": 0.5, "train_spread_m": 10.0, "within_deg": 15.0,
                                 "without_similar_view": 2, "per_query_m": [0.5, None, None]})
    assert "median 0.500 m (5.0 %" in line and "within 15 deg" in line and line.endswith("2 with none")
    assert demo._coverage_line(None) == [] and demo._coverage_line({"median_m": None}) == []


def test_cached_benchmark_scene_trained_under_other_configs_is_flagged(tmp_path, monkeypatch, capsys):
    """bench.scenes reuses a trained scene but says so when the synthetic configs changed since."""
    import shutil
    from bench import scenes
    configs = tmp_path / "configs"
    shutil.copytree(demo.CONFIGS, configs)
    monkeypatch.setattr(demo, "CONFIGS", configs)
    spec = next(iter(scenes.ALL.values()))
    out = tmp_path / spec.name / "demo"
    out.mkdir(parents=True)
    (out / "demo_summary.json").write_text(json.dumps({"n": 3, "configs": demo.configs_fingerprint()}))
    assert scenes.ensure_trained(spec, root=tmp_path)["n"] == 3
    assert "warning" not in capsys.readouterr().out
    stage1 = configs / "config_room_stage1.txt"
    stage1.write_text(stage1.read_text().replace("N_importance=16", "N_importance=8"))
    assert scenes.ensure_trained(spec, root=tmp_path)["n"] == 3          # reused, not retrained ...
    assert f"warning: {out} was trained under other synthetic configs" in capsys.readouterr().out   # ... but flagged


def test_benchmark_scene_trained_with_another_seed_goes_to_its_own_root(tmp_path, monkeypatch):
    """bench.scenes --root R --train_seed N: the pipeline goes to R/<scene>/demo with --seed N for every
    training step, on the cache's data; a training seed without a root (the cache) is refused."""
    from bench import scenes
    calls = []
    monkeypatch.setattr(scenes, "ensure_scene", lambda spec, root=scenes.ROOT: calls.append(("data", root)) or tmp_path / "data")
    monkeypatch.setattr(demo, "run_demo", lambda out, *a, extra=None, **k: calls.append(("run", out, extra)) or {
        "apr": {"median_t": 1.0, "median_r": 2.0}, "refined": {"median_t": 0.5, "median_r": 1.0}})
    assert scenes.main(["--scenes", "street49", "--root", str(tmp_path / "seed1"), "--train_seed", "1"]) == 0
    assert calls[0] == ("data", scenes.ROOT)
    assert calls[1][1] == tmp_path / "seed1" / "street49" / "demo"
    assert calls[1][2] == {k: ["--seed", "1"] for k in ("stage1", "dfnet", "stage2")}
    for argv in (["--scenes", "street49", "--train_seed", "1"], ["--scenes", "street99"]):
        with pytest.raises(SystemExit):
            scenes.main(argv)


def test_walk_of_a_frame_name_in_each_layout():
    from bench.flag_split import walk_of
    assert walk_of("seq-03/frame-000000.color.png") == "seq-03"                 # 7-Scenes
    assert walk_of("seq1/frame00001.png") == "seq1"                             # Cambridge
    assert walk_of("test/rgb/seq4_frame00001.png") == "seq4"                    # Cambridge, flat (synthetic)


def test_benchmark_scene_groups_never_share_a_seed():
    """Each benchmark scene has a seed of its own (a name clash would silently drop a scene from ``ALL``),
    and none is the demo's or the tests' scene seed."""
    from bench import scenes
    groups = [scenes.TUNE, scenes.HOLDOUT, scenes.FRESH, scenes.FRESH2, scenes.FRESH3, scenes.FRESH4, scenes.FRESH5]
    seeds = [s.seed for g in groups for s in g.values()]
    assert len(seeds) == len(set(seeds)) == len(scenes.ALL)
    assert not set(seeds) & {0, 3, 4, 5}


def test_basin_renders_a_method_under_its_own_world_setup(tiny_room, tmp_path):
    """bench.basin: a method that overrides ``meta_dir`` (a field trained with another far bound) gets the
    scene loaded under that world setup; one that would change the APR frame of the queries is refused."""
    from bench.basin import SceneContext
    from config.options import parse_args
    from conftest import tiny_nefes_args
    from dataset_loaders import load_scene
    room = tmp_path / "room"      # a private copy without meta files (other tests may have written them beside the images)
    shutil.copytree(tiny_room, room)
    for f in [*room.glob("world_setup*.json"), *room.glob("pose_avg_stats*.txt")]:
        f.unlink()
    base = tiny_nefes_args(room, tmp_path, "x")
    ctx = SceneContext.__new__(SceneContext)                 # the parts scene_for reads, without training a scene
    ctx.args = parse_args(base + ["--meta_dir", str(tmp_path / "a")])
    ctx.scene = load_scene(ctx.args)
    assert ctx.scene_for(ctx.args) is ctx.scene
    ws = json.loads((tmp_path / "a" / "world_setup.json").read_text())
    (tmp_path / "b").mkdir()
    shutil.copy(tmp_path / "a" / "pose_avg_stats.txt", tmp_path / "b")
    (tmp_path / "b" / "world_setup.json").write_text(json.dumps({**ws, "pose_scale2": 2 * ws["pose_scale2"]}))
    other = ctx.scene_for(parse_args(base + ["--meta_dir", str(tmp_path / "b")]))
    assert other.world_setup.scale == pytest.approx(2 * ctx.scene.world_setup.scale)
    assert np.allclose(other.test.poses, ctx.scene.test.poses)
    (tmp_path / "c").mkdir()
    avg = np.loadtxt(tmp_path / "a" / "pose_avg_stats.txt")
    avg[:, 3] += 0.5                                          # another centring: another APR frame
    np.savetxt(tmp_path / "c" / "pose_avg_stats.txt", avg)
    shutil.copy(tmp_path / "a" / "world_setup.json", tmp_path / "c")
    with pytest.raises(SystemExit, match="APR frame"):
        ctx.scene_for(parse_args(base + ["--meta_dir", str(tmp_path / "c")]))
