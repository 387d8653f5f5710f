"""Paths named in a config, made absolute (``~`` expanded). Imports nothing of ours: every layer may use it."""

from __future__ import annotations

from pathlib import Path


def abspath(p: str | Path) -> Path:
    return Path(p).expanduser().resolve()
