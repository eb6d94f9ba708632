"""Optional fused CPU kernel for the hash encoding's forward (``models/csrc/hashgrid_cpu.cpp``).

The pure-PyTorch lookup in ``models/hashgrid.py`` runs ~40 tensor ops per chunk over ``(L, 8, n)``
arrays; on a 2-core CPU that memory traffic dominates a NeFeS refinement step. The kernel does the
same per (point, level) in one pass. It is compiled with ``torch.utils.cpp_extension`` the first time
it is needed (a C++ compiler and ninja, which ``requirements.txt`` installs; about a minute once,
then cached under ``~/.cache/torch_extensions``). If it cannot be built or loaded, one log line says
why and the pure path is used: results agree to float rounding (``tests/test_hashgrid.py``).
Set ``NEFES_CPU_KERNEL=0`` to never use it.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from pathlib import Path

_logger = logging.getLogger(__name__)

SOURCE = Path(__file__).resolve().parent / "csrc" / "hashgrid_cpu.cpp"
_state: dict = {"tried": False, "module": None, "error": None}


def enabled() -> bool:
    return os.environ.get("NEFES_CPU_KERNEL", "1").strip().lower() not in ("0", "false", "no", "off")


def get():
    """The compiled extension module, or None (disabled, or it failed to build: logged once)."""
    if not enabled():
        return None
    if not _state["tried"]:
        _state["tried"] = True
        try:
            _state["module"] = _build()
        except Exception as e:  # no compiler / ninja, build error, import error: fall back
            _state["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}" + _space_hint()
            _logger.warning("fused CPU hash-grid kernel unavailable (%s); using the pure-PyTorch lookup",
                            _state["error"])
    return _state["module"]


def error() -> str | None:
    """Why the kernel is unavailable (after :func:`get` tried), else None."""
    return _state["error"]


@contextlib.contextmanager
def _venv_bin_on_path():
    """``PATH`` with the interpreter's ``bin`` folder first (ninja from requirements.txt, even when the
    virtual environment is not activated) for the duration of the build; restored afterwards."""
    bindir = os.path.dirname(sys.executable)
    before = os.environ.get("PATH")
    if bindir not in (before or "").split(os.pathsep):
        os.environ["PATH"] = bindir + (os.pathsep + before if before else "")
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PATH", None)
        else:
            os.environ["PATH"] = before


def _source_for_build() -> Path:
    """The kernel source at a path without whitespace: torch's ninja build file does not quote paths, so a
    checkout under e.g. "My Projects/" would fail to build. Such a source is copied to the temp folder."""
    if not any(c.isspace() for c in str(SOURCE)):
        return SOURCE
    import hashlib
    import tempfile
    text = SOURCE.read_bytes()
    staged = Path(tempfile.gettempdir()) / f"nefes_csrc_{hashlib.sha1(text).hexdigest()[:12]}" / SOURCE.name
    if not staged.is_file() or staged.read_bytes() != text:
        staged.parent.mkdir(parents=True, exist_ok=True)
        staged.write_bytes(text)
    return staged


def _space_hint() -> str:
    """A hint for the warning when a path the build uses still contains whitespace."""
    try:
        from torch.utils import cpp_extension
        includes = cpp_extension.include_paths()
    except Exception:   # only a hint
        includes = []
    paths = [os.environ.get("TORCH_EXTENSIONS_DIR", ""), sys.executable, *includes]
    bad = [p for p in paths if any(c.isspace() for c in p)]
    return f"; a path of the build contains a space ({bad[0]}): set TORCH_EXTENSIONS_DIR / use a Python without spaces in its path" if bad else ""


def _build():
    from torch.utils import cpp_extension
    t0 = time.perf_counter()
    _logger.info("loading the fused CPU hash-grid kernel (the first time on a machine it compiles, ~30 s)")
    # -ffp-contract=off: separate multiply and add, like the pure path's tensor ops
    with _venv_bin_on_path():
        module = cpp_extension.load(name="nefes_hashgrid_cpu", sources=[str(_source_for_build())],
                                    extra_cflags=["-O3", "-ffp-contract=off"], verbose=False)
    seconds = time.perf_counter() - t0
    _logger.log(logging.INFO if seconds > 5 else logging.DEBUG, "fused CPU hash-grid kernel ready (%.1f s)", seconds)
    return module
