"""dm.metrics and dm.plots: errors with known answers, recalls, file I/O, paper numbers (spec §6.2)."""

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from dm import metrics, plots
from dm.metrics import PoseFileError

RNG_SEED = 1234


def _random_poses(rng, n, scale=1.0):
    """(n, 3, 4) poses with random rotations (scipy, independent of core.geometry)."""
    R = Rotation.random(n, random_state=rng).as_matrix()
    t = rng.normal(size=(n, 3, 1)) * scale
    return np.concatenate([R, t], axis=2)


def _unit(rng, n):
    v = rng.normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _perturbed(gt, angles_deg, offsets_m, rng, left=True):
    """Rotate each gt pose by a known angle about a random axis and shift it by a known distance."""
    dR = Rotation.from_rotvec(_unit(rng, len(gt)) * np.radians(angles_deg)[:, None]).as_matrix()
    R = dR @ gt[:, :, :3] if left else gt[:, :, :3] @ dR
    t = gt[:, :, 3] + _unit(rng, len(gt)) * offsets_m[:, None]
    return np.concatenate([R, t[:, :, None]], axis=2)


# ----------------------------------------------------------------------------------------------
# errors
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("left", [True, False])
def test_known_angles_and_offsets(left):
    rng = np.random.default_rng(RNG_SEED)
    gt = _random_poses(rng, 64, scale=10.0)
    angles = np.concatenate([[0.0, 1e-3, 0.5], rng.uniform(0.0, 179.0, 61)])
    offsets = np.concatenate([[0.0, 1e-4, 0.02], rng.uniform(0.0, 5.0, 61)])
    pred = _perturbed(gt, angles, offsets, rng, left=left)
    t_err, r_err = metrics.pose_errors(pred, gt, cast_float32=False)
    assert t_err.dtype == np.float64 and t_err.shape == (64,)
    np.testing.assert_allclose(t_err, offsets, atol=1e-12, rtol=1e-12)
    np.testing.assert_allclose(r_err, angles, atol=1e-8)
    # (N, 12) rows and torch tensors are accepted too
    t2, r2 = metrics.pose_errors(torch.from_numpy(pred.reshape(-1, 12)), gt.reshape(-1, 12), cast_float32=False)
    np.testing.assert_allclose(t2, t_err, atol=1e-14)
    np.testing.assert_allclose(r2, r_err, atol=1e-12)


def test_non_orthonormal_stretch_is_projected_away():
    rng = np.random.default_rng(RNG_SEED + 1)
    gt = _random_poses(rng, 32)
    angles = rng.uniform(0.05, 3.0, 32)
    pred = _perturbed(gt, angles, np.zeros(32), rng)
    # R (I + S) with S symmetric: its closest rotation (polar factor) is exactly R.
    S = rng.normal(size=(32, 3, 3)) * 1e-3
    S = 0.5 * (S + S.transpose(0, 2, 1))
    pred[:, :, :3] = pred[:, :, :3] @ (np.eye(3) + S)
    _, r_err = metrics.pose_errors(pred, gt, cast_float32=False)
    np.testing.assert_allclose(r_err, angles, atol=1e-7)
    # without the projection the trace formula would be off by far more (why the SVD is there)
    D = pred[:, :, :3] @ gt[:, :, :3].transpose(0, 2, 1)
    naive = np.degrees(np.arccos(np.clip((np.trace(D, axis1=1, axis2=2) - 1) / 2, -1, 1)))
    assert np.abs(naive - angles).max() > 1e-2


def test_float32_cast_like_the_original():
    gt = np.zeros((2, 3, 4))
    gt[:, :, :3] = np.eye(3)
    gt[:, 0, 3] = 1000.0
    pred = gt.copy()
    pred[:, 0, 3] += 1e-5  # below float32 resolution at 1000 m (6.1e-5)
    t64, _ = metrics.pose_errors(pred, gt, cast_float32=False)
    t32, _ = metrics.pose_errors(pred, gt)
    np.testing.assert_allclose(t64, 1e-5, rtol=1e-6)
    expected = abs(float(np.float32(1000.0 + 1e-5)) - float(np.float32(1000.0)))
    np.testing.assert_allclose(t32, expected, atol=1e-12)
    assert abs(t32[0] - 1e-5) > 1e-6


def test_n1_nonfinite_and_bad_shapes():
    rng = np.random.default_rng(RNG_SEED + 2)
    gt = _random_poses(rng, 1)
    pred = _perturbed(gt, np.array([7.0]), np.array([0.3]), rng)
    t, r = metrics.pose_errors(pred[0], gt[0].reshape(12), cast_float32=False)  # single (3,4) / (12,)
    assert t.shape == r.shape == (1,)
    assert t[0] == pytest.approx(0.3, abs=1e-12) and r[0] == pytest.approx(7.0, abs=1e-8)
    s = metrics.summarize(t, r)
    assert s["n"] == 1 and s["median_t"] == s["mean_t"] == t[0] and s["median_r"] == s["mean_r"] == r[0]
    bad = np.concatenate([pred, pred])
    bad[1, 0, 0] = np.nan
    t, r = metrics.pose_errors(bad, np.concatenate([gt, gt]))
    assert np.isfinite(t[0]) and np.isinf(t[1]) and np.isinf(r[1])
    with pytest.raises(ValueError, match="pred has 2 poses but gt has 1"):
        metrics.pose_errors(bad, gt)
    with pytest.raises(ValueError, match=r"\(5, 7\)"):
        metrics.pose_errors(np.zeros((5, 7)), gt)


# ----------------------------------------------------------------------------------------------
# summaries and recalls
# ----------------------------------------------------------------------------------------------
def test_summary_values_and_strict_recall_thresholds():
    t = np.array([0.25, 0.2499, 0.01, 0.0099, 5.0, 1.0, 0.1, 0.3])
    r = np.array([1.0, 1.9999, 1.0, 0.9999, 0.5, 4.9, 5.0, 1.0])
    s = metrics.summarize(t, r)
    assert s["n"] == 8
    assert s["median_t"] == pytest.approx(np.sort(t)[3:5].mean()) and s["mean_t"] == pytest.approx(t.sum() / 8)
    assert s["median_r"] == pytest.approx(1.0) and s["mean_r"] == pytest.approx(r.sum() / 8)
    expected = {  # counted by hand, strict < on both
        "5m_10deg": 7 / 8,      # t=5.0 is not < 5
        "0.5m_5deg": 5 / 8,     # not: 5.0, 1.0, (0.1, 5.0)
        "0.25m_2deg": 3 / 8,    # 0.2499/1.9999, 0.01/1.0, 0.0099/0.9999 (0.25 is not < 0.25)
        "0.1m_5deg": 2 / 8,     # 0.01, 0.0099 (0.1/5.0 fails twice)
        "0.05m_5deg": 2 / 8,
        "0.02m_2deg": 2 / 8,
        "0.01m_1deg": 1 / 8,    # only 0.0099/0.9999
    }
    assert s["recalls"] == pytest.approx(expected)
    assert list(s["recalls"]) == [metrics.recall_key(a, b) for a, b in metrics.RECALL_THRESHOLDS]
    with pytest.raises(ValueError):
        metrics.summarize([], [])
    text = metrics.format_summary(s, "demo")
    assert "demo" in text and f"{s['median_t']:.4f}" in text and "87.5%" in text
    table = metrics.format_table({"A": s, "B+C": s}).splitlines()
    assert len(table) == 3 and table[2].startswith("B+C")


def test_paper_average_rounds_cells_to_2dp():
    meds_t = [0.0165, 0.0201, 0.0197, 0.0188, 0.0202, 0.0204, 0.0459]
    meds_r = [0.5653, 0.7399, 1.2822, 0.5591, 0.5523, 0.5659, 1.2791]  # no 2-dp ties
    avg = metrics.paper_average({"median_t": a, "median_r": b} for a, b in zip(meds_t, meds_r))
    assert avg["n_scenes"] == 7
    assert avg["mean_of_medians_t"] == pytest.approx(sum(meds_t) / 7)
    assert avg["mean_of_rounded_t"] == pytest.approx((0.02 * 6 + 0.05) / 7)  # spec's "0.024" example
    assert avg["mean_of_rounded_r"] == pytest.approx((0.57 + 0.74 + 1.28 + 0.56 + 0.55 + 0.57 + 1.28) / 7)


# ----------------------------------------------------------------------------------------------
# pose files
# ----------------------------------------------------------------------------------------------
def test_pose_file_roundtrip_and_format(tmp_path):
    poses = _random_poses(np.random.default_rng(RNG_SEED + 3), 3)
    path = metrics.save_pose_file(tmp_path / "sub" / "res.txt", poses)
    back = metrics.load_pose_file(path)
    assert back.shape == (3, 3, 4) and back.dtype == np.float64
    np.testing.assert_array_equal(back, poses)  # %.18e is lossless for float64
    rows = path.read_text().splitlines()
    assert len(rows) == 3 and all(len(r.split(" ")) == 12 for r in rows)
    assert rows[0].split(" ")[0] == f"{poses[0, 0, 0]:.18e}"  # numpy's default savetxt format


@pytest.mark.parametrize("content, message", [
    (None, "not found"),
    ("", "empty"),
    (" ".join(["1"] * 11) + "\n", "12 numbers per row"),
    (" ".join(["1"] * 12) + "\n" + " ".join(["1"] * 11) + "\n", "N rows × 12 numbers"),
    (" ".join(["1"] * 11 + ["nan"]) + "\n", "row 1 contains NaN"),
    (" ".join(["1"] * 12) + "\n" + " ".join(["inf"] * 12) + "\n", "row 2 contains NaN or infinite"),
    ("a b c\n", "N rows × 12 numbers"),
])
def test_bad_pose_files_give_one_line_naming_the_file(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    if content is not None:
        path.write_text(content)
    with pytest.raises(PoseFileError, match=message) as e:
        metrics.load_pose_file(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


# ----------------------------------------------------------------------------------------------
# plots
# ----------------------------------------------------------------------------------------------
def _assert_png(path, min_bytes=2000):
    from PIL import Image
    assert path.is_file() and path.stat().st_size > min_bytes
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        im.verify()


@pytest.mark.parametrize("n", [1, 6])
def test_plots_write_valid_png(tmp_path, n):
    rng = np.random.default_rng(RNG_SEED + n)
    gt = _random_poses(rng, n)
    apr = _perturbed(gt, rng.uniform(1, 5, n), rng.uniform(0.1, 0.5, n), rng)
    ref = _perturbed(gt, rng.uniform(0, 1, n), rng.uniform(0.0, 0.05, n), rng)
    out = plots.plot_trajectories(tmp_path / "a" / "traj.png", gt, APR=apr, **{"APR+NeFeS": ref.reshape(-1, 12)})
    _assert_png(out)
    out = plots.plot_error_cdf(tmp_path / "cdf.png", APR=metrics.pose_errors(apr, gt),
                               refined=metrics.pose_errors(ref, gt), same=metrics.pose_errors(gt, gt))
    _assert_png(out)


# ----------------------------------------------------------------------------------------------
# fidelity: spec §6.2, numbers typed from the spec (independent reference values)
# ----------------------------------------------------------------------------------------------
# scene: (N, DFNet med t, med r, NeFeS50 med t, med r, DFNet mean t, mean r, NeFeS50 mean t, mean r,
#         DFNet 2dp cells, NeFeS50 2dp cells)
SPEC = {
    "7Scenes_colmap": {
        "chess": (2000, 0.0330, 1.122, 0.0165, 0.565, 0.048, 1.46, 0.025, 0.82, (0.03, 1.12), (0.02, 0.57)),
        "fire": (2000, 0.0581, 2.294, 0.0201, 0.740, 0.104, 3.60, 0.048, 1.56, (0.06, 2.29), (0.02, 0.74)),
        "heads": (1000, 0.0417, 2.240, 0.0197, 1.282, 0.059, 2.92, 0.030, 1.66, (0.04, 2.24), (0.02, 1.28)),
        "office": (4000, 0.0585, 1.540, 0.0188, 0.559, 0.089, 2.41, 0.033, 0.95, (0.06, 1.54), (0.02, 0.56)),
        "pumpkin": (2000, 0.0668, 1.885, 0.0202, 0.552, 0.143, 3.56, 0.095, 2.52, (0.07, 1.89), (0.02, 0.55)),
        "redkitchen": (5000, 0.0660, 1.723, 0.0204, 0.566, 0.163, 2.99, 0.078, 1.76, (0.07, 1.72), (0.02, 0.57)),
        "stairs": (1000, 0.1197, 2.629, 0.0459, 1.279, 0.135, 3.27, 0.080, 1.91, (0.12, 2.63), (0.05, 1.28)),
    },
    "Cambridge": {
        "KingsCollege": (343, 0.7324, 2.370, 0.3665, 0.542, 1.084, 2.55, 1.009, 1.04, (0.73, 2.37), (0.37, 0.54)),
        "OldHospital": (182, 1.9954, 2.979, 0.5218, 0.876, 2.291, 3.61, 1.171, 1.49, (2.00, 2.98), (0.52, 0.88)),
        "ShopFacade": (103, 0.6736, 2.203, 0.1487, 0.528, 0.798, 3.15, 0.353, 1.28, (0.67, 2.20), (0.15, 0.53)),
        "StMarysChurch": (530, 1.3710, 4.035, 0.3715, 1.141, 1.823, 5.17, 1.156, 2.68, (1.37, 4.03), (0.37, 1.14)),
    },
}
# mean-of-medians rows: DFNet t, r, NeFeS50 t, r
SPEC_AVG = {"7Scenes_colmap": (0.0634, 1.919, 0.0231, 0.792), "Cambridge": (1.1931, 2.897, 0.3521, 0.772)}


def _close(ours, spec, decimals):
    """Equal at the precision the spec prints (half a unit of its last digit, plus float slack)."""
    return abs(ours - spec) <= 0.5 * 10.0 ** -decimals + 1e-6


@pytest.fixture(scope="module")
def paper_tables(shared_ref):
    return metrics.score_paper_results(shared_ref / "paper_result")


def test_paper_result_per_scene_matches_spec(paper_tables):
    assert set(paper_tables) == set(SPEC)
    for dataset_type, scenes in SPEC.items():
        ours = paper_tables[dataset_type]["scenes"]
        assert list(ours) == list(scenes)
        for scene, (n, dt, dr, nt, nr, dmt, dmr, nmt, nmr, dcell, ncell) in scenes.items():
            d, f = ours[scene]["DFNet"], ours[scene]["DFNet+NeFeS50"]
            assert d["n"] == f["n"] == n, scene
            for got, want, dp in ((d["median_t"], dt, 4), (d["median_r"], dr, 3), (f["median_t"], nt, 4),
                                  (f["median_r"], nr, 3), (d["mean_t"], dmt, 3), (d["mean_r"], dmr, 2),
                                  (f["mean_t"], nmt, 3), (f["mean_r"], nmr, 2)):
                assert _close(got, want, dp), f"{scene}: {got} vs spec {want}"
            assert (round(d["median_t"], 2), round(d["median_r"], 2)) == pytest.approx(dcell), scene
            assert (round(f["median_t"], 2), round(f["median_r"], 2)) == pytest.approx(ncell), scene


def test_paper_result_averages_match_spec(paper_tables):
    for dataset_type, (dt, dr, nt, nr) in SPEC_AVG.items():
        avg = paper_tables[dataset_type]["average"]
        d, f = avg["DFNet"], avg["DFNet+NeFeS50"]
        assert _close(d["mean_of_medians_t"], dt, 4) and _close(d["mean_of_medians_r"], dr, 3)
        assert _close(f["mean_of_medians_t"], nt, 4) and _close(f["mean_of_medians_r"], nr, 3)
        # paper-style rows: mean of the spec's own 2-dp cells
        cells = np.array([v[10] for v in SPEC[dataset_type].values()])
        assert f["mean_of_rounded_t"] == pytest.approx(cells[:, 0].mean(), abs=1e-12)
        assert f["mean_of_rounded_r"] == pytest.approx(cells[:, 1].mean(), abs=1e-12)
        cells = np.array([v[9] for v in SPEC[dataset_type].values()])
        assert d["mean_of_rounded_t"] == pytest.approx(cells[:, 0].mean(), abs=1e-12)
    text = metrics.format_paper_tables(paper_tables)
    assert "Table 1" in text and "Table 2" in text and "0.0231" in text and "0.3521" in text


def _pose_row(R, t=(0.1, 0.2, 0.3)):
    return " ".join(f"{v:.9g}" for v in np.concatenate([np.asarray(R, float), np.asarray(t, float)[:, None]], 1).ravel())


@pytest.mark.parametrize("R, message", [
    (np.zeros((3, 3)), "row 2: the 3x3 block is not a rotation"),
    (2 * np.eye(3), "row 2: the 3x3 block is not a rotation"),
    (np.diag([1.0, 1.0, -1.0]), "row 2: the 3x3 block is a reflection"),
])
def test_pose_file_rows_that_are_not_rotations_are_rejected(tmp_path, R, message):
    """issue 14: a zero, scaled or mirrored 3x3 block would score 0 deg against itself."""
    path = tmp_path / "pred.txt"
    path.write_text(_pose_row(np.eye(3)) + "\n" + _pose_row(R) + "\n")
    with pytest.raises(PoseFileError, match=message):
        metrics.load_pose_file(path)


def test_pose_files_with_float32_rounded_rotations_are_accepted(tmp_path):
    """The paper's refined files have |R R^T - I| up to ~1.3e-3: they must keep loading."""
    R = np.eye(3) + 1.5e-3 * np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1.0]])
    path = tmp_path / "pred.txt"
    path.write_text(_pose_row(R) + "\n")
    assert metrics.load_pose_file(path).shape == (1, 3, 4)


def test_eval_rejects_a_gt_with_a_zero_rotation(tmp_path, capsys):
    import eval as eval_script
    good, bad = tmp_path / "pred.txt", tmp_path / "gt.txt"
    good.write_text(_pose_row(np.eye(3)) + "\n")
    bad.write_text(_pose_row(np.zeros((3, 3))) + "\n")
    assert eval_script.main(["--pred", str(good), "--gt", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "gt.txt: row 1" in err and "Traceback" not in err


def test_improved_needs_both_errors_lower_or_halved():
    before = (np.array([1.0, 1.0, 1.0]), np.array([2.0, 2.0, 2.0]))
    after = (np.array([0.5, 0.4, 1.5]), np.array([1.5, 1.0, 0.1]))
    assert metrics.improved(before, after).tolist() == [True, True, False]
    assert metrics.improved(before, after, 0.5).tolist() == [False, True, False]
