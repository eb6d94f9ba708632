"""Constants and the error type shared by the synthetic-scene modules."""
from __future__ import annotations

from core.errors import SyntheticError  # noqa: F401  (re-exported: the generator's error type)

GENERATOR_VERSION = "1.0"
KINDS = ("room", "street")
LAYOUTS = ("single", "original")
#: Reference intrinsics the loaders hard-code: focal (px) at a reference width (px), default size.
REF_CAMERA = {"room": (585.0, 640, (640, 480)), "street": (744.0, 854, (854, 480))}
EXPOSURE_RANGE = (0.65, 1.35)
INCOMPLETE_MARKER = ".synthetic_incomplete"
INFO_FILE = "synthetic_info.json"
HIT_EPS = 1e-4
MIP_LEVELS = 6   # texture dims are multiples of 2**(MIP_LEVELS-1)
