"""DFNet benchmarks: ``python -m bench.dfnet [--train] [--device cpu|cuda]``.

* default: forward and forward+backward time of the APR (pose path) and of feature extraction
  (level 0, and all three levels) for a few image sizes and widths, on the CPU (and CUDA if present).
* ``--train``: trains a DFNet on an analytic textured room (:class:`ToyRoom`, ~5 x 4 m, cameras
  within ~2 m of its centre) with a fake renderer (low-resolution render, upsampled and colour
  shifted), and reports wall time and median test errors. A stand-in for the synthetic demo scene.

Numbers are printed and written to ``logs/bench/dfnet*.txt``.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from config.options import available_devices
from core import geometry
from dataset_loaders.images import luminance_histogram
from models.dfnet import DFNet


# ----------------------------------------------------------------------------------------------
# analytic room
# ----------------------------------------------------------------------------------------------
class ToyRoom:
    """A box room with procedurally textured walls, rendered by ray casting (no learning involved).

    Room frame = APR frame: x right, y up, metres, centred at the origin; half extents ``half``.
    Every wall gets a base colour, a few random plane waves and a few coloured rectangles, so views
    are distinctive. Cameras use OpenGL axes (look along -z), pixel (u, v) direction
    ((u - W/2)/f, -(v - H/2)/f, -1).
    """

    def __init__(self, half=(2.5, 1.5, 2.0), seed: int = 0, n_waves: int = 4, n_rects: int = 8):
        g = torch.Generator().manual_seed(seed)
        self.half = torch.tensor(half)
        P = 6
        self.base = 0.25 + 0.5 * torch.rand(P, 3, generator=g)
        ang = torch.rand(P, n_waves, generator=g) * 2 * math.pi
        freq = 0.3 + 1.5 * torch.rand(P, n_waves, generator=g)               # cycles per metre
        self.wave_k = torch.stack([ang.cos(), ang.sin()], -1) * freq[..., None]  # (P, F, 2)
        self.wave_phase = torch.rand(P, n_waves, generator=g) * 2 * math.pi
        self.wave_col = (torch.rand(P, n_waves, 3, generator=g) - 0.5) * 0.35
        centre = (torch.rand(P, n_rects, 2, generator=g) * 2 - 1) * 1.6
        size = 0.15 + 0.5 * torch.rand(P, n_rects, 2, generator=g)
        self.rect_lo, self.rect_hi = centre - size, centre + size             # (P, K, 2)
        self.rect_col = torch.rand(P, n_rects, 3, generator=g)

    def sample_poses(self, n: int, generator: torch.Generator, spread=(1.5, 0.4, 1.2),
                     pitch_deg: float = 15.0, roll_deg: float = 5.0) -> torch.Tensor:
        """(n, 3, 4) camera-to-world: positions uniform in ±spread, yaw uniform, small pitch/roll."""
        t = (torch.rand(n, 3, generator=generator) * 2 - 1) * torch.tensor(spread)
        yaw = torch.rand(n, generator=generator) * 2 * math.pi
        pitch = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(pitch_deg)
        roll = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(roll_deg)
        e = torch.eye(3)
        R = (geometry.so3_exp(e[1] * yaw[:, None]) @ geometry.so3_exp(e[0] * pitch[:, None])
             @ geometry.so3_exp(e[2] * roll[:, None]))
        return torch.cat([R, t[:, :, None]], -1)

    @torch.no_grad()
    def render(self, c2w: torch.Tensor, h: int, w: int, focal: float) -> torch.Tensor:
        """(B, 3, 4) camera-to-world -> (B, 3, h, w) colours in [0, 1]."""
        v, u = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
        d_cam = torch.stack([(u - w / 2) / focal, -(v - h / 2) / focal, -torch.ones_like(u)], -1).reshape(-1, 3)
        d = torch.einsum("bij,rj->bri", c2w[:, :3, :3].float(), d_cam)        # (B, R, 3)
        o = c2w[:, None, :3, 3].float().expand_as(d)
        # Exit distance through each slab; the nearest one is the wall hit.
        bound = torch.where(d > 0, self.half, -self.half)
        t_axis = (bound - o) / torch.where(d.abs() < 1e-9, torch.full_like(d, 1e-9), d)
        t_axis = torch.where(t_axis > 0, t_axis, torch.full_like(t_axis, 1e9))
        t_hit, axis = t_axis.min(-1)                                         # (B, R)
        p = o + d * t_hit[..., None]
        plane = axis * 2 + (torch.gather(d, -1, axis[..., None])[..., 0] > 0).long()
        other = torch.tensor([[1, 2], [0, 2], [0, 1]])[axis]                   # in-plane axes
        uv = torch.gather(p, -1, other)                                      # (B, R, 2)
        waves = torch.sin(2 * math.pi * (self.wave_k[plane] @ uv[..., None])[..., 0] + self.wave_phase[plane])
        col = self.base[plane] + (waves[..., None] * self.wave_col[plane]).sum(-2)
        inside = ((uv[..., None, :] > self.rect_lo[plane]) & (uv[..., None, :] < self.rect_hi[plane])).all(-1)
        last = torch.where(inside, torch.arange(inside.shape[-1]), -1).amax(-1)  # topmost rectangle
        rect = torch.gather(self.rect_col[plane], -2, last.clamp_min(0)[..., None, None].expand(*last.shape, 1, 3))[..., 0, :]
        col = torch.where((last >= 0)[..., None], rect, col)
        # Darken with distance a little so depth is visible.
        col = col * (1.0 - 0.05 * t_hit[..., None].clamp(max=6.0))
        return col.clamp(0, 1).reshape(len(c2w), h, w, 3).permute(0, 3, 1, 2).contiguous()


def toy_problem(n_train: int, n_test: int, h: int, w: int, seed: int = 0, render_scale: int = 4):
    """Real images of the toy room, a fake renderer and the data tensors.

    Returns (room, DFNetTrainData, render_fn). The fake renderer renders at 1/render_scale, upsamples
    bilinearly and shifts the colours, mimicking a low-resolution NeFeS render after the ACT.
    """
    from models.dfnet_training import DFNetTrainData
    room = ToyRoom(seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    focal = 0.8 * w
    tr, te = room.sample_poses(n_train, g), room.sample_poses(n_test, g)
    imgs_tr, imgs_te = room.render(tr, h, w, focal), room.render(te, h, w, focal)

    def render_fn(c2w, hist):
        s = render_scale
        low = room.render(c2w.cpu(), h // s, w // s, focal / s)
        return (F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False) * 0.92 + 0.03).clamp(0, 1)

    data = DFNetTrainData(imgs_tr, tr, torch.stack([luminance_histogram(i) for i in imgs_tr]), imgs_te, te)
    return room, data, render_fn


# ----------------------------------------------------------------------------------------------
# timing
# ----------------------------------------------------------------------------------------------
def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device, reps: int) -> float:
    fn()
    _sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    _sync(device)
    return (time.perf_counter() - t) / reps


def bench_forward(device, sizes, widths, batch: int, reps: int) -> list[str]:
    lines = [f"device={device} threads={torch.get_num_threads()} batch={batch} (ms per batch)",
             f"{'width':>6} {'size':>9} {'params':>8} {'pose fwd':>9} {'pose f+b':>9} {'feat0 fwd':>10} "
             f"{'feat0 f+b':>10} {'feat012 f+b':>12}"]
    for width in widths:
        net = DFNet(width=width).to(device)
        n_par = sum(p.numel() for p in net.parameters()) / 1e6
        for (h, w) in sizes:
            x = torch.rand(batch, 3, h, w, device=device)

            def pose_fwd():
                with torch.no_grad():
                    net.predict_pose(x)

            def pose_fb():
                net.zero_grad(set_to_none=True)
                net.predict_pose(x).sum().backward()

            def feat_fwd():
                with torch.no_grad():
                    net.extract_features(x)

            def feat_fb(levels=(0,)):
                net.zero_grad(set_to_none=True)
                pose, feats = net.pose_and_features(x, levels)
                (pose.sum() + sum(f.square().mean() for f in feats.values())).backward()

            r = max(1, reps)
            ms = [1000 * _time(f, device, r) for f in (pose_fwd, pose_fb, feat_fwd, feat_fb,
                                                        lambda: feat_fb((0, 1, 2)))]
            lines.append(f"{width:>6g} {h:>4}x{w:<4} {n_par:>7.2f}M " + " ".join(
                f"{m:>{k}.1f}" for m, k in zip(ms, (9, 9, 10, 10, 12))))
            print(lines[-1], flush=True)
    return lines


# ----------------------------------------------------------------------------------------------
# toy training run
# ----------------------------------------------------------------------------------------------
def bench_training(a) -> list[str]:
    import tempfile

    from models.dfnet_training import DFNetTrainConfig, train_dfnet
    torch.manual_seed(a.seed)
    _, data, render_fn = toy_problem(a.n_train, a.n_test, a.height, a.width_px, seed=a.seed)
    cfg = DFNetTrainConfig(epochs=a.epochs, batch_size=a.batch_size, learning_rate=a.lr,
                           combine_loss_w=tuple(a.combine_loss_w), rvs_loss_w=a.rvs_loss_w,
                           rvs_refresh_rate=a.rvs_refresh_rate, rvs_trans=a.rvs_trans, rvs_rotation=a.rvs_rotation,
                           d_max=a.d_max, rvs_count=a.rvs_count, triplet_levels=tuple(a.triplet_levels),
                           triplet_crop=tuple(a.triplet_crop),
                           patience=(10_000, a.plateau), lr_factor=a.lr_factor, time_budget_min=a.budget_min, seed=a.seed)
    net = DFNet(width=a.dfnet_width)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        res = train_dfnet(net, data, render_fn, cfg, a.out or tmp, device=torch.device(a.device))
    dt = time.perf_counter() - t0
    b = res["best_val"]
    line = (f"toy room {a.n_train} train/{a.n_test} test {a.height}x{a.width_px}, width {a.dfnet_width}, "
            f"batch {a.batch_size}, lr {a.lr} (x{a.lr_factor} after {a.plateau} bad epochs), w {a.combine_loss_w}, rvs_w {a.rvs_loss_w} "
            f"(trans {a.rvs_trans} m, rot {a.rvs_rotation} deg, every {a.rvs_refresh_rate}), levels {a.triplet_levels}, crop {a.triplet_crop}: "
            f"{res['epochs_run']} epochs in {dt:.0f} s; best epoch {res['best_epoch']}: median "
            f"{b.get('median_t', float('nan')):.3f} m / {b.get('median_r', float('nan')):.2f} deg "
            f"(mean {b.get('mean_t', float('nan')):.3f} m / {b.get('mean_r', float('nan')):.2f} deg)")
    print(line, flush=True)
    return [line]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--train", action="store_true", help="toy-room training run instead of timings")
    p.add_argument("--n_train", type=int, default=200)
    p.add_argument("--n_test", type=int, default=100)
    p.add_argument("--height", type=int, default=120)
    p.add_argument("--width_px", type=int, default=160)
    p.add_argument("--dfnet_width", type=float, default=0.25)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--combine_loss_w", type=float, nargs=3, default=[1.0, 1.0, 1.0])
    p.add_argument("--rvs_loss_w", type=float, default=1.0)
    p.add_argument("--rvs_refresh_rate", type=int, default=10)
    p.add_argument("--rvs_trans", type=float, default=0.3)
    p.add_argument("--rvs_rotation", type=float, default=10.0)
    p.add_argument("--d_max", type=float, default=0.2)
    p.add_argument("--rvs_count", type=int, default=0)
    p.add_argument("--triplet_levels", type=int, nargs="*", default=[0])
    p.add_argument("--triplet_crop", type=int, nargs=2, default=[0, 0])
    p.add_argument("--plateau", type=int, default=50)
    p.add_argument("--lr_factor", type=float, default=0.95)
    p.add_argument("--budget_min", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="keep the training outputs here")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    a.device = "cuda" if a.device == "auto" and torch.cuda.is_available() else ("cpu" if a.device == "auto" else a.device)
    out = Path("logs/bench")
    out.mkdir(parents=True, exist_ok=True)
    if a.train:
        lines = bench_training(a)
        name = "dfnet_training.txt"
    else:
        sizes = [(60, 80), (120, 160), (240, 320)]
        lines = []
        devices = [d for d in available_devices() if a.device != "cpu" or d.type == "cpu"]
        for dev in devices:
            widths = (0.125, 0.25, 0.5, 1.0)
            lines += bench_forward(dev, sizes, widths, a.batch, a.reps if dev.type == "cpu" else 10 * a.reps)
        name = "dfnet.txt"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    with (out / name).open("a") as f:
        f.write(f"# {stamp}\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
