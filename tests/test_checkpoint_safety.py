"""Checkpoints are read with PyTorch's safe unpickler (issue 14): a crafted file must not run code.

Our own and the original's checkpoints load without ``--trust_checkpoint``; a file holding other Python
objects is refused with one line naming it, and loads (with a warning) only when the user opts in.
"""
import logging
import os

import pytest
import torch

from core.errors import DFNetCheckpointError, NeFeSCheckpointError


class _Payload:
    """Unpickling this object creates the file ``path``: what a malicious checkpoint would do."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _crafted(tmp_path, name):
    marker = tmp_path / f"{name}.ran"
    path = tmp_path / name
    torch.save({"network_fn_state_dict": {"w": torch.zeros(1)}, "payload": _Payload(marker)}, path)
    assert not marker.exists()
    return path, marker


def test_crafted_nefes_checkpoint_is_refused_and_runs_nothing(tmp_path):
    from models.nefes import load_nefes
    path, marker = _crafted(tmp_path, "evil.tar")
    with pytest.raises(NeFeSCheckpointError, match="refusing to load.*--trust_checkpoint") as e:
        load_nefes(path, "cpu")
    assert str(path) in str(e.value) and "\n" not in str(e.value) and "\x1b" not in str(e.value)
    assert not marker.exists()


def test_crafted_dfnet_checkpoint_is_refused_and_runs_nothing(tmp_path):
    from dm.direct_pose_model import load_state_dict_file
    from core.errors import APRError
    from models.dfnet import load_dfnet
    path, marker = _crafted(tmp_path, "evil.pt")
    with pytest.raises(DFNetCheckpointError, match="refusing to load"):
        load_dfnet(path)
    with pytest.raises(APRError, match="refusing to load"):
        load_state_dict_file(path)
    assert not marker.exists()


def test_trust_checkpoint_is_an_explicit_opt_in_with_a_warning(tmp_path, caplog):
    from types import SimpleNamespace
    from models.nefes import load_nefes
    path, marker = _crafted(tmp_path, "trusted.tar")
    with caplog.at_level(logging.WARNING), pytest.raises(NeFeSCheckpointError):   # loads, then is no NeFeS
        load_nefes(path, "cpu", SimpleNamespace(trust_checkpoint=True))
    assert marker.exists() and "--trust_checkpoint" in caplog.text and str(path) in caplog.text


def test_our_training_checkpoints_load_safely(tiny_models, tmp_path):
    """A run_nefes.py checkpoint holds the NumPy RNG state: allowed exactly, no opt-in needed."""
    from models.nefes import load_nefes
    from models.dfnet import load_dfnet
    nefes_ckpt, dfnet_ckpt = tiny_models
    with pytest.raises(Exception):
        torch.load(nefes_ckpt, weights_only=True)          # PyTorch's default allow-list refuses it ...
    load_nefes(nefes_ckpt, "cpu")                           # ... ours accepts exactly what we store
    load_dfnet(dfnet_ckpt)


def test_a_checkpoint_of_the_wrong_kind_says_what_it_is(tiny_models):
    from models.dfnet import load_dfnet
    from models.nefes import load_nefes
    nefes_ckpt, dfnet_ckpt = tiny_models
    with pytest.raises(DFNetCheckpointError, match="is a NeFeS checkpoint") as e:
        load_dfnet(nefes_ckpt)
    assert "\x1b" not in str(e.value) and "Weights only" not in str(e.value)
    with pytest.raises(NeFeSCheckpointError, match="DFNet / APR state dict, not a NeFeS checkpoint"):
        load_nefes(dfnet_ckpt, "cpu")


def test_truncated_checkpoint_is_a_read_error_not_a_safety_refusal(tiny_models, tmp_path):
    from models.nefes import load_nefes
    nefes_ckpt, _ = tiny_models
    bad = tmp_path / "cut.tar"
    bad.write_bytes(nefes_ckpt.read_bytes()[:4000])
    with pytest.raises(NeFeSCheckpointError, match="cannot read NeFeS checkpoint"):
        load_nefes(bad, "cpu")
