"""Append-only JSONL metric journal: one ``{"step", "t", "metrics"}`` record per line, flushed and
fsynced every write (non-finite values kept: ``NaN``, ``Infinity``). A torn last line (a kill mid-write) is ignored on read; a resumed run appends
again and readers keep the last value written for each (key, step)."""

from __future__ import annotations

import json
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

    def log(self, step: int, metrics: dict[str, float], t: float | None = None) -> None:
        """A NaN or infinite value is written as such (JSON's ``NaN``/``Infinity``, which Python reads back):
        a diverged loss must reach the dashboards, not vanish."""
        clean = {k: float(v) for k, v in metrics.items() if v is not None}
        self._f.write(json.dumps({"step": int(step), "t": time.time() if t is None else t, "metrics": clean}) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()


class JournalTail:
    """Reads a journal incrementally from a byte offset: each ``read()`` returns the complete records
    appended since the last call (a partly written last line is left for the next call). verl's file
    logger writes the same lines with ``data`` for ``metrics``; they are read alike."""

    def __init__(self, path: str | Path):
        p = Path(path)
        self.path = p if p.suffix == ".jsonl" else p / JOURNAL_NAME
        self.offset = 0

    def read(self, max_bytes: int = 8 << 20) -> list[dict]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            chunk = f.read(max_bytes)
        end = chunk.rfind(b"\n")
        if end < 0 and len(chunk) == max_bytes:  # one line longer than max_bytes: read it whole
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.readline()
            end = len(chunk) - 1 if chunk.endswith(b"\n") else -1
        if end < 0:
            return []
        self.offset += end + 1
        return _parse(chunk[: end + 1].decode("utf-8", errors="replace").splitlines())

    def at_end(self) -> bool:
        return not self.path.exists() or self.offset >= self.path.stat().st_size


def _parse(lines: list[str]) -> list[dict]:
    out = []
    for line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "data" in rec and "metrics" not in rec:  # verl's file logger
            rec["metrics"] = rec.pop("data")
        if isinstance(rec, dict) and "step" in rec and isinstance(rec.get("metrics"), dict):
            out.append(rec)
    return out


def read_records(path: str | Path) -> list[dict]:
    """All complete records of a journal file (a torn or garbled line is skipped)."""
    p = Path(path)
    if p.is_dir():
        p = p / JOURNAL_NAME
    if not p.exists():
        return []
    return _parse(p.read_text(encoding="utf-8").splitlines())


def read_history(path: str | Path) -> dict[str, dict[int, float]]:
    """``{key: {step: value}}`` with the last write winning for a repeated (key, step)."""
    hist: dict[str, dict[int, float]] = {}
    for rec in read_records(path):
        for k, v in rec["metrics"].items():
            hist.setdefault(k, {})[rec["step"]] = v
    return hist
