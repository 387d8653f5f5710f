"""Merges a verl run's metrics into the run's journal (the one writer), renamed into our namespace.

Two sources under ``<run dir>/verl/``: verl's file logger (``verl-<start>.jsonl``, one per start, since it
truncates its file when opened) and the manager's side journal (``s2lpo/metrics.jsonl``). A background
thread reads what each has gained every ``interval_s`` and logs it through the run's ``Tracker``
(journal first, then MLflow/W&B replicas); the byte offsets reached are saved after each pass
(``follow.json``), so a restarted driver neither loses nor re-reads more than one pass (a re-read logs
the same values again, which the journal and the replicas absorb).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from s2lpo.tracking.journal import JournalTail
from s2lpo.verl_ext.metrics import map_verl

OFFSETS = "follow.json"


def verl_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "verl"


class Follower:
    def __init__(self, run_dir: Path, tracker, interval_s: float = 2.0):
        self.dir = verl_dir(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.tracker = tracker
        self.interval_s = interval_s
        self._tails: dict[str, JournalTail] = {}
        saved = json.loads((self.dir / OFFSETS).read_text()) if (self.dir / OFFSETS).exists() else {}
        self._saved = {k: int(v) for k, v in saved.items()}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def verl_file(self, start: int) -> Path:
        return self.dir / f"verl-{start}.jsonl"

    def _files(self) -> list[Path]:
        starts = sorted(self.dir.glob("verl-*.jsonl"), key=lambda p: int(p.stem.split("-", 1)[1]))  # 2 before 10
        return starts + [self.dir / "s2lpo" / "metrics.jsonl"]

    def poll(self) -> int:
        """Log everything new; returns the number of records."""
        n = 0
        before = dict(self._saved)
        for f in self._files():
            tail = self._tails.get(f.name)
            if tail is None:
                tail = self._tails[f.name] = JournalTail(f)
                tail.offset = self._saved.get(str(f.relative_to(self.dir)), 0)
            for rec in tail.read():
                metrics = rec["metrics"] if f.parent.name == "s2lpo" else map_verl(rec["metrics"])
                if metrics:
                    self.tracker.log(int(rec["step"]), metrics)
                    n += 1
            self._saved[str(f.relative_to(self.dir))] = tail.offset
        if self._saved == before:
            return n
        tmp = self.dir / f".{OFFSETS}.tmp"
        tmp.write_text(json.dumps(self._saved))
        tmp.replace(self.dir / OFFSETS)
        return n

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.poll()

    def start(self) -> Follower:
        self.poll()  # whatever an earlier start left unmerged
        self._thread = threading.Thread(target=self._loop, name="s2lpo-verl-follow", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.poll()
