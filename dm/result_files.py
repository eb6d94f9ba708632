"""The files a refinement run leaves in ``<basedir>/<expname>/``, and how they get there.

* At start (rank 0): the output folder must be writable (else one line naming it), and result files of a
  previous run are removed, so results never sit beside another run's ``args.txt``.
* At the end (rank 0), all at once: figures first (each atomic), then the pose/frame files and last
  ``summary.json``, staged as temporary files and renamed together. A failure (a full disk) removes what
  this step wrote: the folder then holds no results rather than some.
"""
from __future__ import annotations

import logging
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from utils.atomic import AtomicFileSet

_logger = logging.getLogger(__name__)

#: What test_refinement.py writes (and so removes when a new run starts in the folder).
OWN_PATTERNS = ("*_test_gt.txt", "*_test_frames.txt", "*_results.txt", "summary.json", "trajectories.png",
                "error_cdf.png", "previews.png")


class OutputError(ValueError):
    """The output folder cannot be created or written (message: one line naming the folder)."""


@contextmanager
def writing(folder: str | Path):
    """Turn any OSError of the block (permissions, a path through a file, a full disk) into an OutputError."""
    try:
        yield
    except OSError as e:
        raise OutputError(f"cannot write to the output folder {folder}: {e.strerror or e}") from None


def check_writable(folder: str | Path) -> Path:
    """Create ``folder`` if needed and check that a file can be written in it."""
    folder = Path(folder)
    with writing(folder):
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write_check.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    return folder


@dataclass
class RunFiles:
    """Names of one run's result files (the paper's names for the pose files)."""
    expdir: Path
    scene: str
    apr: str
    opt_iter: int
    pose_only: int

    def _p(self, name: str) -> Path:
        return Path(self.expdir) / name

    @property
    def gt(self) -> Path:
        return self._p(f"{self.scene}_test_gt.txt")

    @property
    def frames(self) -> Path:
        return self._p(f"{self.scene}_test_frames.txt")

    @property
    def apr_results(self) -> Path:
        return self._p(f"{self.apr}_{self.scene}_results.txt")

    @property
    def refined(self) -> Path:
        kind = {2: "APR_pose", 3: "pose_pose", 4: "LM_pose"}[self.pose_only]
        return self._p(f"{self.apr}_{self.scene}_NeFeS{self.opt_iter}_{kind}_results.txt")

    @property
    def summary(self) -> Path:
        return self._p("summary.json")

    @property
    def journal(self) -> Path:
        return self._p("journal")

    def figure(self, name: str) -> Path:
        return self._p(f"{name}.png")


def remove_stale(expdir: str | Path) -> list[Path]:
    """Delete the result files a previous run left in ``expdir``; returns what was removed."""
    expdir = Path(expdir)
    stale = sorted({p for pat in OWN_PATTERNS for p in expdir.glob(pat) if p.is_file()})
    if stale:
        _logger.warning("removing the results of a previous run in %s: %s", expdir, ", ".join(p.name for p in stale))
    with writing(expdir):
        for p in stale:
            p.unlink()
    return stale


def publish(expdir: str | Path, figures: dict[Path, Callable[[Path], object]],
            files: dict[Path, Callable[[str], object]]) -> None:
    """Write the run's finals: ``figures`` (path -> draw(path), each atomic), then ``files``
    (path -> write(tmp), renamed together in order: put summary.json last)."""
    written: list[Path] = []
    try:
        with writing(expdir):
            for path, draw in figures.items():
                draw(path)
                written.append(path)
            with AtomicFileSet() as staged:
                for path, write in files.items():
                    staged.add(path, write)
                committed = staged.commit()
                written += committed
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    for p in committed:
        _logger.info("wrote %s", p)
