"""The refinement as a batch job (dm.refine_run): torchrun shards, the journal and resuming after kill -9,
stale and unwritable outputs, previews and frame names.

End-to-end runs use the tiny room with 4 test queries, 2 iterations and no verification step (every
refined pose is the optimiser's own, not the APR's). Runs that are compared use one intra-op thread each
(a different thread count changes float summation order: ~1e-6 apart, measured) and the pure-PyTorch hash
grid (``NEFES_CPU_KERNEL=0``: no kernel build in each subprocess). With both fixed, each query's
refinement depends only on that query, so the result files must be byte-identical.
"""
import errno
import json
import logging
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from config.options import parse_args
from conftest import REPO, tiny_nefes_args
from dataset_loaders import load_scene
from dataset_loaders.inspect import view_coverage
from dm import distributed
from dm.refine_journal import Journal, describe_changes, file_identity
from dm.metrics import pose_errors
from dm.refine_run import merge, plan
from dm.previews import pick_queries

RESULTS = ("room_test_gt.txt", "room_test_frames.txt", "DFNet_room_results.txt", "DFNet_room_NeFeS2_APR_pose_results.txt")


# ----------------------------------------------------------------------------------------------
# pure parts
# ----------------------------------------------------------------------------------------------
def test_plan_deals_unfinished_queries_round_robin_and_owns_each_journalled_query_once():
    # rank 0 and 1 share a folder (same node), rank 2 is on a node of its own that finished query 7
    shards, owner = plan(10, [[0, 3], [0, 3], [3, 7]], 3)
    assert owner == {0: 0, 3: 0, 7: 2}
    assert shards == [[1, 5, 9], [2, 6], [4, 8]]                      # the 7 unfinished ones, dealt in turn
    assert plan(3, [[]], 1) == ([[0, 1, 2]], {})


def test_merge_puts_entries_in_loader_order_and_rejects_missing_or_duplicate_queries():
    parts = [{2: "c", 0: "a"}, {1: "b"}]
    assert merge(parts, 3) == ["a", "b", "c"]
    with pytest.raises(RuntimeError, match="missing"):
        merge([{0: "a"}], 2)
    with pytest.raises(RuntimeError, match="twice"):
        merge([{0: "a"}, {0: "a"}], 1)


def test_thread_share_divides_the_cores_among_the_ranks_of_a_machine():
    assert distributed.thread_share(0, 2, cores=2) == 1
    assert distributed.thread_share(0, 4, cores=16) == 4
    assert distributed.thread_share(0, 3, cores=2) == 1        # never 0
    assert distributed.thread_share(3, 4, cores=16) == 3       # --num_threads wins


def test_torchrun_environment():
    assert distributed.from_env({}) == distributed.Dist()
    d = distributed.from_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"})
    assert (d.rank, d.world_size, d.local_rank, d.local_world_size, d.is_main, d.is_local_main) == (3, 4, 1, 2, False, False)
    with pytest.raises(distributed.DistributedError, match="RANK is not set"):
        distributed.from_env({"WORLD_SIZE": "2"})
    with pytest.raises(distributed.DistributedError, match="RANK=2"):
        distributed.from_env({"WORLD_SIZE": "2", "RANK": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"})


def test_pick_queries():
    assert pick_queries(10, None) == [0, 3, 6, 9]
    assert pick_queries(2, None) == [0, 1] and pick_queries(0, None) == []
    assert pick_queries(10, [5, 0, 5]) == [5, 0] and pick_queries(10, []) == []
    with pytest.raises(ValueError, match=r"preview_queries \[10\].*0\.\.9"):
        pick_queries(10, [1, 10])


def test_file_identity_follows_content_not_path(tmp_path):
    a, b = tmp_path / "a.tar", tmp_path / "sub" / "b.tar"
    b.parent.mkdir()
    data = np.random.default_rng(0).bytes(3 << 20)                 # 3 MiB: head and tail are hashed
    a.write_bytes(data)
    b.write_bytes(data)
    assert file_identity(a) == file_identity(b) and file_identity(a)["size"] == 3 << 20
    b.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))               # last byte changed
    assert file_identity(a) != file_identity(b)
    assert file_identity(None) is None and file_identity(tmp_path / "nope") == {"missing": str(tmp_path / "nope")}


def test_journal_round_trip_is_bit_exact_and_other_settings_are_discarded(tmp_path, caplog):
    import torch
    names = ["f0.png", "f1.png", "f2.png"]
    fp = {"opt_iter": 50, "learning_rate": 1e-5, "ft_path": {"size": 1, "sha256_ends": "ab" * 32}}
    j = Journal(tmp_path / "journal", fp, names)
    j.prepare()
    pose = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))            # float32 as refinement returns
    rough = np.random.default_rng(1).standard_normal((3, 4)) / 3                   # float64 with all its digits
    j.record(0, pose, {"losses": [0.1, 1 / 3], "reverted": False, "psnr": torch.tensor(20.5)}, 1.5)
    e2 = j.record(2, rough, {"losses": [], "reverted": True}, 0.25)
    done = Journal(tmp_path / "journal", fp, names).load()
    assert sorted(done) == [0, 2]
    assert np.array_equal(np.array(done[0]["pose"]), pose.double().numpy().reshape(12))
    assert np.array_equal(np.array(done[2]["pose"]), rough.reshape(12)) and done[2] == e2
    assert done[0]["info"] == {"losses": [0.1, 1 / 3], "reverted": False, "psnr": 20.5}
    # same settings: kept; another learning rate: discarded, the warning names it
    Journal(tmp_path / "journal", fp, names).prepare()
    assert len(Journal(tmp_path / "journal", fp, names).load()) == 2
    changed = {**fp, "learning_rate": 2e-5}
    with caplog.at_level(logging.WARNING):
        Journal(tmp_path / "journal", changed, names).prepare()
    assert "discarding 2 finished queries" in caplog.text and "learning_rate: 1e-05 -> 2e-05" in caplog.text
    assert Journal(tmp_path / "journal", changed, names).load() == {}
    # an entry of another fingerprint slipped in (e.g. written by a stale process) is never used
    Journal(tmp_path / "journal", fp, names).record(1, rough, {"losses": []}, 0.1)
    assert Journal(tmp_path / "journal", changed, names).load() == {}


def test_describe_changes_names_checkpoints_and_frames():
    old = {"ft_path": {"size": 10, "sha256_ends": "a" * 64}, "test_frames": {"count": 4, "sha256": "x"}, "lr_t": 0.1}
    new = {"ft_path": {"size": 12, "sha256_ends": "b" * 64}, "test_frames": {"count": 2, "sha256": "y"}, "lr_t": 0.1}
    text = describe_changes(old, new)
    assert "ft_path: another file (10 bytes" in text and "test frames: 4 -> 2 frames" in text and "lr_t" not in text


# ----------------------------------------------------------------------------------------------
# end to end on the tiny room
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def _pure_hash_grid():
    with pytest.MonkeyPatch.context() as m:
        m.setenv("NEFES_CPU_KERNEL", "0")
        yield


def _argv(tiny_room, tiny_models, basedir, expname="exp", *extra):
    nefes, dfnet = tiny_models
    return tiny_nefes_args(tiny_room, basedir, expname, "--pose_only", 2, "--opt_iter", 2, "--svd_reg",
                           "--no_verification_step", "--testskip", 1, "--num_threads", 1, "--learning_rate", 1e-5,
                           "--ft_path", nefes, "--pretrain_model_path", dfnet, "--pretrain_featurenet_path", dfnet,
                           "--preview_queries", *extra)


def _run(argv) -> int:
    import test_refinement
    return test_refinement.main([str(a) for a in argv])


def _subprocess(cmd, **kw):
    return subprocess.run([str(c) for c in cmd], cwd=REPO, capture_output=True, text=True, timeout=600, **kw)


def _files(folder: Path) -> dict:
    return {name: (folder / name).read_bytes() for name in RESULTS}


@pytest.fixture(scope="module")
def reference(tiny_room, tiny_models, tmp_path_factory, one_thread):
    """One uninterrupted single-process run: its folder and result files."""
    base = tmp_path_factory.mktemp("reference")
    assert _run(_argv(tiny_room, tiny_models, base)) == 0
    return base / "exp", _files(base / "exp")


def test_torchrun_two_ranks_write_the_single_process_files(tiny_room, tiny_models, tmp_path, reference):
    ref_dir, ref = reference
    p = _subprocess([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                     "test_refinement.py", *_argv(tiny_room, tiny_models, tmp_path)])
    assert p.returncode == 0, p.stderr[-3000:]
    out = tmp_path / "exp"
    assert _files(out) == ref                                          # same names, rows, bytes
    summary, ref_summary = (json.loads((d / "summary.json").read_text()) for d in (out, ref_dir))
    assert summary["world_size"] == 2 and len(summary["query_seconds"]) == 4
    assert summary["refined"] == ref_summary["refined"] and summary["apr"] == ref_summary["apr"]
    assert summary["improved"] == ref_summary["improved"]
    gt, apr, refined = (np.loadtxt(out / name).reshape(-1, 3, 4) for name in (RESULTS[0], *RESULTS[2:]))
    (t0, r0), (t1, r1) = pose_errors(apr, gt), pose_errors(refined, gt)
    assert summary["improved"]["both"] == pytest.approx(float(((t1 < t0) & (r1 < r0)).mean()))
    cov = summary["coverage"]                                          # per query, from the refined poses
    train = load_scene(parse_args(_argv(tiny_room, tiny_models, tmp_path))).train.poses
    similar = view_coverage(train, refined)[1]
    assert cov["per_query_m"] == [None if not np.isfinite(v) else pytest.approx(v, abs=1e-4) for v in similar]
    assert cov == ref_summary["coverage"] and cov["within_deg"] == 15.0
    journal = sorted(p.name for p in (out / "journal").glob("q*.json"))
    assert journal == [f"q{i:06d}.json" for i in range(4)]
    assert p.stdout.count("DFNet + NeFeS2: n = 4") == 1                # rank 0 alone reports
    # the wall clock spans rank 0's own queries (0 and 2) and is shared over the 4 queries of the run
    assert summary["refine_wall_seconds"] >= summary["query_seconds"][0] + summary["query_seconds"][2]
    assert summary["wall_seconds_per_query"] == pytest.approx(summary["refine_wall_seconds"] / 4)
    assert "per query (wall, cpu x 2 ranks x 1 thread;" in p.stdout


def test_torchrun_setup_error_is_one_line_and_every_rank_stops(tiny_room, tiny_models, tmp_path):
    p = _subprocess([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                     "test_refinement.py", *_argv(tiny_room, tiny_models, tmp_path, "exp", 7)])
    assert p.returncode != 0
    errors = [line for line in (p.stdout + p.stderr).splitlines() if line.startswith("error:")]
    assert errors == ["error: preview_queries [7]: the test split has 4 queries (0..3)"]
    assert not (tmp_path / "exp" / "summary.json").exists()


KILLER = """
import os, signal, sys
sys.path.insert(0, os.getcwd())
import dm.refine_journal as J
record, calls = J.Journal.record, []
def killing_record(self, *a, **k):
    entry = record(self, *a, **k)
    calls.append(1)
    if len(calls) == int(os.environ["KILL_AFTER"]):
        os.kill(os.getpid(), signal.SIGKILL)
    return entry
J.Journal.record = killing_record
import test_refinement
sys.exit(test_refinement.main(sys.argv[1:]))
"""


def test_sigkill_then_rerun_resumes_and_matches_an_uninterrupted_run(tiny_room, tiny_models, tmp_path, reference):
    argv = _argv(tiny_room, tiny_models, tmp_path)
    p = _subprocess([sys.executable, "-c", KILLER, *argv], env={**os.environ, "KILL_AFTER": "2"})
    assert p.returncode == -signal.SIGKILL, p.stderr[-3000:]
    out = tmp_path / "exp"
    assert len(list((out / "journal").glob("q*.json"))) == 2
    assert not any((out / name).exists() for name in (*RESULTS, "summary.json"))   # finals only at the end
    assert not list(out.rglob("*.tmp"))
    assert _run(argv) == 0
    assert _files(out) == reference[1]
    assert json.loads((out / "summary.json").read_text())["resumed_queries"] == 2


def test_changed_config_invalidates_the_journal_and_restart_discards_it(tiny_room, tiny_models, tmp_path, caplog,
                                                                       one_thread):
    argv = _argv(tiny_room, tiny_models, tmp_path)
    assert _run(argv) == 0
    summary = lambda: json.loads((tmp_path / "exp" / "summary.json").read_text())
    assert _run(argv + ["--refine_batch", "2"]) == 0 and summary()["resumed_queries"] == 4   # not a result key
    assert summary()["wall_seconds_per_query"] is None                 # nothing refined: no time per query
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert _run(argv + ["--learning_rate", "2e-5"]) == 0
    assert "discarding 4 finished queries" in caplog.text and "learning_rate: 1e-05 -> 2e-05" in caplog.text
    assert summary()["resumed_queries"] == 0
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert _run(argv + ["--learning_rate", "2e-5", "--restart"]) == 0
    assert "--restart given" in caplog.text and summary()["resumed_queries"] == 0


def test_killed_run_leaves_no_stale_results_for_eval(tiny_room, tiny_models, tmp_path, monkeypatch, capsys, one_thread):
    """issue 14: a new run killed part-way must not leave the previous run's results beside its args.txt."""
    import eval as eval_script
    import dm.refine_apr
    argv = _argv(tiny_room, tiny_models, tmp_path)
    assert _run(argv) == 0                                             # opt_iter 2: DFNet_room_NeFeS2_... written
    real, calls = dm.refine_apr.refine_with_apr_batch, []

    def interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(dm.refine_apr, "refine_with_apr_batch", interrupted)   # looked up per run
    with pytest.raises(KeyboardInterrupt):
        _run(argv + ["--opt_iter", "3"])
    out = tmp_path / "exp"
    assert "opt_iter = 3" in (out / "args.txt").read_text()
    assert not list(out.glob("*_results.txt")) and not (out / "summary.json").exists()
    capsys.readouterr()
    cfg = tmp_path / "config_refine.txt"                               # eval.py --config CFG: the new run's settings
    cfg.write_text("opt_iter = 3\n")
    assert eval_script.main(["--config", str(cfg), *map(str, argv), "--opt_iter", "3"]) == 2   # not a stale file
    assert "no refinement result files" in capsys.readouterr().err


def test_a_run_that_cannot_start_keeps_the_last_results_and_journal(tiny_room, tiny_models, tmp_path, capsys,
                                                                     one_thread):
    argv = _argv(tiny_room, tiny_models, tmp_path)
    assert _run(argv) == 0
    out = tmp_path / "exp"
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert _run(argv + ["--ft_path", tmp_path / "typo.tar"]) == 2      # NeFeS fails to load: nothing touched
    assert "typo.tar" in _one_error_line(capsys)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error")]   # besides the progress bar
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_output_folder_through_a_file_is_one_line_exit_2(tiny_room, tiny_models, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder\n")
    assert _run(_argv(tiny_room, tiny_models, blocker)) == 2
    line = _one_error_line(capsys)
    assert line.startswith("error: cannot write to the output folder") and str(blocker / "exp") in line
    assert blocker.read_text() == "not a folder\n"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_output_folder_is_one_line_exit_2(tiny_room, tiny_models, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert _run(_argv(tiny_room, tiny_models, ro)) == 2
        assert str(ro / "exp") in _one_error_line(capsys)
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


def _full_disk(path, *a, **k):
    with open(path, "w") as f:
        f.write("1.0 2.0")                                             # part of a row, then the disk is full
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_at_the_final_write_leaves_no_results(tiny_room, tiny_models, tmp_path, monkeypatch, capsys, one_thread):
    import dm.metrics
    monkeypatch.setattr(dm.metrics.np, "savetxt", _full_disk)
    assert _run(_argv(tiny_room, tiny_models, tmp_path)) == 2
    line = _one_error_line(capsys)
    out = tmp_path / "exp"
    assert str(out) in line and "No space left on device" in line
    left = sorted(p.name for p in out.iterdir())
    assert left == ["args.txt", "journal"]                             # no result, plot or temporary file
    assert len(list((out / "journal").glob("q*.json"))) == 4           # the work itself is kept for a rerun


def test_full_disk_while_journalling_is_one_line(tiny_room, tiny_models, tmp_path, monkeypatch, capsys, one_thread):
    import dm.refine_journal
    real = dm.refine_journal.atomic_write_text

    def write(path, text):
        if Path(path).name.startswith("q"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path, text)

    monkeypatch.setattr(dm.refine_journal, "atomic_write_text", write)
    assert _run(_argv(tiny_room, tiny_models, tmp_path)) == 2
    line = _one_error_line(capsys)
    assert str(tmp_path / "exp" / "journal") in line and "No space left on device" in line
    assert not (tmp_path / "exp" / "summary.json").exists()


def test_previews_of_chosen_queries(tiny_room, tiny_models, tmp_path, one_thread):
    from PIL import Image
    argv = _argv(tiny_room, tiny_models, tmp_path)
    assert _run(argv + ["0", "3"]) == 0                                # --preview_queries 0 3
    out = tmp_path / "exp"
    assert json.loads((out / "summary.json").read_text())["previews"] == [0, 3]
    with Image.open(out / "previews.png") as im:
        w, h = im.size
    assert im.format == "PNG" and w > 2 * h                            # 6 columns, 2 rows
    assert (out / "room_test_frames.txt").read_text().splitlines() == [f"seq-03/frame-{i:06d}.color.png" for i in range(4)]


def test_apr_refinement_script_checks_nproc():
    p = _subprocess(["bash", "test_apr_refinement.sh", "7Scenes", "chess"], env={**os.environ, "NPROC": "four"})
    assert p.returncode == 2 and p.stderr.strip() == "error: NPROC=four: expected a number of processes (1, 2, ...)"


def test_photometric_polish_runs_after_the_refinement_and_never_raises_its_loss(tiny_room, tiny_models, tmp_path, one_thread):
    argv = _argv(tiny_room, tiny_models, tmp_path)
    argv[argv.index("--preview_queries"):argv.index("--preview_queries")] = ["--lm_polish", 2]
    assert _run(argv) == 0
    entries = [json.loads(p.read_text()) for p in sorted((tmp_path / "exp" / "journal").glob("q*.json"))]
    assert len(entries) == 4
    for e in entries:
        pl = e["info"]["polish_losses"]
        assert len(pl) == 3 and all(b <= a for a, b in zip(pl, pl[1:])) and "losses" in e["info"]
        assert abs(e["info"]["render_psnr"] - -10 * math.log10(2 * pl[-1])) < 1e-9
    # summary.json: how well the field renders each query at its refined pose, and which fall below the line
    rp = json.loads((tmp_path / "exp" / "summary.json").read_text())["render_psnr"]
    values = [e["info"]["render_psnr"] for e in entries]
    assert rp["per_query"] == [round(v, 2) for v in values] and rp["median"] == pytest.approx(float(np.median(values)))
    assert rp["below"] == sum(v < rp["threshold"] for v in values) == len(rp["queries_below"])
    trusted = json.loads((tmp_path / "exp" / "summary.json").read_text())["trusted"]
    assert trusted["n"] == sum(v >= rp["threshold"] for v in values)


def test_trusted_summary_reports_only_the_queries_the_run_did_not_flag():
    """The errors over the queries whose render PSNR at the refined pose reaches the line (no ground truth
    in the split); a run that flags every query says so (n = 0)."""
    from dm.refine_run import LOW_RENDER_PSNR, trusted_summary
    apr = (np.array([1.0, 2.0, 3.0, 4.0]), np.array([10.0, 20.0, 30.0, 40.0]))
    refined = (np.array([0.1, 2.5, 0.3, 9.0]), np.array([1.0, 25.0, 3.0, 1.0]))
    psnr = [LOW_RENDER_PSNR + 5, LOW_RENDER_PSNR - 5, LOW_RENDER_PSNR, LOW_RENDER_PSNR - 0.01]
    t = trusted_summary(apr, refined, psnr)["trusted"]
    assert t["n"] == 2 and t["improved_both"] == 1.0                   # queries 0 and 2; 1 and 3 are flagged
    assert t["apr"]["median_t"] == pytest.approx(2.0) and t["refined"]["median_t"] == pytest.approx(0.2)
    assert t["refined"]["median_r"] == pytest.approx(2.0)
    assert trusted_summary(apr, refined, [LOW_RENDER_PSNR - 1] * 4) == {"trusted": {"n": 0, "threshold": LOW_RENDER_PSNR}}


def test_polish_from_the_start_keeps_the_lower_photometric_loss(tiny_room, tiny_models, tmp_path, one_thread):
    """``lm_polish_start``: two hypotheses per query (refined pose, start); the kept one never has a higher
    final photometric loss than polishing the refined pose alone."""
    finals = {}
    for name, extra in (("one", ["--lm_polish", 2]), ("two", ["--lm_polish", 2, "--lm_polish_start"])):
        argv = _argv(tiny_room, tiny_models, tmp_path / name)
        argv[argv.index("--preview_queries"):argv.index("--preview_queries")] = extra
        assert _run(argv) == 0
        entries = [json.loads(p.read_text()) for p in sorted((tmp_path / name / "exp" / "journal").glob("q*.json"))]
        finals[name] = [(e["info"]["polish_losses"][-1], e["info"].get("polish_from")) for e in entries]
    assert len(finals["two"]) == 4
    for (one, src1), (two, src2) in zip(finals["one"], finals["two"]):
        assert src1 == "refined" and src2 in ("refined", "start")
        # the refined-pose hypothesis is polished in a batch of 8 instead of 4, which adds in another order:
        # equal up to that float noise (measured 4e-4 relative after 2 LM steps)
        assert two <= one * (1 + 2e-3)


def test_polish_renders_with_its_own_fine_samples_and_size(tiny_room, tiny_models, tmp_path, monkeypatch, one_thread):
    """``lm_polish_N_importance``: the polish (and only the polish) renders with that many fine samples;
    0 keeps the refinement's ``N_importance``. ``lm_polish_tinyscale``: likewise its render size."""
    import dm.refine_lm
    real, seen = dm.refine_lm.refine_pose_lm_batch, []

    def spy(init, nefes, hists, targets, cam, s, **kw):
        seen.append(cam)
        return real(init, nefes, hists, targets, cam, s, **kw)

    monkeypatch.setattr(dm.refine_lm, "refine_pose_lm_batch", spy)
    sizes = {}
    for name, extra, expected in (("default", [], 3), ("more", ["--lm_polish_N_importance", 7], 7),
                                  ("finer", ["--lm_polish_tinyscale", 1], 3)):
        seen.clear()
        argv = _argv(tiny_room, tiny_models, tmp_path / name)
        argv[argv.index("--preview_queries"):argv.index("--preview_queries")] = [
            "--lm_polish", 1, "--N_importance", 3, *extra]
        assert _run(argv) == 0
        assert seen and all(c.N_importance == expected for c in seen), name          # one call per batch
        assert {(c.h, c.w, c.N_samples, c.focal) for c in seen} == {(seen[0].h, seen[0].w, seen[0].N_samples, seen[0].focal)}
        sizes[name] = (seen[0].h, seen[0].w, seen[0].focal)
        entries = [json.loads(p.read_text()) for p in sorted((tmp_path / name / "exp" / "journal").glob("q*.json"))]
        assert len(entries) == 4 and all(len(e["info"]["polish_losses"]) == 2 for e in entries)
    # the tests' tinyscale is 2: tinyscale 1 renders the polish at twice the height, width and focal
    assert sizes["more"] == sizes["default"]
    assert sizes["finer"] == (2 * sizes["default"][0], 2 * sizes["default"][1], 2 * sizes["default"][2])
