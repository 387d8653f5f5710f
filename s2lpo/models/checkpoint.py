"""Atomic checkpoints: written to a temporary file, fsynced, renamed; the previous one is removed
only after the new one is in place, so a kill at any moment leaves a loadable checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import torch


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save_checkpoint(run_dir: Path, step: int, state: dict) -> Path:
    d = checkpoint_dir(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    final = d / f"step_{step:07d}.pt"
    tmp = d / f".step_{step:07d}.pt.tmp"
    with open(tmp, "wb") as f:
        torch.save({"step": step, **state}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    for old in d.glob("step_*.pt"):
        if old != final:
            old.unlink(missing_ok=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = sorted(checkpoint_dir(run_dir).glob("step_*.pt"))
    return found[-1] if found else None


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)
