"""Atomic, verified checkpoints of the local trainer.

A checkpoint is written to a temporary file, fsynced and renamed; its SHA-256 goes into a sidecar
``step_<k>.pt.sha256`` written the same way *after* the checkpoint is complete, so a checkpoint without a
matching sidecar was torn. The previous checkpoint is kept until the new one is complete and verified (two are
kept, so a newest one damaged later still has one to fall back to). Loading takes the newest checkpoint that
verifies, says which damaged ones it passed over, and names them when none is left. Leftover ``.tmp`` files of
torn writes are removed. Imports nothing of ours.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

KEEP = 2  # the newest verified checkpoint and the one before it


class CheckpointError(RuntimeError):
    """A checkpoint could not be written, or none of a run's checkpoints is intact (the message says what to do)."""


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_atomic(path: Path, write: Callable[[object], None]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def clean_torn_writes(run_dir: Path) -> list[Path]:
    """Remove the ``.tmp`` files a kill or a full disk left in the checkpoint directory; returns them."""
    torn = sorted(checkpoint_dir(run_dir).glob(".*.tmp"))
    for p in torn:
        p.unlink(missing_ok=True)
    return torn


def save_checkpoint(run_dir: Path, step: int, state: dict) -> Path:
    d = checkpoint_dir(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    final = d / f"step_{step:07d}.pt"
    try:
        _write_atomic(final, lambda f: torch.save({"step": step, **state}, f))
        digest = _sha256(final)
        _write_atomic(final.with_suffix(".pt.sha256"), lambda f: f.write(digest.encode()))
    except OSError as e:
        final.unlink(missing_ok=True)
        kept = [p.name for p in _checkpoints(run_dir) if p != final]
        why = "the disk is full" if e.errno == errno.ENOSPC else (e.strerror or str(e))
        raise CheckpointError(f"could not write checkpoint {final}: {why}; free space under {d} (or set "
                              f"paths.runs_dir to a larger disk) and start the run again: it resumes from "
                              f"{kept[-1] if kept else 'the start'}") from None
    for old in _checkpoints(run_dir)[:-KEEP]:
        old.unlink(missing_ok=True)
        old.with_suffix(".pt.sha256").unlink(missing_ok=True)
    return final


def _checkpoints(run_dir: Path) -> list[Path]:
    return sorted(checkpoint_dir(run_dir).glob("step_*.pt"))


def damage(path: Path) -> str | None:
    """Why the checkpoint at ``path`` cannot be trusted (no or another checksum), None when it verifies."""
    sidecar = path.with_suffix(".pt.sha256")
    if not sidecar.exists():
        return "its checksum file is missing (the write was cut short)"
    want = sidecar.read_text().strip()
    if _sha256(path) != want:
        return f"its SHA-256 differs from the one recorded when it was written ({path.stat().st_size} bytes)"
    return None


@dataclass
class Loaded:
    path: Path
    state: dict
    skipped: list[tuple[Path, str]]  # newer checkpoints passed over, with why


def load_latest(run_dir: Path) -> Loaded | None:
    """The newest checkpoint that verifies and loads (None when the run has none); raises
    :class:`CheckpointError` naming every damaged one when none is left to resume from."""
    clean_torn_writes(run_dir)
    found = _checkpoints(run_dir)
    skipped: list[tuple[Path, str]] = []
    for path in reversed(found):
        why = damage(path)
        if why is None:
            try:
                return Loaded(path, load_checkpoint(path), skipped)
            except Exception as e:  # noqa: BLE001 - any unpickling error means the file is unusable
                why = f"it does not load ({type(e).__name__}: {str(e).strip()[:120]})"
        skipped.append((path, why))
    if not skipped:
        return None
    listing = "; ".join(f"{p.name}: {why}" for p, why in skipped)
    raise CheckpointError(f"no intact checkpoint in {checkpoint_dir(run_dir)} ({listing}); to train this run "
                          f"again from the start (it reproduces the same steps), remove them: "
                          f"rm -r {checkpoint_dir(run_dir)}")


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)
