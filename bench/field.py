"""Speed of the NeFeS fields and renderer: ``python -m bench.field [--threads N] [--train-seconds S]``.

Measures, for the paper field (``nefes_mlp``) and the tiny hash-grid config (:data:`TINY_HASHGRID`):

1. field forward+backward throughput (samples/s) at a few batch sizes;
2. a 60x80 render with features + fusion (no grad) at the paper sampling (64+64, union) and at the
   fast setting (hash grid: 32 coarse + 8 fine-only samples);
3. render + backward to the pose (the core of one test-time refinement iteration) at 30x40 and 60x80;
4. one training step (2048 rays, forward + backward + fused Adam);
5. optionally (``--train-seconds S``) a timed training run of the tiny hash grid on the analytic room
   below and its held-out PSNR.

On CUDA (when available) the same measurements run there too. Results are printed and written to
``logs/bench/field.txt``; the last line is the one-line summary. Timings are the minimum of a few
repeats. On a shared CPU use ``--threads 1`` (or ``OMP_WAIT_POLICY=PASSIVE``): OpenMP spin-waiting
makes 2 threads 10-30x slower when the cores are oversubscribed.

The analytic room (:func:`render_room`) is also the scene of ``tests/test_field_training.py``.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import time
from pathlib import Path

import torch

from config.options import available_devices
from dataset_loaders.images import luminance_histogram
from models.losses import l1_feature_loss, nerfw_color_loss, psnr
from models.nefes import PAPER_HPARAMS, build_from_hparams
from models.rays import get_rays
from models.renderer import render_image, render_pixels

#: tiny hash-grid NeFeS for CPU training/refinement (see the report of the field helper)
TINY_HASHGRID = dict(field_type="hashgrid", hash_level=8, hash_features=2, log2_hashmap_size=17, base_resolution=16,
                     finest_resolution=512, hg_hidden=64, hg_geo_dim=15, hg_coarse_level=2,
                     hg_coarse_log2_hashmap_size=16, hg_coarse_finest_resolution=64, hg_coarse_hidden=32,
                     fine_only=True, use_fusion_res=False, no_fusion_BN=False, feat_dim=128)
FAST_SAMPLES = (32, 8)        # hash grid: coarse samples, fine-only samples
PAPER_SAMPLES = (64, 64)

# ==============================================================================================
# analytic room: a textured box room with a box inside, rendered in closed form (NeRF frame)
# ==============================================================================================
ROOM = torch.tensor([[-2.0, -1.5, -2.0], [2.0, 1.5, 2.0]])
BLOCK = torch.tensor([[-0.5, -1.5, -0.6], [0.4, 0.1, 0.3]])


def _slab(o, d, box):
    """Entry / exit depths ``(R,)`` of rays ``o + t d`` through an axis-aligned box."""
    inv = 1.0 / torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)
    t1, t2 = (box[0] - o) * inv, (box[1] - o) * inv
    return torch.minimum(t1, t2).amax(-1), torch.maximum(t1, t2).amin(-1)


def _texture(p: torch.Tensor, axis: torch.Tensor) -> torch.Tensor:
    base = torch.tensor([[0.8, 0.4, 0.3], [0.3, 0.7, 0.4], [0.35, 0.45, 0.85]])[axis]
    s = torch.sin(3.0 * p[:, 0] + 1.0) * torch.sin(2.5 * p[:, 1] - 0.5) * torch.sin(2.0 * p[:, 2] + 0.3)
    stripes = 0.5 + 0.5 * torch.sin(7.0 * (p[:, 0] + p[:, 1] + p[:, 2]))
    return (base * (0.65 + 0.3 * s[:, None]) + 0.15 * stripes[:, None]).clamp(0, 1)


def _room_features(p: torch.Tensor, dim: int = 128) -> torch.Tensor:
    """Smooth 128-d stand-ins for DFNet features of surface points (fixed random Fourier map)."""
    g = torch.Generator().manual_seed(11)
    B = torch.randn(3, 16, generator=g) * 1.5
    A = torch.randn(32, dim, generator=g) / math.sqrt(32)
    z = p @ B
    return torch.cat([torch.sin(z), torch.cos(z)], -1) @ A


def render_room(c2w: torch.Tensor, h: int, w: int, focal: float, with_feat: bool = False) -> dict:
    """Ground truth of one camera ``(3,4)``: ``rgb (3,h,w)`` in [0,1], ``depth (h,w)``, [``feat (128,h,w)``]."""
    o, d = get_rays(c2w.float(), h, w, focal)
    _, t_room = _slab(o, d, ROOM)
    t_in, t_out = _slab(o, d, BLOCK)
    hit_block = (t_in <= t_out) & (t_in > 1e-4)
    t = torch.where(hit_block, t_in, t_room)
    p = o + t[:, None] * d
    gap_room = torch.minimum((p - ROOM[0]).abs(), (p - ROOM[1]).abs())
    gap_block = torch.minimum((p - BLOCK[0]).abs(), (p - BLOCK[1]).abs())
    axis = torch.where(hit_block, gap_block.argmin(-1), gap_room.argmin(-1))     # face normal axis
    rgb = _texture(p, axis)
    rgb = torch.where(hit_block[:, None], 1.0 - 0.6 * rgb, rgb)
    out = {"rgb": rgb.T.reshape(3, h, w), "depth": t.reshape(h, w)}
    if with_feat:
        out["feat"] = _room_features(p).T.reshape(-1, h, w)
    return out


def look_at(eye, target, up=(0.0, 1.0, 0.0)) -> torch.Tensor:
    """``(3,4)`` camera-to-world (OpenGL axes, looking along -z) at ``eye`` towards ``target``."""
    eye, target, up = (torch.as_tensor(v, dtype=torch.float32) for v in (eye, target, up))
    z = torch.nn.functional.normalize(eye - target, dim=0)
    x = torch.nn.functional.normalize(torch.linalg.cross(up, z), dim=0)
    return torch.stack([x, torch.linalg.cross(z, x), z, eye], dim=1)


def room_cameras(n: int, seed: int = 0) -> torch.Tensor:
    """``(n,3,4)`` deterministic cameras inside the room, looking around, roughly horizontal."""
    g = torch.Generator().manual_seed(seed)
    poses = []
    for i in range(n):
        eye = (torch.rand(3, generator=g) * 2 - 1) * torch.tensor([1.2, 0.5, 1.2]) + torch.tensor([0.0, 0.3, 0.0])
        ang = 2 * math.pi * (i + 0.5 * torch.rand(1, generator=g).item()) / n
        tilt = -0.25 + 0.3 * torch.rand(1, generator=g).item()
        poses.append(look_at(eye, eye + torch.tensor([math.cos(ang), tilt, math.sin(ang)])))
    return torch.stack(poses)


def scene_box(poses: torch.Tensor, far: float) -> torch.Tensor:
    """Hash-grid box: NeRF-frame camera positions +- far, ``(2,3)``."""
    t = poses[:, :3, 3]
    return torch.stack([t.amin(0) - far, t.amax(0) + far])


# ==============================================================================================
# measurements
# ==============================================================================================
def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device, repeats=3) -> float:
    fn()
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return best


def _model(kind: str, device, box):
    hp = PAPER_HPARAMS if kind == "nefes_mlp" else TINY_HASHGRID
    m = build_from_hparams(hp, None if kind == "nefes_mlp" else box).to(device)
    if kind == "hashgrid":       # a non-trivial table, as after training
        with torch.no_grad():
            m.fine.encoding.params.normal_(0, 0.3)
            m.coarse.encoding.params.normal_(0, 0.3)
    return m


def bench_device(device, log, quick=False) -> dict:
    res = {}
    poses = room_cameras(8).to(device)
    box = scene_box(poses.cpu(), 4.0)
    hist = torch.tensor([3.0, 8, 15, 25, 20, 12, 8, 5, 3, 1], device=device)
    for kind in ("hashgrid", "nefes_mlp"):
        m = _model(kind, device, box)
        # 1. field fwd+bwd throughput
        sizes = (4096, 16384) if kind == "nefes_mlp" or quick else (4096, 16384, 65536)
        for n in sizes:
            x = (torch.rand(n, 3, device=device) * 2 - 1)
            d = torch.nn.functional.normalize(torch.randn(n, 3, device=device), dim=-1)

            def fb():
                m.zero_grad(set_to_none=True)
                o = m.fine(x, d)
                (o["sigma"].sum() + o["rgb"].sum() + o["feat"].sum() + o["sigma_t"].sum()).backward()
            t = _time(fb, device)
            res[f"{kind} fwd+bwd samples/s @{n}"] = n / t
            log(f"[{device.type}] {kind:9s} field fwd+bwd {n:6d} samples: {t * 1e3:8.1f} ms  ({n / t:,.0f} samples/s)")
        # 2. 60x80 feature render (+fusion), no grad
        settings = [("paper 64+64", PAPER_SAMPLES, False)]
        settings.append(("fast 32+8 fine-only", FAST_SAMPLES, True) if kind == "hashgrid" else
                        ("fast 32+32", (32, 32), False))
        for name, (ns, ni), fo in settings:
            if kind == "nefes_mlp" and quick and ns == 64:
                continue

            def rend():
                with torch.no_grad():
                    render_image(m, poses[0], 60, 80, 73.125, 0.0, 4.0, hist, N_samples=ns, N_importance=ni,
                                 fine_only=fo)
            t = _time(rend, device, repeats=2 if kind == "nefes_mlp" else 3)
            res[f"{kind} render 60x80 {name}"] = t
            log(f"[{device.type}] {kind:9s} render 60x80 feat+fusion, {name:22s}: {t * 1e3:8.1f} ms")
        # 3. render + backward to the pose
        ns, ni = FAST_SAMPLES if kind == "hashgrid" else (32, 32)
        fo = kind == "hashgrid"
        for p in m.parameters():
            p.requires_grad_(False)
        for h, w in ((30, 40), (60, 80)):
            if kind == "nefes_mlp" and quick and h == 60:
                continue

            def refine_iter():
                c2w = poses[0].clone().requires_grad_(True)
                out = render_image(m, c2w, h, w, 73.125 * h / 60, 0.0, 4.0, hist, N_samples=ns, N_importance=ni,
                                   fine_only=fo)
                out["fused"].square().mean().backward()
            t = _time(refine_iter, device)
            res[f"{kind} render+bwd {h}x{w}"] = t
            log(f"[{device.type}] {kind:9s} render+backward to pose {h}x{w} ({ns}+{ni}): {t * 1e3:8.1f} ms")
        for p in m.parameters():
            p.requires_grad_(True)
        # 4. training step
        n_rays = 2048 if kind == "hashgrid" else 1024
        fused = device.type in ("cpu", "cuda")
        opt = torch.optim.Adam(m.parameters(), lr=1e-3, fused=fused)
        uv = torch.stack([torch.randint(0, 80, (4, n_rays // 4)), torch.randint(0, 60, (4, n_rays // 4))], -1)
        uv = uv.float().to(device)
        tgt = torch.rand(n_rays, 3, device=device)
        hists = hist.expand(4, 10)
        g = torch.Generator(device=device).manual_seed(0)
        ns, ni = FAST_SAMPLES if kind == "hashgrid" else PAPER_SAMPLES

        def step():
            out = render_pixels(m, poses[:4], uv, 60, 80, 73.125, 0.0, 4.0, hists, perturb=True, need_coarse=True,
                                N_samples=ns, N_importance=ni, generator=g)
            loss = nerfw_color_loss(out["rgb"], tgt, out["beta"], out["transient_sigmas"], out["rgb0"])["total"]
            loss = loss + 0.04 * l1_feature_loss(out["feat"], torch.zeros_like(out["feat"]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        t = _time(step, device, repeats=3)
        res[f"{kind} train step"] = t
        log(f"[{device.type}] {kind:9s} training step {n_rays} rays ({ns}+{ni}, fwd+bwd+Adam): {t * 1e3:8.1f} ms")
    return res


def train_room(device, seconds: float, log, h=60, w=80, n_train=60, n_rays=2048, lr=1e-2) -> float:
    """Train TINY_HASHGRID (stage-1 colour loss) on the analytic room for ``seconds``; held-out PSNR."""
    focal, far = 73.125 * h / 60, 4.0
    poses = room_cameras(n_train + 8, seed=0)
    imgs = torch.stack([render_room(p, h, w, focal)["rgb"] for p in poses])
    hists = torch.stack([luminance_histogram(i) for i in imgs])
    poses, imgs, hists = poses.to(device), imgs.to(device), hists.to(device)
    m = build_from_hparams(TINY_HASHGRID, scene_box(poses[:n_train].cpu(), far)).to(device)
    opt = torch.optim.Adam(m.parameters(), lr=lr, eps=1e-15, fused=True)
    g = torch.Generator(device=device).manual_seed(0)
    B, R = 4, n_rays // 4
    t0, step = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        idx = torch.randint(0, n_train, (B,), generator=g, device=device)
        pix = torch.randint(0, h * w, (B, R), generator=g, device=device)
        uv = torch.stack([pix % w, pix // w], -1).float()
        tgt = imgs[idx].flatten(2).gather(2, pix[:, None].expand(B, 3, R)).permute(0, 2, 1).reshape(-1, 3)
        out = render_pixels(m, poses[idx], uv, h, w, focal, 0.0, far, hists[idx], perturb=True, need_coarse=True,
                            N_samples=FAST_SAMPLES[0], N_importance=FAST_SAMPLES[1], generator=g, with_feat=False)
        loss = nerfw_color_loss(out["rgb"], tgt, out["beta"], out["transient_sigmas"], out["rgb0"])["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for group in opt.param_groups:             # exponential decay to lr/10 over the run
            group["lr"] = lr * 0.1 ** ((time.perf_counter() - t0) / seconds)
        step += 1
    with torch.no_grad():
        vals = [psnr(render_image(m, poses[i], h, w, focal, 0.0, far, hists[i], fuse=False,
                                  N_samples=FAST_SAMPLES[0], N_importance=FAST_SAMPLES[1])["rgb"][0], imgs[i]).item()
                for i in range(n_train, n_train + 8)]
    p = sum(vals) / len(vals)
    log(f"[{device.type}] tiny hashgrid trained {seconds:.0f} s ({step} steps of {n_rays} rays) on the room: "
        f"held-out PSNR {p:.2f} dB")
    return p


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--quick", action="store_true", help="fewer sizes (skips the slowest paper-field cases)")
    ap.add_argument("--train-seconds", type=float, default=0.0, help="also train the tiny hash grid for S seconds")
    ap.add_argument("--out", default="logs/bench/field.txt", help="result file")
    a = ap.parse_args(argv)
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    lines = []

    def log(msg):
        print(msg, flush=True)
        lines.append(msg)

    log(f"bench.field: torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '-')}")
    devices = available_devices()
    results = {}
    for dev in devices:
        results[dev.type] = bench_device(dev, log, quick=a.quick)
        if a.train_seconds > 0:
            train_room(dev, a.train_seconds, log)
    cpu = results["cpu"]
    log(f"hashgrid 60x80 feature render: {cpu['hashgrid render 60x80 fast 32+8 fine-only']:.2f} s; "
        f"fwd+bwd {max(v for k, v in cpu.items() if k.startswith('hashgrid fwd+bwd')):,.0f} samples/s")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
