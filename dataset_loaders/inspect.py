"""Inspect a scene: ``python -m dataset_loaders.inspect --config CFG --out DIR [--key value ...]``.

Prints counts, image sizes, focal, near/far and the pose normalisation in use with where each came
from, and writes to DIR:

* ``poses_train.txt``, ``poses_test.txt``: one row per frame (loader order), 12 numbers = row-major
  3x4 camera-to-world in the APR frame (metres);
* ``cameras.png``: training and test camera centres with short viewing-direction arrows (3D view, and
  the x-z and x-y projections of the APR frame);
* ``coverage_test.txt``: per test frame, the distance (m) to the nearest training camera, and to the
  nearest one that looks the same way (optical axes within ``SIMILAR_VIEW_DEG``; ``inf`` if none).
  A field renders a view only as well as training views like it constrain it: on the synthetic
  benchmark streets a test view's render PSNR falls with the second distance (docs/convergence.md).

A config with ``datadir``, ``dataset_type``, ``df``, ``trainskip``, ``testskip`` is enough. No image
is decoded.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from config import options
from core.errors import EXIT_INPUT_ERROR, cli_main

_logger = logging.getLogger(__name__)
MAX_ARROWS = 150  # per split, so the plot stays readable for thousands of frames
SIMILAR_VIEW_DEG = 15.0  # "looks the same way": optical axes within this angle


def camera_spread(c2w: np.ndarray) -> float:
    """Diagonal (m) of the bounding box of the camera centres of ``(N, 3, 4)`` poses."""
    c = np.asarray(c2w)[:, :, 3]
    return float(np.linalg.norm(c.max(0) - c.min(0)))


def view_coverage(train_c2w: np.ndarray, query_c2w: np.ndarray,
                  max_angle_deg: float = SIMILAR_VIEW_DEG) -> tuple[np.ndarray, np.ndarray]:
    """For each query pose, the distance to the nearest training camera centre, and to the nearest one
    whose optical axis is within ``max_angle_deg`` of the query's (``inf`` when none is).

    Poses are ``(N, 3, 4)`` camera-to-world in one frame; the optical axis is the third rotation column
    (its sign differs between OpenCV and OpenGL cameras, the angle between two cameras does not).
    """
    tr, q = np.asarray(train_c2w, np.float64), np.asarray(query_c2w, np.float64)
    dist = np.linalg.norm(q[:, None, :, 3] - tr[None, :, :, 3], axis=-1)           # (Q, N)
    cos = np.einsum("qi,ni->qn", q[:, :, 2], tr[:, :, 2]) / (
        np.linalg.norm(q[:, :, 2], axis=-1)[:, None] * np.linalg.norm(tr[:, :, 2], axis=-1)[None])
    similar = cos >= np.cos(np.radians(max_angle_deg))
    return dist.min(1), np.where(similar, dist, np.inf).min(1)


def format_coverage(near: np.ndarray, similar: np.ndarray, spread: float) -> str:
    """One line: median / 90th percentile of both :func:`view_coverage` distances, in m and % of ``spread``."""
    spread = max(spread, 1e-12)

    def stats(d):
        finite = d[np.isfinite(d)]
        if finite.size == 0:
            return "none"
        med, p90 = np.median(finite), np.percentile(finite, 90)
        return f"median {med:.3f} m ({100 * med / spread:.1f} %), 90th pct {p90:.3f} m ({100 * p90 / spread:.1f} %)"
    none = int((~np.isfinite(similar)).sum())
    return (f"test views to the nearest training camera: {stats(near)}; to the nearest looking the same way "
            f"(within {SIMILAR_VIEW_DEG:g} deg): {stats(similar)}" + (f", none for {none}" if none else "")
            + f" [spread {spread:.3f} m]")


def save_poses(path: Path, c2w: np.ndarray) -> None:
    """(N, 3, 4) -> N×12 text rows (row-major 3x4)."""
    np.savetxt(path, np.asarray(c2w).reshape(len(c2w), 12))


def plot_cameras(path: Path, splits: dict[str, np.ndarray], title: str = "") -> None:
    """Camera centres and viewing directions (−z of the OpenGL camera) of each split -> PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    allc = np.concatenate([p[:, :, 3] for p in splits.values()])
    extent = float(np.ptp(allc, axis=0).max()) or 1.0
    arrow = 0.06 * extent
    colours = {"train": "tab:blue", "test": "tab:red"}
    fig = plt.figure(figsize=(15, 5))
    ax3 = fig.add_subplot(1, 3, 1, projection="3d")
    views = [(fig.add_subplot(1, 3, 2), (0, 2), "top view (x, z)"), (fig.add_subplot(1, 3, 3), (0, 1), "side view (x, y)")]
    for name, c2w in splits.items():
        c, d = c2w[:, :, 3], -c2w[:, :, 2]
        sel = np.linspace(0, len(c) - 1, min(MAX_ARROWS, len(c))).round().astype(int)
        col = colours.get(name, None)
        ax3.scatter(c[:, 0], c[:, 1], c[:, 2], s=4, color=col, label=f"{name} ({len(c)})")
        ax3.quiver(c[sel, 0], c[sel, 1], c[sel, 2], d[sel, 0], d[sel, 1], d[sel, 2], length=arrow, color=col, linewidth=0.6)
        for ax, (i, j), _ in views:
            ax.scatter(c[:, i], c[:, j], s=4, color=col, label=f"{name} ({len(c)})")
            ax.quiver(c[sel, i], c[sel, j], d[sel, i] * arrow, d[sel, j] * arrow, color=col, angles="xy",
                      scale_units="xy", scale=1, width=0.003)
    ax3.set_xlabel("x (m)"), ax3.set_ylabel("y (m)"), ax3.set_zlabel("z (m)")
    ax3.legend(loc="upper left", fontsize=8)
    for ax, (i, j), label in views:
        ax.set_xlabel("xyz"[i] + " (m)"), ax.set_ylabel("xyz"[j] + " (m)"), ax.set_title(label)
        ax.set_aspect("equal", adjustable="datalim")
        ax.grid(alpha=0.3)
    fig.suptitle(title + " — APR frame, arrows = viewing direction")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def describe(scene) -> str:
    ws = scene.world_setup
    A = np.array2string(scene.pose_avg, precision=5, suppress_small=True, prefix="    ")
    lines = [
        f"scene       {scene.name} ({scene.dataset_type})",
        f"datadir     {scene.datadir}",
        f"images      {scene.provenance.get('images', '?')}",
        f"poses       {scene.provenance.get('poses', '?')}",
        f"counts      train {len(scene.train)}, test {len(scene.test)}",
        f"image size  raw {scene.W_raw}x{scene.H_raw} -> working {scene.W}x{scene.H} (W x H)",
        f"focal       {scene.focal:.4f} px at working size ({scene.focal_raw:.4f} px raw): {scene.provenance.get('focal', '')}",
        f"near/far    {scene.near:g} / {scene.far:g} NeRF units ({scene.provenance.get('near_far', '')})",
        f"world setup near {ws.near:g}, far {ws.far:g}, pose_scale {ws.pose_scale:g}, "
        f"move_all_cam_vec {ws.move_all_cam_vec}, pose_scale2 {ws.pose_scale2:g}",
        f"            {scene.provenance.get('world_setup', '')}",
        f"pose_avg    {scene.provenance.get('pose_avg', '')}",
        f"    {A}",
    ]
    if "notes" in scene.provenance:
        lines.append(f"notes       {scene.provenance['notes']}")
    for name in ("train", "test"):
        c = getattr(scene, name).poses[:, :, 3]
        lines.append(f"{name:5s} cams  APR centres min {np.round(c.min(0), 3).tolist()} max {np.round(c.max(0), 3).tolist()} m")
    return "\n".join(lines)


@cli_main
def main(argv=None) -> int:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--out", type=str, default=None)
    pre.add_argument("-h", "--help", action="store_true")
    known, rest = pre.parse_known_args(sys.argv[1:] if argv is None else argv)
    if known.help or known.out is None:
        print(__doc__.strip().splitlines()[0])
        if known.out is None and not known.help:
            print("error: --out DIR is required", file=sys.stderr)
            return EXIT_INPUT_ERROR
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")  # describe() prints the rest
    args = options.parse_args(rest)
    args.save_pose_avg_stats = False  # inspecting never rewrites the shipped statistics
    from dataset_loaders.scene import load_scene
    scene = load_scene(args, preload=False)
    out = Path(known.out)
    out.mkdir(parents=True, exist_ok=True)
    save_poses(out / "poses_train.txt", scene.train.poses)
    save_poses(out / "poses_test.txt", scene.test.poses)
    plot_cameras(out / "cameras.png", {"train": scene.train.poses, "test": scene.test.poses},
                 title=f"{scene.name} ({scene.dataset_type})")
    print(describe(scene))
    written = [out / "poses_train.txt", out / "poses_test.txt", out / "cameras.png"]
    if len(scene.train) and len(scene.test):
        near, similar = view_coverage(scene.train.poses, scene.test.poses)
        written.append(out / "coverage_test.txt")
        np.savetxt(written[-1], np.stack([near, similar], 1), fmt="%.6f",
                   header=f"per test frame (loader order): nearest training camera (m), nearest one with the "
                          f"optical axis within {SIMILAR_VIEW_DEG:g} deg (m; inf: none)")
        print(format_coverage(near, similar, camera_spread(scene.train.poses)))
    print(f"wrote {', '.join(str(p) for p in written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
