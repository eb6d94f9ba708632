"""``previews.png``: what the refinement did to a few queries, one row each.

Columns: the query image | NeFeS colour at the APR pose | NeFeS colour at the refined pose | PCA of the
query's DFNet features | PCA of the fused NeFeS features at the APR and at the refined pose (one PCA basis
per row, so the three feature maps are coloured alike). Each row's title gives the frame and the
translation / rotation errors of both poses. Only these queries are rendered, once, after the refinement.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from dm import metrics
from dm.plots import save_figure
from models.feature_vis import pca_image

DEFAULT_COUNT = 4
_COLUMNS = ("query", "NeFeS at APR pose", "NeFeS at refined pose", "query features (PCA)",
            "fused features, APR", "fused features, refined")


def pick_queries(n: int, requested: list[int] | None, count: int = DEFAULT_COUNT) -> list[int]:
    """Preview rows: ``requested`` (``--preview_queries``; empty = none), else ``count`` spread over the set."""
    if requested is None:
        return sorted({int(round(x)) for x in np.linspace(0, n - 1, min(count, n))}) if n else []
    bad = [i for i in requested if not 0 <= i < n]
    if bad:
        raise ValueError(f"preview_queries {bad}: the test split has {n} queries (0..{n - 1})")
    return list(dict.fromkeys(int(i) for i in requested))


def _rgb(x: torch.Tensor) -> np.ndarray:
    """(1|, 3, h, w) in [0, 1] -> (h, w, 3) float for imshow."""
    return x.reshape(3, *x.shape[-2:]).detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


@torch.no_grad()
def render_rows(nefes, cam, featnet, split, indices, apr_poses: np.ndarray, refined: np.ndarray,
                device) -> list[dict]:
    """Images of each preview row. ``cam``: the refinement's :class:`dm.refine_apr.RenderCamera`;
    poses: (N, 3, 4) APR-frame camera-to-world in loader order."""
    rows = []
    for i in indices:
        item = split[i]
        img, hist = item["img"][None].to(device), item["hist"].to(device)
        outs = [cam.render(nefes, torch.as_tensor(p[i], dtype=torch.float32, device=device), hist)
                for p in (apr_poses, refined)]
        query_feat = featnet.extract_features(img, tuple(outs[0]["fused"].shape[-2:]))[0]   # (128, h, w)
        q_pca, basis = pca_image(query_feat.cpu())
        pcas = [pca_image(o["fused"][0].cpu(), basis)[0] for o in outs]
        rows.append({"index": i, "name": split.names[i], "images": [_rgb(img), _rgb(outs[0]["rgb"]),
                                                                     _rgb(outs[1]["rgb"]), q_pca, *pcas]})
    return rows


def plot_previews(out_png, rows: list[dict], gt: np.ndarray, apr_poses: np.ndarray, refined: np.ndarray) -> Path:
    """One row per entry of :func:`render_rows`, errors (metres, degrees) against ``gt`` in the titles."""
    idx = [r["index"] for r in rows]
    t_a, r_a = metrics.pose_errors(apr_poses[idx], gt[idx])
    t_r, r_r = metrics.pose_errors(refined[idx], gt[idx])
    fig = Figure(figsize=(2.6 * len(_COLUMNS), 2.4 * len(rows) + 0.3), layout="constrained")
    FigureCanvasAgg(fig)
    sub = fig.subfigures(len(rows), 1, squeeze=False)[:, 0]
    for k, (row, sf) in enumerate(zip(rows, sub)):
        sf.suptitle(f"query {row['index']} ({row['name']}): APR {t_a[k]:.3f} m {r_a[k]:.2f}° -> "
                    f"refined {t_r[k]:.3f} m {r_r[k]:.2f}°", fontsize="medium")
        for ax, im, title in zip(sf.subplots(1, len(_COLUMNS)), row["images"], _COLUMNS):
            ax.imshow(im)
            ax.set_title(title, fontsize="small")
            ax.set_axis_off()
    return save_figure(fig, out_png)
