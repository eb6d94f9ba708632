"""The project's error types and how entry points report them.

Library code raises one of the classes below with a one-line message that names the key, file or
value at fault; it never calls ``sys.exit``. Entry points wrap their ``main`` in :func:`cli_main`,
which turns any of them (and other ``ValueError`` / ``OSError``) into one line ``error: ...`` on
stderr and exit code :data:`EXIT_INPUT_ERROR`. Set ``NEFES_DEBUG=1`` for the traceback instead.

All classes derive from ``ValueError``, so callers that catch ``ValueError`` keep working.
"""
from __future__ import annotations

import functools
import os
import sys

#: Exit code of every entry point for bad input (argparse uses 2 for command-line errors too).
EXIT_INPUT_ERROR = 2
#: Exit code after Ctrl-C / SIGTERM (128 + SIGINT, the shell's convention).
EXIT_INTERRUPTED = 130


class NefesError(ValueError):
    """Base class: a problem the user can fix (bad config, missing file, mismatched checkpoint)."""


class ConfigError(NefesError):
    """A config key has an unusable value (or a requested device is not available)."""


class DatasetError(NefesError):
    """A dataset file or folder is missing or malformed."""


class PoseFileError(NefesError):
    """A pose / world-setup / result file is missing, malformed, or holds non-finite values."""


class CheckpointError(NefesError):
    """A checkpoint is missing, unreadable or does not match the model."""


class NeFeSCheckpointError(CheckpointError):
    """A NeFeS checkpoint problem."""


class DFNetCheckpointError(CheckpointError):
    """A DFNet checkpoint problem."""


class APRError(NefesError):
    """The APR cannot be built or loaded (unknown type, bad checkpoint, wrong output shape)."""


class TrainingError(NefesError):
    """A training run cannot start or resume as configured."""


class EvalError(NefesError):
    """Inputs that cannot be scored together (counts differ, no prediction found, ...)."""


class SyntheticError(NefesError):
    """The synthetic scene generator got invalid arguments or cannot write its output."""


class SetupError(NefesError):
    """A dataset setup script got unusable inputs (missing zip, unexpected archive layout, ...)."""


class StepFailed(NefesError):
    """A pipeline step run as a subprocess (demo, benchmarks) exited with an error."""


def report(error: BaseException) -> int:
    """Print ``error: <message>`` on stderr (one line) and return :data:`EXIT_INPUT_ERROR`."""
    message = str(error)
    if isinstance(error, OSError) and error.strerror:   # not "[Errno 28] ...: 'path'"
        message = f"{error.filename}: {error.strerror}" if error.filename else error.strerror
    message = " ".join(message.split()) or type(error).__name__
    print(f"error: {message}", file=sys.stderr)
    return EXIT_INPUT_ERROR


def cli_main(main):
    """Decorator for an entry point's ``main(argv=None) -> int``: bad input becomes one line and exit 2.

    Catches ``ValueError`` (every class above) and ``OSError`` (unreadable / unwritable files).
    ``KeyboardInterrupt`` is left to the entry point (it knows what was saved).
    """
    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except (ValueError, OSError) as e:
            if os.environ.get("NEFES_DEBUG"):
                raise
            return report(e)
    return wrapper
