"""What a tracking replica is, and which journal points it still lacks.

A replica (MLflow, W&B) receives the journal's points in step order. It keeps a high-water mark per
metric key (the last step delivered) in ``<run dir>/tracking/<name>.json``; on opening it also asks
the remote what it already holds (MLflow's latest step per key, the steps in W&B's own files), so a
point is delivered exactly once even if the process died between a delivery and saving the mark.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Point:
    key: str
    step: int
    value: float
    t: float  # seconds since the epoch, when the trainer wrote it


class Replica(Protocol):
    name: str

    def open(self, state: ReplicaState) -> dict[str, int]:
        """Connect, creating the remote run once (its identity kept in ``state.remote``); return the
        highest step the remote holds per key, which replaces the saved marks."""
        ...

    def send(self, points: list[Point]) -> None:
        """Deliver ``points`` (ordered by step) or raise."""
        ...

    def close(self, status: str) -> None: ...


def pending(records: list[dict], high_water: dict[str, int]) -> list[Point]:
    """The points of ``records`` above each key's high-water mark, ordered by (step, key); of several
    writes of one (key, step) the last one wins, as in the journal's readers. A mark under ``"*"``
    holds for every key (W&B's step is one counter for all keys)."""
    floor = high_water.get("*", -1)
    last: dict[tuple[str, int], Point] = {}
    for rec in records:
        step, t = int(rec["step"]), float(rec.get("t", 0.0))
        for k, v in rec["metrics"].items():
            if step > max(high_water.get(k, -1), floor):
                last[(k, step)] = Point(k, step, float(v), t)
    return sorted(last.values(), key=lambda p: (p.step, p.key))


def advance(high_water: dict[str, int], points: list[Point]) -> None:
    for p in points:
        if p.step > high_water.get(p.key, -1):
            high_water[p.key] = p.step


class ReplicaState:
    """``<run dir>/tracking/<name>.json``: the replica's remote identity and its high-water marks,
    rewritten atomically."""

    def __init__(self, run_dir: Path, name: str):
        self.path = Path(run_dir) / "tracking" / f"{name}.json"
        self.damaged: str | None = None  # why a damaged state file was set aside (the remote is found again)
        try:
            data = json.loads(self.path.read_text()) if self.path.exists() else {}
            self.remote: dict = dict(data.get("remote", {}))
            self.high_water: dict[str, int] = {k: int(v) for k, v in data.get("high_water", {}).items()}
        except (ValueError, TypeError, AttributeError, UnicodeDecodeError) as e:
            self.damaged = (f"{self.path} is damaged ({type(e).__name__}); the remote run is found again by its "
                            "run id and asked what it holds, so nothing is sent twice")
            self.remote, self.high_water = {}, {}

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"remote": self.remote, "high_water": self.high_water}, sort_keys=True))
        os.replace(tmp, self.path)
