"""One process or many under ``torchrun``: rank, device, CPU threads and the few collectives a sharded
refinement needs.

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE`` (and the rendezvous
variables). With ``WORLD_SIZE > 1`` a process group is initialised (gloo on CPU, NCCL on CUDA, one GPU
per rank); without it every method below is the single-process identity, so callers never branch.
Objects are exchanged with ``all_gather_object`` / ``gather_object``: no shared folder is needed.
"""
from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch

_logger = logging.getLogger(__name__)

#: A rank may wait this long at a collective for the slowest rank to finish its share of queries.
COLLECTIVE_TIMEOUT = datetime.timedelta(hours=12)


class DistributedError(ValueError):
    """The torchrun environment is unusable (message: one line)."""


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    active: bool = False        # a process group is initialised

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes the final files."""
        return self.rank == 0

    @property
    def is_local_main(self) -> bool:
        """Local rank 0: the one that manages this node's experiment folder (journal fingerprint)."""
        return self.local_rank == 0

    def init(self, device: torch.device) -> None:
        """Join the process group (no-op for one process). NCCL for CUDA devices, gloo otherwise."""
        if self.world_size == 1 or self.active:
            return
        import torch.distributed as td
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        td.init_process_group(backend=backend, timeout=COLLECTIVE_TIMEOUT)
        self.active = True
        _logger.info("rank %d of %d (local %d of %d), backend %s, device %s", self.rank, self.world_size,
                     self.local_rank, self.local_world_size, backend, device)

    def all_gather(self, obj) -> list:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.active:
            return [obj]
        import torch.distributed as td
        out = [None] * self.world_size
        td.all_gather_object(out, obj)
        return out

    def gather(self, obj) -> list | None:
        """Every rank's ``obj`` in rank order on rank 0; None on the other ranks."""
        if not self.active:
            return [obj]
        import torch.distributed as td
        out = [None] * self.world_size if self.is_main else None
        td.gather_object(obj, out, dst=0)
        return out

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as td
            td.barrier()

    def close(self) -> None:
        if self.active:
            import torch.distributed as td
            td.destroy_process_group()
            self.active = False


def _env_int(env, key: str, default: int) -> int:
    value = env.get(key)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise DistributedError(f"environment variable {key}={value!r} is not an integer") from None


def from_env(env=None) -> Dist:
    """The process's place in a torchrun job (one process when ``WORLD_SIZE`` is unset or 1)."""
    env = os.environ if env is None else env
    world = _env_int(env, "WORLD_SIZE", 1)
    if world <= 1:
        return Dist()
    if "RANK" not in env:
        raise DistributedError(f"WORLD_SIZE={world} but RANK is not set: start the job with torchrun")
    d = Dist(rank=_env_int(env, "RANK", 0), world_size=world, local_rank=_env_int(env, "LOCAL_RANK", 0),
             local_world_size=_env_int(env, "LOCAL_WORLD_SIZE", 1))
    if not (0 <= d.rank < world and 0 <= d.local_rank < d.local_world_size):
        raise DistributedError(f"inconsistent torchrun environment: RANK={d.rank}, WORLD_SIZE={world}, "
                               f"LOCAL_RANK={d.local_rank}, LOCAL_WORLD_SIZE={d.local_world_size}")
    return d


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def thread_share(num_threads: int, local_world_size: int, cores: int | None = None) -> int:
    """Intra-op threads of one rank: ``num_threads`` when given (> 0), else this rank's share of the cores.

    Ranks on one machine must not oversubscribe it: two processes with 2 threads each on 2 cores run a
    refinement query about 13x slower than one process alone.
    """
    if num_threads > 0:
        return num_threads
    cores = available_cores() if cores is None else cores
    return max(1, cores // max(1, local_world_size))


def pick_device(name: str, dist: Dist) -> torch.device:
    """``--device`` for this rank. Under torchrun, ``auto`` and ``cuda`` mean ``cuda:LOCAL_RANK`` when CUDA
    is available (one GPU per rank); an explicit ``cuda:K`` is kept."""
    from config.options import get_device
    if dist.world_size == 1:
        return get_device(name)
    if name in (None, "", "auto", "cuda") and torch.cuda.is_available():
        n = torch.cuda.device_count()
        if dist.local_rank >= n:
            raise DistributedError(f"LOCAL_RANK {dist.local_rank} needs a GPU of its own but this machine has {n}: "
                                   f"use --nproc_per_node={n} or --device cpu")
        return torch.device("cuda", dist.local_rank)
    return get_device(name)
