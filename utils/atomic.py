"""Atomic file writes: the data goes to a temporary file in the target folder, then ``os.replace``
puts it in place, so an interrupted run never leaves a half-written checkpoint or meta file."""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file to ``path`` (parents are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    """``torch.save`` through :func:`atomic_write`. torch's zip writer reports a failed write (a full
    disk, a quota) as a ``RuntimeError`` with C++ context; it becomes an ``OSError`` naming the file."""
    import torch

    def save(tmp):
        try:
            torch.save(obj, tmp)
        except RuntimeError as e:
            if "PytorchStreamWriter" not in str(e) and "write failed" not in str(e):
                raise
            free = shutil.disk_usage(Path(path).parent).free
            raise OSError(errno.ENOSPC if free < (64 << 20) else errno.EIO,
                          f"cannot write {path} (torch.save: write failed; {free >> 20} MiB free on that disk)") from None
    return atomic_write(path, save)


class AtomicFileSet:
    """Files that appear together or not at all: :meth:`add` writes each to a temporary file beside its
    target, :meth:`commit` renames them all in the order added (put the file that marks completion last).
    Leaving the ``with`` block by an exception removes the temporary files; no target is touched."""

    def __init__(self):
        self._staged: list[tuple[str, Path]] = []

    def add(self, path: str | os.PathLike, write: Callable[[str], None]) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        self._staged.append((tmp, path))
        write(tmp)
        return path

    def add_text(self, path: str | os.PathLike, text: str) -> Path:
        return self.add(path, lambda tmp: Path(tmp).write_text(text))

    def commit(self) -> list[Path]:
        done = []
        for tmp, path in self._staged:
            os.replace(tmp, path)
            done.append(path)
        self._staged = []
        return done

    def discard(self) -> None:
        for tmp, _ in self._staged:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self._staged = []

    def __enter__(self) -> "AtomicFileSet":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.discard()   # after commit() nothing is left to discard


def remove_stale_temp_files(folder: str | os.PathLike, min_age_s: float = 60.0) -> list[Path]:
    """Delete the temporary files (``.<name>.XXXX.tmp``) a killed run left in ``folder``; -> removed paths.

    A run killed during a write never leaves a truncated target, but its temporary file stays behind
    (a checkpoint's is megabytes). Files younger than ``min_age_s`` are kept: they may belong to a run
    that is writing right now in the same folder.
    """
    import logging
    import time
    folder = Path(folder)
    if not folder.is_dir():
        return []
    now, removed, size = time.time(), [], 0
    for p in folder.glob(".*.tmp"):
        try:
            st = p.stat()
            if p.is_file() and now - st.st_mtime >= min_age_s:
                p.unlink()
                removed.append(p)
                size += st.st_size
        except OSError:
            continue
    if removed:
        logging.getLogger(__name__).info("removed %d stale temporary file(s) (%.1f MB) left by an interrupted run in %s",
                                         len(removed), size / 2 ** 20, folder)
    return removed
