"""Reading checkpoints without running code from them.

``torch.load(weights_only=False)`` unpickles arbitrary Python objects, so a crafted ``.tar`` / ``.pt`` runs
its own code when loaded, and checkpoints are files researchers download from strangers. Every
checkpoint of this project and of the original (NeFeS ``.tar``, DFNet ``.pt``) is read with PyTorch's
safe unpickler, allowing exactly the extra types our own files hold (the NumPy RNG state of a
training checkpoint). Anything else is refused with one line, unless the user opts in with
``--trust_checkpoint`` (then a warning names the file).
"""
from __future__ import annotations

import logging
import os
import pickle
import re
from pathlib import Path

import numpy as np
import torch

from core.errors import CheckpointError

_logger = logging.getLogger(__name__)


def _numpy_globals() -> list:
    """The NumPy callables / types that ``np.random.get_state()`` pickles into (NumPy 1.x and 2.x names)."""
    core = getattr(np, "_core", None) or np.core
    out = [core.multiarray._reconstruct, np.ndarray, np.dtype, core.multiarray.scalar]
    out += [type(np.dtype(t)) for t in ("uint32", "int64", "float64", "bool")]   # dtype classes (NumPy >= 1.25)
    return out


SAFE_GLOBALS = _numpy_globals()


def load_checkpoint(path: str | os.PathLike, trust: bool = False, error: type[Exception] = CheckpointError,
                    what: str = "checkpoint"):
    """``torch.load(path)`` on CPU with the safe unpickler (plus :data:`SAFE_GLOBALS`).

    Args:
        trust: the user vouched for the file (``--trust_checkpoint``): fall back to the full unpickler,
            with a warning, when the safe one refuses it.
        error: the error class raised (one line naming ``path``).
    Raises:
        ``error``: missing or unreadable file, or one holding other Python objects (without ``trust``).
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: {what} not found")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        try:
            names = [n for n in torch.serialization.get_unsafe_globals_in_checkpoint(path) if n not in _safe_names()]
        except Exception:  # noqa: BLE001 - not a readable torch file at all
            names = []
        if not names:
            raise error(f"{path}: cannot read {what} ({type(e).__name__}: {_first_line(e)})") from None
        if not trust:
            listed = ", ".join(names[:4]) + (" ..." if len(names) > 4 else "")
            raise error(f"{path}: refusing to load: the {what} holds Python objects beyond tensors "
                        f"({listed}) that could run code; pass --trust_checkpoint only if you trust its "
                        f"source") from None
    except Exception as e:  # noqa: BLE001 - any reader failure is a corrupt file for the user
        raise error(f"{path}: cannot read {what} ({type(e).__name__}: {_first_line(e)})") from None
    _logger.warning("--trust_checkpoint: loading %s with the full unpickler (it may run code)", path)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001
        raise error(f"{path}: cannot read {what} ({type(e).__name__}: {_first_line(e)})") from None


def _safe_names() -> set:
    return {f"{g.__module__}.{g.__qualname__}" for g in SAFE_GLOBALS}


def _first_line(e: BaseException) -> str:
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(e)).split("\n")[0].split())   # no ANSI codes
    return text[:200]


def check_run_identity(old: dict | None, new: dict, folder) -> None:
    """Refuse (one line naming both) to resume a run in ``folder`` whose checkpoint recorded another
    identity (scene, dataset type, ``df``, model kind...); keys only one side has are not compared, so
    checkpoints written before identities were recorded still resume."""
    from core.errors import TrainingError
    if not isinstance(old, dict) or not old:
        return
    diff = [f"{k} {old.get(k)!r} -> {new[k]!r}" for k in new if k in old and old[k] != new[k]]
    if diff:
        raise TrainingError(f"{folder} holds a run of another setup ({'; '.join(diff)}): use another expname, "
                            f"or --no_reload to start over in this folder")
