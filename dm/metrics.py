"""Pose-error metrics, result-file I/O and the summaries printed by eval.py / test_refinement.py.

Result files (spec §5.1 step 3) hold one test frame per row: 12 numbers, the row-major 3x4
camera-to-world pose ``[R | t]`` in the APR frame, metres, written by ``np.savetxt`` with its default
format. Errors are computed as the original ``compute_pose_error_SE3`` (spec §6.1):

* translation error: Euclidean distance of the translation columns (metres);
* rotation error: angle of SO3proj(R_pred · R_gtᵀ) in degrees (``core.geometry.rotation_error_deg``;
  the SVD projection is what cv2.Rodrigues does and matters for the ~1e-3-orthonormal refined files).

The original eval casts both pose arrays to float32 before scoring; ``cast_float32=True`` repeats
that (the maths itself then runs in float64).
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from core import geometry
from core.errors import PoseFileError

_logger = logging.getLogger(__name__)

#: (translation metres, rotation degrees) accuracy thresholds of the original eval; both strict (<).
RECALL_THRESHOLDS = ((5.0, 10.0), (0.5, 5.0), (0.25, 2.0), (0.1, 5.0), (0.05, 5.0), (0.02, 2.0), (0.01, 1.0))

__all__ = [
    "PoseFileError", "RECALL_THRESHOLDS", "recall_key", "as_pose_array", "load_pose_file", "save_pose_file",
    "pose_errors", "summarize", "format_summary", "format_table", "paper_average",
    "PAPER_METHODS", "PAPER_DATASETS", "score_paper_results", "format_paper_tables",
]


def recall_key(t_m: float, r_deg: float) -> str:
    """Name of a threshold pair in summaries, e.g. (0.25, 2) -> ``"0.25m_2deg"``."""
    return f"{t_m:g}m_{r_deg:g}deg"


def _recall_label(key: str) -> str:
    return key.replace("m_", "m/").replace("deg", "°")  # "0.25m_2deg" -> "0.25m/2°" for printing


# ----------------------------------------------------------------------------------------------
# pose files
# ----------------------------------------------------------------------------------------------
def as_pose_array(poses, name: str = "poses") -> np.ndarray:
    """(N, 12) | (N, 3, 4) | (N, 4, 4) | (12,) | (3, 4) array or tensor -> (N, 3, 4) float64 numpy."""
    if isinstance(poses, torch.Tensor):
        poses = poses.detach().cpu().numpy()
    a = np.asarray(poses, dtype=np.float64)
    if a.ndim >= 1 and a.shape[-1] == 12:
        return a.reshape(-1, 3, 4)
    if a.ndim >= 2 and a.shape[-2:] in ((3, 4), (4, 4)):
        return a[..., :3, :4].reshape(-1, 3, 4)
    raise ValueError(f"{name}: expected poses of shape (N, 12) or (N, 3, 4), got {a.shape}")


def load_pose_file(path) -> np.ndarray:
    """Read an N×12 result / ground-truth file -> (N, 3, 4) float64.

    Raises :class:`PoseFileError` (one line naming the file) when it is missing, empty, not
    numeric, has a row that is not 12 numbers, or holds NaN/inf.
    """
    path = Path(path)
    if not path.is_file():
        raise PoseFileError(f"{path}: pose file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy warns on empty files; we raise below instead
            a = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except (ValueError, OSError) as e:
        raise PoseFileError(f"{path}: not a text file of N rows × 12 numbers ({str(e).splitlines()[0]})") from None
    if a.size == 0:
        raise PoseFileError(f"{path}: pose file is empty")
    if a.shape[1] != 12:
        raise PoseFileError(f"{path}: expected 12 numbers per row (row-major 3x4 pose), got {a.shape[1]}")
    bad = ~np.isfinite(a).all(axis=1)
    if bad.any():
        raise PoseFileError(f"{path}: row {int(np.argmax(bad)) + 1} contains NaN or infinite values")
    poses = a.reshape(-1, 3, 4)
    check_rotations(poses, path)
    return poses


#: Largest |R Rᵀ - I| entry accepted in a pose file. The paper's refined result files reach 1.3e-3
#: (float32 rounding of SVD-orthonormalised rotations); a zero, scaled or sheared block is far above.
ROTATION_TOLERANCE = geometry.ROTATION_TOLERANCE


def check_rotations(poses: np.ndarray, path) -> None:
    """Raise :class:`PoseFileError` naming the first row whose 3x3 block is not a rotation (within
    :data:`ROTATION_TOLERANCE`, determinant +1): such a row would score 0 deg against itself."""
    i, dev, det = geometry.first_non_rotation(poses[:, :, :3])
    if i is not None:
        what = "a reflection (determinant -1)" if det < 0 and dev <= ROTATION_TOLERANCE else \
            f"not a rotation (max |R R^T - I| = {dev:.3g}, determinant {det:.3g})"
        raise PoseFileError(f"{path}: row {i + 1}: the 3x3 block is {what}; rows are row-major 3x4 "
                            f"camera-to-world poses")


def save_pose_file(path, poses) -> Path:
    """Write poses ((N, 3, 4) or (N, 12)) as N×12 rows, ``np.savetxt`` default format; makes parent dirs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(path, as_pose_array(poses).reshape(-1, 12))
    return path


# ----------------------------------------------------------------------------------------------
# errors and summaries
# ----------------------------------------------------------------------------------------------
def pose_errors(pred, gt, cast_float32: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame errors of predicted vs ground-truth camera-to-world poses (same frame, metres).

    Args:
        pred, gt: (N, 12) or (N, 3, 4) numpy arrays or tensors.
        cast_float32: round both inputs to float32 first, as the original eval does.
    Returns:
        ``(t_err, r_err)``: (N,) float64 numpy, metres and degrees. Frames with a non-finite pose
        (a diverged refinement) get ``inf`` in both, so they count as failures.
    """
    pred, gt = as_pose_array(pred, "pred"), as_pose_array(gt, "gt")
    if pred.shape != gt.shape:
        raise ValueError(f"pred has {len(pred)} poses but gt has {len(gt)}")
    if cast_float32:
        pred, gt = pred.astype(np.float32).astype(np.float64), gt.astype(np.float32).astype(np.float64)
    ok = np.isfinite(pred).all(axis=(1, 2)) & np.isfinite(gt).all(axis=(1, 2))
    t_err = np.full(len(pred), np.inf)
    r_err = np.full(len(pred), np.inf)
    if not ok.all():
        _logger.warning("%d of %d poses are not finite: their errors are set to inf", (~ok).sum(), len(ok))
    if ok.any():
        t, r = geometry.pose_errors(torch.from_numpy(pred[ok]), torch.from_numpy(gt[ok]))
        t_err[ok], r_err[ok] = t.numpy(), r.numpy()
    return t_err, r_err


def summarize(t_err, r_err) -> dict:
    """Aggregate per-frame errors (metres, degrees).

    Returns ``{"n", "median_t", "median_r", "mean_t", "mean_r", "recalls"}`` with ``recalls`` mapping
    :func:`recall_key` names to the fraction of frames with ``t_err < t`` **and** ``r_err < r``.
    """
    t_err, r_err = np.asarray(t_err, dtype=np.float64).ravel(), np.asarray(r_err, dtype=np.float64).ravel()
    if t_err.size == 0 or t_err.shape != r_err.shape:
        raise ValueError(f"summarize needs as many translation as rotation errors, at least one "
                         f"(got {t_err.size} and {r_err.size})")
    return {
        "n": int(t_err.size),
        "median_t": float(np.median(t_err)), "median_r": float(np.median(r_err)),
        "mean_t": float(np.mean(t_err)), "mean_r": float(np.mean(r_err)),
        "recalls": {recall_key(t, r): float(np.mean((t_err < t) & (r_err < r))) for t, r in RECALL_THRESHOLDS},
    }


def improved(before: tuple, after: tuple, factor: float = 1.0) -> np.ndarray:
    """Per query, whether both errors went down: ``after < before`` in translation **and** rotation
    (``factor`` 0.5: both at most halved). ``before``, ``after``: (t_err, r_err) as from :func:`pose_errors`."""
    (t0, r0), (t1, r1) = ([np.asarray(e, dtype=np.float64) for e in errs] for errs in (before, after))
    if factor == 1.0:
        return (t1 < t0) & (r1 < r0)
    return (t1 <= factor * t0) & (r1 <= factor * r0)


def format_summary(summary: dict, name: str | None = None) -> str:
    """A few readable lines: n, median and mean errors, recalls in percent."""
    head = f"{name}: " if name else ""
    rec = "  ".join(f"{_recall_label(k)} {100 * v:.1f}%" for k, v in summary["recalls"].items())
    return (f"{head}n = {summary['n']}\n"
            f"  median  {summary['median_t']:.4f} m  {summary['median_r']:.3f}°\n"
            f"  mean    {summary['mean_t']:.4f} m  {summary['mean_r']:.3f}°\n"
            f"  recall  {rec}")


def format_table(named_summaries: dict) -> str:
    """Compare methods in one table: a row per name with n, medians, means and recalls (%)."""
    keys = [recall_key(t, r) for t, r in RECALL_THRESHOLDS]
    width = max([len("method")] + [len(n) for n in named_summaries])
    cols = ["n", "med t (m)", "med r (°)", "mean t (m)", "mean r (°)"] + [_recall_label(k) for k in keys]
    lines = [f"{'method':<{width}}  " + "  ".join(f"{c:>10}" for c in cols)]
    for name, s in named_summaries.items():
        vals = [f"{s['n']:>10d}", f"{s['median_t']:>10.4f}", f"{s['median_r']:>10.3f}",
                f"{s['mean_t']:>10.4f}", f"{s['mean_r']:>10.3f}"] + [f"{100 * s['recalls'][k]:>9.1f}%" for k in keys]
        lines.append(f"{name:<{width}}  " + "  ".join(vals))
    return "\n".join(lines)


def paper_average(summaries) -> dict:
    """Averages over scenes the way the paper's tables report them (spec §6.2).

    Args:
        summaries: iterable of :func:`summarize` dicts, one per scene.
    Returns:
        ``mean_of_medians_t/r`` (plain mean of the per-scene medians), ``mean_of_rounded_t/r`` (mean of
        the medians rounded to 2 decimals, i.e. of the printed table cells) and ``n_scenes``.
    """
    summaries = list(summaries)
    if not summaries:
        raise ValueError("paper_average needs at least one scene summary")
    med_t = [s["median_t"] for s in summaries]
    med_r = [s["median_r"] for s in summaries]
    return {
        "n_scenes": len(summaries),
        "mean_of_medians_t": float(np.mean(med_t)), "mean_of_medians_r": float(np.mean(med_r)),
        # the paper prints 2-dp cells and averages those: round() as the printed cell would be
        "mean_of_rounded_t": float(np.mean([round(x, 2) for x in med_t])),
        "mean_of_rounded_r": float(np.mean([round(x, 2) for x in med_r])),
    }


# ----------------------------------------------------------------------------------------------
# the released paper_result folder (Tables 1 and 2)
# ----------------------------------------------------------------------------------------------
#: Method label -> result file name in ``paper_result/DFNet_NeFeS50_<dataset_type>/<scene>/``.
PAPER_METHODS = {
    "DFNet": "DFNet_{scene}_results.txt",
    "DFNet+NeFeS50": "DFNet_{scene}_NeFeS50_APR_pose_results.txt",
}
#: dataset_type -> table title, in the order the paper prints them (7Scenes: dSLAM GT, not shipped).
PAPER_DATASETS = {
    "7Scenes_colmap": "Table 1: 7-Scenes (SfM pseudo ground truth)",
    "7Scenes": "7-Scenes (dSLAM ground truth)",
    "Cambridge": "Table 2: Cambridge Landmarks",
}


def score_paper_results(root) -> dict:
    """Score every scene under a ``paper_result`` folder against its ``<scene>_test_gt.txt``.

    Returns ``{dataset_type: {"title", "scenes": {scene: {method: summary}}, "average": {method:
    paper_average}}}`` for each ``DFNet_NeFeS50_<dataset_type>`` folder present (float32 cast as the
    original eval). Raises :class:`PoseFileError` when the folder holds none of them or a file is bad.
    """
    root = Path(root)
    if not root.is_dir():
        raise PoseFileError(f"{root}: paper_result folder not found")
    tables = {}
    for dataset_type, title in PAPER_DATASETS.items():
        ds_dir = root / f"DFNet_NeFeS50_{dataset_type}"
        if not ds_dir.is_dir():
            continue
        scenes = {}
        for scene_dir in sorted(p for p in ds_dir.iterdir() if p.is_dir()):
            scene = scene_dir.name
            gt = load_pose_file(scene_dir / f"{scene}_test_gt.txt")
            scenes[scene] = {}
            for method, pattern in PAPER_METHODS.items():
                pred = load_pose_file(scene_dir / pattern.format(scene=scene))
                if len(pred) != len(gt):
                    raise PoseFileError(f"{scene_dir / pattern.format(scene=scene)}: {len(pred)} poses, "
                                        f"but the ground truth has {len(gt)}")
                scenes[scene][method] = summarize(*pose_errors(pred, gt))
        if scenes:
            tables[dataset_type] = {
                "title": title, "scenes": scenes,
                "average": {m: paper_average(s[m] for s in scenes.values()) for m in PAPER_METHODS},
            }
    if not tables:
        raise PoseFileError(f"{root}: no DFNet_NeFeS50_<{'|'.join(PAPER_DATASETS)}>/<scene>/ folders found")
    return tables


def format_paper_tables(tables: dict) -> str:
    """Text tables from :func:`score_paper_results`: per scene median/mean t (m) and r (°), then averages."""
    methods = list(PAPER_METHODS)
    block = 40  # characters per method: 4 numbers
    out = []
    for table in tables.values():
        top = " " * 22 + "".join(f"  {m:<{block - 2}}" for m in methods)
        sub = f"{'scene':<16}{'N':>6}" + f"  {'med t':>8} {'med r':>7} {'mean t':>8} {'mean r':>7}  " * len(methods)
        rule = "-" * len(sub.rstrip())
        out += ["", f"{table['title']}: median and mean errors, t in metres, r in degrees", top.rstrip(),
                sub.rstrip(), rule]
        for scene, per_method in table["scenes"].items():
            cells = "".join(f"  {s['median_t']:>8.4f} {s['median_r']:>7.3f} {s['mean_t']:>8.3f} {s['mean_r']:>7.2f}  "
                            for s in (per_method[m] for m in methods))
            out.append(f"{scene:<16}{per_method[methods[0]]['n']:>6}{cells}".rstrip())
        out.append(rule)
        for label, key in (("mean of medians", "mean_of_medians"), ("paper (2-dp cells)", "mean_of_rounded")):
            cells = "".join(f"  {a[key + '_t']:>8.4f} {a[key + '_r']:>7.3f} {'':>8} {'':>7}  "
                            for a in (table["average"][m] for m in methods))
            out.append(f"{label:<22}{cells}".rstrip())
    return "\n".join(out[1:])
