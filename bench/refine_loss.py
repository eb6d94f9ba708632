"""Refinement loss, explicit vs folded: ``python -m bench.refine_loss [--repeats N]``.

Times forward + backward of the paper's per-channel refinement loss on 128-channel fused features:
the explicit path (bicubic upsampling to the working size, border crop, cosine per channel; still
used for ``per_pixel=True``) against :class:`dm.refine_loss.UpsampledCosineLoss`, which gets the same
value from the render-size map. Two shapes: the demo's (render 30x40, working 60x80, crop 3) and the
paper's (render 60x80, working 240x320, crop 10). Prints median milliseconds and the largest
difference in loss and gradient; also writes ``logs/bench/refine_loss.txt`` (``--out``).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dm.refine_loss import UpsampledCosineLoss, bicubic_resize, crop_border as _crop  # noqa: E402
from models.losses import feature_cosine_loss  # noqa: E402

SHAPES = {"demo": ((30, 40), (60, 80), 3), "paper": ((60, 80), (240, 320), 10)}


def _median_ms(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def compare(render_hw, work_hw, crop: int, repeats: int, channels: int = 128) -> dict:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, channels, *render_hw, generator=g, requires_grad=True)
    target = torch.randn(1, channels, *work_hw, generator=g)
    target_c = _crop(target, crop)[0]
    folded = UpsampledCosineLoss(target, render_hw, crop)

    def explicit():
        return feature_cosine_loss(_crop(bicubic_resize(x, work_hw), crop)[0], target_c)

    def step(loss_fn):
        x.grad = None
        loss = loss_fn(x) if loss_fn is folded else loss_fn()
        loss.backward()
        return loss.detach(), x.grad.clone()

    (l_e, g_e), (l_f, g_f) = step(explicit), step(folded)
    return {"explicit_ms": _median_ms(lambda: step(explicit), repeats),
            "folded_ms": _median_ms(lambda: step(folded), repeats),
            "loss_diff": abs(l_e - l_f).item(), "grad_rel_diff": ((g_e - g_f).abs().max() / g_e.abs().max()).item()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--out", type=Path, default=REPO / "logs" / "bench")
    a = p.parse_args(argv)
    lines = [f"refinement loss forward + backward, 128 channels, {torch.get_num_threads()} threads (median ms)",
             f"{'shape':6s} {'render':>8s} {'working':>8s} {'crop':>4s} {'explicit':>9s} {'folded':>7s} "
             f"{'speed-up':>8s} {'|d loss|':>9s} {'grad rel diff':>13s}"]
    for name, (render_hw, work_hw, crop) in SHAPES.items():
        r = compare(render_hw, work_hw, crop, a.repeats)
        lines.append(f"{name:6s} {'x'.join(map(str, render_hw)):>8s} {'x'.join(map(str, work_hw)):>8s} {crop:4d} "
                     f"{r['explicit_ms']:9.2f} {r['folded_ms']:7.2f} {r['explicit_ms'] / r['folded_ms']:7.1f}x "
                     f"{r['loss_diff']:9.1e} {r['grad_rel_diff']:13.1e}")
    text = "\n".join(lines)
    print(text)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "refine_loss.txt").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
