"""The refinement journal: one small JSON file per finished query, so a killed run resumes where it stopped.

Layout under the experiment folder::

    journal/fingerprint.json    what the entries were computed with (see :func:`fingerprint`)
    journal/q000123.json        {"fingerprint": <digest>, "index": 123, "name": <test frame>,
                                 "pose": [12 floats, row-major 3x4, float64], "info": {...}, "seconds": s}

Entries are written atomically (``utils.atomic``). Floats are stored by ``json`` as their shortest
round-trip ``repr``, so a resumed run writes bit-identical result files. A journal whose fingerprint
differs from the current run's (a key that changes results, another checkpoint, other test frames) is
discarded with one warning naming what changed; entries are also checked one by one, so results
computed with different settings are never mixed.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from utils.atomic import atomic_write_text

_logger = logging.getLogger(__name__)

VERSION = 1

#: Keys that never change a refined pose: where things go, how fast, how many at a time, what is shown.
NOT_RESULT_KEYS = frozenset({
    "help", "config", "expname", "basedir", "device", "num_threads", "refine_batch", "restart",
    "preview_queries", "num_workers", "cache_images", "val_batch_size", "model_name", "eval", "trust_checkpoint", "strict_config",
})
#: Checkpoint keys: fingerprinted by file content (size + hash of its ends), not by path.
CHECKPOINT_KEYS = ("ft_path", "pretrain_model_path", "pretrain_featurenet_path")
_HASH_SPAN = 1 << 20     # bytes hashed at each end of a checkpoint


def file_identity(path: str | None) -> dict | None:
    """``{"size", "sha256_ends"}`` of a file: sha256 of its size, first and last MiB (cheap for GB files)."""
    if not path:
        return None
    p = Path(path)
    if not p.is_file():
        return {"missing": str(p)}
    size = p.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(p, "rb") as f:
        h.update(f.read(_HASH_SPAN))
        if size > _HASH_SPAN:
            f.seek(max(_HASH_SPAN, size - _HASH_SPAN))
            h.update(f.read(_HASH_SPAN))
    return {"size": size, "sha256_ends": h.hexdigest()}


def _jsonable(v):
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


def test_frames_identity(split) -> dict:
    """Count and digest of the test split's frame names, in loader order, and their image file sizes."""
    h = hashlib.sha256()
    for name, path in zip(split.names, split.image_paths):
        size = os.stat(path).st_size if os.path.exists(path) else -1
        h.update(f"{name}\t{size}\n".encode())
    return {"count": len(split.names), "sha256": h.hexdigest()}


def fingerprint(args: argparse.Namespace, scene) -> dict:
    """Everything a refined pose depends on, as a flat JSON-able dict (key -> value)."""
    fp = {"journal_version": VERSION}
    for key, value in sorted(vars(args).items()):
        if key in NOT_RESULT_KEYS or key in CHECKPOINT_KEYS:
            continue
        fp[key] = _jsonable(value)
    for key in CHECKPOINT_KEYS:
        fp[key] = file_identity(getattr(args, key, None))
    ws = scene.world_setup
    fp["scene"] = {"name": scene.name, "H": scene.H, "W": scene.W, "focal": float(scene.focal),
                   "near": float(scene.near), "far": float(scene.far),
                   "world_setup": [float(ws.near), float(ws.far), float(ws.pose_scale), float(ws.pose_scale2),
                                   [float(x) for x in ws.move_all_cam_vec]]}
    fp["test_frames"] = test_frames_identity(scene.test)
    return fp


def digest(fp: dict) -> str:
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]


def describe_changes(old: dict, new: dict) -> str:
    """One line naming what differs between two fingerprints."""
    parts = []
    for key in sorted(set(old) | set(new), key=lambda k: (k not in new, k)):
        a, b = old.get(key, "<unset>"), new.get(key, "<unset>")
        if a == b:
            continue
        if key in CHECKPOINT_KEYS:
            parts.append(f"{key}: another file ({_short(a)} -> {_short(b)})")
        elif key == "test_frames":
            parts.append("test frames: " + (f"{a.get('count')} -> {b.get('count')} frames"
                                            if isinstance(a, dict) and a.get("count") != b.get("count")
                                            else "frame names or image files differ"))
        elif key == "scene":
            parts.append("scene geometry (name, size, focal, bounds or world setup)")
        else:
            parts.append(f"{key}: {a!r} -> {b!r}")
    return "; ".join(parts) or "nothing"


def _short(identity) -> str:
    if not isinstance(identity, dict):
        return "none"
    if "missing" in identity:
        return "missing"
    return f"{identity['size']} bytes, {identity['sha256_ends'][:8]}"


def pose_to_list(pose) -> list[float]:
    """(3, 4) tensor or array -> 12 Python floats (float64, row-major)."""
    if hasattr(pose, "detach"):
        pose = pose.detach().double().cpu().numpy()
    return [float(x) for x in np.asarray(pose, dtype=np.float64).reshape(12)]


def _normalise(info: dict) -> dict:
    """The info dict exactly as it reads back from JSON (tensors and numpy scalars become floats/lists)."""
    def default(o):
        if hasattr(o, "tolist"):
            return o.tolist()
        raise TypeError(f"info value of type {type(o).__name__} is not JSON-serialisable")
    return json.loads(json.dumps(info, default=default))


class Journal:
    """Finished queries of one refinement configuration in ``<expdir>/journal``."""

    def __init__(self, folder: str | Path, fp: dict, names: list[str]):
        self.folder = Path(folder)
        self.fp = json.loads(json.dumps(fp))     # compared with fingerprint.json as it reads back
        self.digest, self.names = digest(self.fp), list(names)

    def _entry_path(self, index: int) -> Path:
        return self.folder / f"q{index:06d}.json"

    def _entries(self) -> list[Path]:
        return sorted(self.folder.glob("q*.json")) if self.folder.is_dir() else []

    def prepare(self, restart: bool = False) -> None:
        """Keep the journal if it was written with this fingerprint, else discard it (with a warning naming
        what changed); ``restart`` discards it on purpose. Run by one process per folder, before anyone reads."""
        fp_file = self.folder / "fingerprint.json"
        try:
            old = json.loads(fp_file.read_text()) if fp_file.is_file() else None
        except (OSError, ValueError):
            old = "unreadable"
        if old == self.fp and not restart:
            return
        entries = self._entries()
        if entries:
            reason = ("--restart given" if restart else
                      f"it has no readable {fp_file.name}" if not isinstance(old, dict) else
                      f"it was written with a different configuration ({describe_changes(old, self.fp)})")
            _logger.warning("journal %s: discarding %d finished queries and starting fresh: %s",
                            self.folder, len(entries), reason)
        for p in entries:
            p.unlink(missing_ok=True)
        atomic_write_text(fp_file, json.dumps(self.fp, indent=1, sort_keys=True) + "\n")

    def load(self) -> dict[int, dict]:
        """index -> entry of every valid finished query (entries of other fingerprints are ignored)."""
        done, skipped = {}, 0
        for p in self._entries():
            try:
                e = json.loads(p.read_text())
                i = int(e["index"])
                ok = (e.get("fingerprint") == self.digest and 0 <= i < len(self.names) and e.get("name") == self.names[i]
                      and p.name == self._entry_path(i).name and len(e["pose"]) == 12 and isinstance(e["info"], dict))
            except (OSError, ValueError, KeyError, TypeError):
                ok = False
            if ok:
                done[i] = e
            else:
                skipped += 1
        if skipped:
            _logger.warning("journal %s: %d entries unreadable or from other settings, refining those again",
                            self.folder, skipped)
        return done

    def record(self, index: int, pose, info: dict, seconds: float) -> dict:
        """Journal one finished query (atomic write) and return its entry as it reads back."""
        entry = {"fingerprint": self.digest, "index": int(index), "name": self.names[index],
                 "pose": pose_to_list(pose), "info": _normalise(info), "seconds": float(seconds)}
        atomic_write_text(self._entry_path(index), json.dumps(entry) + "\n")
        return entry
