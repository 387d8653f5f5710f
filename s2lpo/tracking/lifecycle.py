"""One run's lifecycle, the same for the local trainer, the verl runner and the evaluation driver.

``RunLifecycle(runs_dir, config)`` opens the run (id, directory, manifest; ``done`` is the result of a run
that already finished); ``with lc.running() as tracker:`` records the start (identity, code, environment,
scheduler ids), opens the trackers, and on *every* exit path leaves a true status — ``finished``, ``failed``
(with the error's one-line summary in the manifest's ``error``), ``killed`` (Ctrl-C, SIGTERM) or
``preempted`` (``PREEMPTING`` set by the SLURM job's checkpoint hook) — the final metrics (the journal's
last value of every ``eval/`` and ``compute/`` key, so a resumed or killed run reports what it logged) and
what the replicas still lack. Imports tracking only.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from s2lpo.tracking.journal import read_history
from s2lpo.tracking.run import Manifest, ManifestError, run_id
from s2lpo.tracking.sinks import Tracker, make_tracker

PREEMPTING = threading.Event()  # set by the SLURM job's checkpoint hook (s2lpo.sweep.jobs.TrainJob)
FINAL_PREFIXES = ("eval/", "compute/")


class RunDirError(RuntimeError):
    """The run directory cannot be created or written (the message names it and the fix)."""


@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    status: str
    final_metrics: dict[str, float]


def error_summary(e: BaseException) -> str:
    """``Type: first line of the message`` (the manifest's ``error``; the traceback is the job's log)."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


class RunLifecycle:
    def __init__(self, runs_dir: str | Path, config: dict, log: Callable[[str], None] = print,
                 rid: str | None = None, final_prefixes: tuple[str, ...] = FINAL_PREFIXES):
        self.config, self.log, self.final_prefixes = config, log, final_prefixes
        self.run_id = rid or run_id(config)
        self.run_dir = Path(runs_dir).expanduser().resolve() / self.run_id
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunDirError(f"cannot create the run directory {self.run_dir}: {e.strerror}; make "
                              f"{self.run_dir.parent} writable or set paths.runs_dir to a writable directory") from None
        try:
            self.manifest = Manifest(self.run_dir)
        except ManifestError as e:  # this start knows the run's config: keep the damaged file, rebuild the rest
            aside = self.run_dir / f"manifest.json.damaged-{int(time.time())}"
            os.replace(self.run_dir / "manifest.json", aside)
            log(f"warning: {e}; kept it as {aside.name} and rebuilt it from this start")
            self.manifest = Manifest(self.run_dir)
        self.result: RunResult | None = None
        # the recorded result when this run already finished (nothing to do), else None
        self.done: RunResult | None = None
        if self.manifest.status == "finished":
            log(f"run {self.run_id} already finished: {self.run_dir}")
            self.done = RunResult(self.run_id, self.run_dir, "finished", self.manifest.data.get("final_metrics", {}))

    @property
    def starts(self) -> int:
        return len(self.manifest.data.get("starts", []))

    def final_metrics(self) -> dict[str, float]:
        hist = read_history(self.run_dir)
        return {k: h[max(h)] for k, h in hist.items() if k.startswith(self.final_prefixes)}

    @contextmanager
    def running(self, **manifest_fields) -> Iterator[Tracker]:
        """Record a start, yield the run's tracker, and close with the status of however the block ended
        (``self.result`` holds it afterwards). Exceptions propagate."""
        self.manifest.start(self.config, self.run_id)
        self.manifest.update(error=None, **manifest_fields)
        tracker = make_tracker(self.config, self.run_dir, self.run_id, warn=self.log,
                               on_open=self.manifest.record_tracking)
        status, error = "failed", None
        try:
            yield tracker
            status = "finished"
        except (KeyboardInterrupt, SystemExit):  # Ctrl-C, or submitit exiting after a preemption signal
            status = "preempted" if PREEMPTING.is_set() else "killed"
            raise
        except BaseException as e:
            error = error_summary(e)
            raise
        finally:
            final = self.final_metrics()
            self.result = RunResult(self.run_id, self.run_dir, status, final)
            self._record_end(status, error, final, tracker)

    def _record_end(self, status: str, error: str | None, final: dict[str, float], tracker: Tracker) -> None:
        """The run's end in its manifest and replicas, best effort: a full disk must not hide the error that
        ended the run behind a second one."""
        try:
            self.manifest.update(status=status, error=error, final_metrics=final, ended_at=time.time())
        except OSError as e:
            self.log(f"warning: could not record status {status!r} in {self.manifest.path}: {e.strerror}")
        undelivered = tracker.close(status)
        try:
            self.manifest.update(undelivered=undelivered)
        except OSError:
            pass
