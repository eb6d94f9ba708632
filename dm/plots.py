"""Result plots: camera trajectories (GT vs predictions) and error CDFs, written as PNG files.

Uses matplotlib's object API with the Agg canvas (no pyplot, no global backend switch), so it works
headless and from worker threads. Poses are APR-frame camera-to-world (N, 3, 4) or (N, 12) in metres;
the APR world is the centred average camera frame with OpenGL axes (y up, cameras look along -z),
so the "top view" is the x–z plane and the "side view" the x–y plane.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from dm.metrics import as_pose_array
from utils.atomic import atomic_write

_logger = logging.getLogger(__name__)

_VIEWS = (("top view (x–z)", 0, 2), ("side view (x–y)", 0, 1))
_GT_STYLE = dict(color="black", s=6, zorder=3)
_MARKERS = ("o", "^", "s", "D", "v", "P")


def _new_figure(ncols: int) -> Figure:
    fig = Figure(figsize=(6.0 * ncols, 5.0), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, out_png, dpi: int = 100) -> Path:
    """Write ``fig`` as a PNG, atomically (a killed run never leaves half an image)."""
    out_png = Path(out_png)
    atomic_write(out_png, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
    _logger.info("wrote %s", out_png)
    return out_png


def plot_trajectories(out_png, gt, **named_preds) -> Path:
    """Top and side views of camera positions: GT (black, with viewing-direction ticks) vs each prediction.

    Args:
        out_png: output path (parent folders are created).
        gt: (N, 3, 4) | (N, 12) ground-truth APR-frame camera-to-world poses (metres).
        **named_preds: label -> (N, 3, 4) | (N, 12) predicted poses, e.g. ``APR=..., refined=...``.
            Labels that are not identifiers can be passed as ``**{"DFNet+NeFeS": poses}``.
    """
    gt = as_pose_array(gt, "gt")
    preds = {name: as_pose_array(p, name) for name, p in named_preds.items()}
    pos = gt[:, :, 3]
    extent = float(np.ptp(np.concatenate([pos] + [p[:, :, 3] for p in preds.values()]), axis=0).max())
    tick = 0.05 * extent if extent > 0 else 0.1  # N=1 or a static camera: fixed 10 cm ticks
    forward = -gt[:, :, 2]  # OpenGL cameras look along their -z axis
    fig = _new_figure(2)
    for ax, (title, i, j) in zip(fig.subplots(1, 2), _VIEWS):
        segments = np.stack([pos[:, [i, j]], pos[:, [i, j]] + tick * forward[:, [i, j]]], axis=1)  # (N, 2, 2)
        ax.add_collection(LineCollection(segments, colors="0.4", linewidths=0.6, zorder=2))
        ax.scatter(pos[:, i], pos[:, j], label="GT", **_GT_STYLE)
        for k, (name, p) in enumerate(preds.items()):
            ax.scatter(p[:, i, 3], p[:, j, 3], s=8, alpha=0.7, label=name,
                       marker=_MARKERS[k % len(_MARKERS)], zorder=4)
        ax.set(title=title, xlabel="xyz"[i] + " (m)", ylabel="xyz"[j] + " (m)")
        ax.set_aspect("equal", adjustable="datalim")  # metric views; keep the panel size
        ax.autoscale_view()
        ax.grid(True, linewidth=0.3)
        ax.legend(loc="best", fontsize="small")
    return save_figure(fig, out_png)


def _cdf_panel(ax, named_values: dict, unit: str, title: str) -> None:
    upper = 0.0
    for name, values in named_values.items():
        v = np.sort(values[np.isfinite(values)])
        if v.size == 0:
            continue
        frac = np.arange(1, v.size + 1) / values.size  # non-finite (failed) frames stay missing at the top
        line, = ax.step(np.concatenate([[0.0], v]), np.concatenate([[0.0], frac]), where="post", label=name)
        med = float(np.median(values))
        if np.isfinite(med):
            ax.axvline(med, color=line.get_color(), linestyle="--", linewidth=0.8)
            ax.plot([med], [0.5], "o", color=line.get_color(), label=f"median {med:.3g} {unit}")
        upper = max(upper, float(np.percentile(v, 95)))
    ax.set_xlim(0.0, 1.3 * upper if upper > 0 else 1.0)  # outliers would squash the informative part
    ax.set_ylim(0.0, 1.0)
    ax.set(title=title, xlabel=f"error ({unit})", ylabel="fraction of frames")
    ax.grid(True, linewidth=0.3)
    ax.legend(loc="lower right", fontsize="small")


def plot_error_cdf(out_png, **named_errors) -> Path:
    """Cumulative distributions of translation and rotation errors (two panels), medians marked.

    Args:
        out_png: output path.
        **named_errors: label -> ``(t_err, r_err)``, per-frame errors in metres and degrees
            (as returned by :func:`dm.metrics.pose_errors`).
    """
    t = {name: np.asarray(e[0], dtype=np.float64).ravel() for name, e in named_errors.items()}
    r = {name: np.asarray(e[1], dtype=np.float64).ravel() for name, e in named_errors.items()}
    fig = _new_figure(2)
    ax_t, ax_r = fig.subplots(1, 2)
    _cdf_panel(ax_t, t, "m", "translation error")
    _cdf_panel(ax_r, r, "deg", "rotation error")
    return save_figure(fig, out_png)
