"""Hash-grid encoding speed: ``python -m bench.hashgrid [--device cpu|cuda|all] [--repeats R]``.

For the nerfh_tcnn grid (16 levels, T = 2^19, resolutions 16..2048) and a small one (8 levels,
T = 2^15, resolutions 16..2048) and 2^14, 2^16, 2^18 points it times

* ``fwd``        forward under ``torch.no_grad`` (rendering),
* ``train``      forward + backward to the table + ``Adam(fused=True)`` step (NeFeS training),
* ``pos``        forward + backward to the positions only, table frozen (test-time pose refinement).

Points are NeRF-like samples (``--points rays``: 64 sorted samples on each of N/64 rays crossing
the unit cube) or uniform in the cube (``--points uniform``, worst case for caches). The median
and the minimum of ``--repeats`` runs are printed and written to ``logs/bench/hashgrid.txt``.
The CPU lookup is the fused kernel when it builds (``NEFES_CPU_KERNEL=0``: the pure-PyTorch path;
the first line says which). The machines are shared: expect up to 2x noise, compare minima. On an oversubscribed machine
OpenMP's spin-waiting makes many-small-op code 10-100x slower with 2 threads; run with
``OMP_WAIT_POLICY=PASSIVE`` or ``--threads 1`` there.
"""
from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from config.options import available_devices
from models.hashgrid import HashGridEncoding

CONFIGS = {  # name -> HashGridEncoding kwargs
    "L16_T19": dict(n_levels=16, n_features_per_level=2, log2_hashmap_size=19, base_resolution=16,
                    finest_resolution=2048),
    "L8_T15": dict(n_levels=8, n_features_per_level=2, log2_hashmap_size=15, base_resolution=16,
                   finest_resolution=2048),
}


def make_points(n: int, kind: str, generator: torch.Generator, samples_per_ray: int = 64) -> torch.Tensor:
    """(n, 3) points in [0, 1]^3: sorted samples along random chords of the cube, or uniform."""
    if kind == "uniform":
        return torch.rand(n, 3, generator=generator)
    n_rays = -(-n // samples_per_ray)
    a = torch.rand(n_rays, 3, generator=generator)          # chord from a to b through the cube
    b = torch.rand(n_rays, 3, generator=generator)
    t = torch.sort(torch.rand(n_rays, samples_per_ray, generator=generator), dim=-1).values
    return (a[:, None] + (b - a)[:, None] * t[..., None]).reshape(-1, 3)[:n].contiguous()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_it(fn, device: torch.device, repeats: int, warmup: int = 2) -> tuple[float, float]:
    """(median, min) wall time of fn() in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return times[len(times) // 2], times[0]


def bench_device(device: torch.device, sizes, repeats: int, points: str, log) -> None:
    gen = torch.Generator().manual_seed(0)
    for name, cfg in CONFIGS.items():
        enc = HashGridEncoding(**cfg, use_tcnn="never").to(device)
        opt = torch.optim.Adam(enc.parameters(), lr=1e-2, betas=(0.9, 0.99), eps=1e-15,
                               fused=device.type in ("cpu", "cuda"))
        for log2_n in sizes:
            x = make_points(1 << log2_n, points, gen).to(device)
            g_out = torch.randn(x.shape[0], enc.n_output_dims, device=device)

            def fwd():
                with torch.no_grad():
                    enc(x)

            def train():
                opt.zero_grad()
                enc(x).backward(g_out)
                opt.step()

            def pos():
                enc.params.requires_grad_(False)
                xr = x.clone().requires_grad_(True)
                enc(xr).backward(g_out)
                enc.params.requires_grad_(True)

            row = [f"{device.type:4s} {name:8s} N=2^{log2_n:<2d}"]
            for label, fn in (("fwd", fwd), ("train", train), ("pos", pos)):
                med, best = time_it(fn, device, repeats)
                row.append(f"{label} {med:8.1f} (min {best:7.1f})")
            log("  ".join(row) + "  ms")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="all", help="cpu, cuda or all (cuda only when available)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--sizes", type=int, nargs="+", default=[14, 16, 18], help="log2 of the point counts")
    ap.add_argument("--points", choices=("rays", "uniform"), default="rays")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--out", default="logs/bench/hashgrid.txt")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [d for d in available_devices() if args.device in ("all", d.type)]
    if not devices:
        raise SystemExit(f"error: --device {args.device}: no such device available")
    lines = []

    def log(s: str) -> None:
        print(s, flush=True)
        lines.append(s)

    from models import hashgrid_cpu
    cpu_path = ("fused CPU kernel" if hashgrid_cpu.get() is not None else
                f"pure PyTorch ({'NEFES_CPU_KERNEL=0' if not hashgrid_cpu.enabled() else hashgrid_cpu.error()})")
    log(f"# hash grid benchmark: torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, points={args.points}, median (min) of {args.repeats}; "
        f"CPU lookup: {cpu_path}")
    for dev in devices:
        bench_device(dev, args.sizes, args.repeats, args.points, log)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()
