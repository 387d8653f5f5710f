"""Append-only JSONL metric journal: one ``{"step", "t", "metrics"}`` record per line, flushed and
fsynced every write. A torn last line (a kill mid-write) is ignored on read; a resumed run appends
again and readers keep the last value written for each (key, step)."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

JOURNAL_NAME = "metrics.jsonl"


class Journal:
    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / JOURNAL_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair_torn_tail()
        self._f = open(self.path, "a", encoding="utf-8")

    def _repair_torn_tail(self) -> None:
        """Terminate a torn last line so the next record starts on a line of its own."""
        if self.path.exists() and self.path.stat().st_size > 0:
            with open(self.path, "rb+") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")

    def log(self, step: int, metrics: dict[str, float]) -> None:
        clean = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
        self._f.write(json.dumps({"step": int(step), "t": time.time(), "metrics": clean}) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()


def read_records(path: str | Path) -> list[dict]:
    """All complete records of a journal file (a torn or garbled line is skipped)."""
    p = Path(path)
    if p.is_dir():
        p = p / JOURNAL_NAME
    if not p.exists():
        return []
    out = []
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "step" in rec and "metrics" in rec:
            out.append(rec)
    return out


def read_history(path: str | Path) -> dict[str, dict[int, float]]:
    """``{key: {step: value}}`` with the last write winning for a repeated (key, step)."""
    hist: dict[str, dict[int, float]] = {}
    for rec in read_records(path):
        for k, v in rec["metrics"].items():
            hist.setdefault(k, {})[rec["step"]] = v
    return hist
