"""Shared fixtures. Everything runs on CPU at tiny sizes."""
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
import os

# ../shared next to the checkout (as in CI); NEFES_SHARED points elsewhere if needed.
SHARED_REF = Path(os.environ.get("NEFES_SHARED", REPO.parent / "shared")) / "nefes-reference"

SCENES_7 = ("chess", "fire", "heads", "office", "pumpkin", "redkitchen", "stairs")
SCENES_CAMBRIDGE = ("KingsCollege", "OldHospital", "ShopFacade", "StMarysChurch")


@pytest.fixture(scope="session")
def shared_ref() -> Path:
    """../shared/nefes-reference, or skip the test with a clear message when it is absent."""
    if not SHARED_REF.is_dir():
        pytest.skip(f"reference data not found at {SHARED_REF} (fidelity test needs ../shared/nefes-reference)")
    return SHARED_REF


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
