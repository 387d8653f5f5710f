"""Delivery of a run's journal to one replica, off the training thread.

The training thread only appends to the journal (fsynced). A background thread tails the journal
from a byte offset every ``interval_s`` seconds (batching many steps into one request keeps its cost,
GIL time included, off the training loop), sends what lies above the replica's high-water marks in
batches, and advances the marks after each delivered batch. The only queue is the journal on disk:
memory stays bounded (one read of at most ``max_read_bytes``) however long a server is down. A
failure is retried with exponential back-off and never raises into training; after a failure the
replica is opened again, which re-reads what the remote holds, so a batch whose answer was lost is
not sent twice. ``drain()`` is the same delivery, synchronous (``s2lpo sync``).
"""

from __future__ import annotations

import fcntl
import threading
from collections.abc import Callable
from pathlib import Path

from s2lpo.tracking.journal import JournalTail, read_records
from s2lpo.tracking.replica import Replica, ReplicaState, advance, pending


class ReplicaBusy(RuntimeError):
    pass


class Delivery:
    def __init__(self, replica: Replica, run_dir: Path, warn: Callable[[str], None] = print, *,
                 batch: int = 1000, retry_min_s: float = 0.5, retry_max_s: float = 10.0, interval_s: float = 2.0,
                 max_read_bytes: int = 8 << 20, on_open: Callable[[str, dict], None] | None = None):
        self.replica, self.run_dir, self.warn = replica, Path(run_dir), warn
        self.batch, self.retry_min_s, self.retry_max_s, self.interval_s = batch, retry_min_s, retry_max_s, interval_s
        self.max_read_bytes, self.on_open = max_read_bytes, on_open
        self.state = ReplicaState(self.run_dir, replica.name)
        if self.state.damaged:
            warn(f"warning: {self.state.damaged}")
        self.tail = JournalTail(self.run_dir)
        self.opened = False
        self.failures = 0  # consecutive failed attempts
        self.sent = 0  # points delivered by this process
        self._closing, self._abandon = threading.Event(), threading.Event()
        self._status = "finished"
        self._thread: threading.Thread | None = None
        self._lock = None

    # -- one pass -----------------------------------------------------------------------------------
    def _acquire(self) -> None:
        """One deliverer per (run, replica) at a time: a live run and ``s2lpo sync`` never both send."""
        if self._lock is not None:
            return
        path = self.state.path.with_suffix(".lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path, "w")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise ReplicaBusy(f"another process delivers {self.run_dir.name} to {self.replica.name} "
                              f"(lock {path})") from None
        self._lock = f

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def step(self) -> bool:
        """Deliver what the journal holds now; True when nothing was left to read. Raises on failure."""
        self._acquire()
        if not self.opened:
            self.state.high_water = {k: int(v) for k, v in self.replica.open(self.state).items()}
            self.state.save()
            self.opened = True
            if self.on_open is not None:
                self.on_open(self.replica.name, dict(self.state.remote))
        start = self.tail.offset
        try:
            records = self.tail.read(self.max_read_bytes)
            points = pending(records, self.state.high_water)
            for b in range(0, len(points), self.batch):
                chunk = points[b : b + self.batch]
                self.replica.send(chunk)
                advance(self.state.high_water, chunk)
                self.state.save()
                self.sent += len(chunk)
        except BaseException:
            self.tail.offset = start  # read again; delivered batches are below the marks and are skipped
            self.opened = False  # reopen: the remote says what arrived of a batch whose answer was lost
            raise
        return not records

    def drain(self) -> int:
        """Synchronous delivery of the whole journal; returns the number of points sent."""
        before = self.sent
        try:
            while not self.step():
                pass
        finally:
            self.release()
        return self.sent - before

    def remaining(self) -> int:
        """Points of the journal not yet delivered (a snapshot)."""
        return len(pending(read_records(self.run_dir), dict(self.state.high_water)))

    # -- background thread --------------------------------------------------------------------------
    def start(self) -> Delivery:
        self._thread = threading.Thread(target=self._run, name=f"s2lpo-{self.replica.name}-delivery", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            self.release()

    def _loop(self) -> None:
        delay = self.retry_min_s
        while not self._abandon.is_set():
            closing = self._closing.is_set()
            try:
                idle = self.step()
            except Exception as e:  # noqa: BLE001 - a replica's failure never reaches training
                self._failed(e)
                (self._abandon if closing else self._closing).wait(delay)  # close() cuts a back-off short
                delay = min(2 * delay, self.retry_max_s)
                continue
            if self.failures:
                self.warn(f"{self.replica.name}: reachable again after {self.failures} failed attempt(s); "
                          "catching up from the journal")
                self.failures = 0
            delay = self.retry_min_s
            if closing and idle:
                self._close_remote()
                return
            if idle:
                self._closing.wait(self.interval_s)

    def _failed(self, e: Exception) -> None:
        if self.failures == 0:
            self.warn(f"warning: {self.replica.name} unreachable ({type(e).__name__}: {str(e)[:200]}); "
                      "retrying in the background with back-off; every metric stays in the journal")
        self.failures += 1

    def _close_remote(self) -> None:
        try:
            self.replica.close(self._status)
        except Exception as e:  # noqa: BLE001
            self.warn(f"warning: {self.replica.name}: could not mark the run {self._status} ({e})")

    def close(self, status: str = "finished", timeout: float = 30.0) -> int:
        """Deliver what is left (waiting at most ``timeout`` s), mark the remote run ``status``; returns
        the number of points left undelivered (for ``s2lpo sync``)."""
        self._status = status
        if self._thread is None:
            return self.remaining()
        self._closing.set()
        self._thread.join(timeout)
        if self._thread.is_alive():  # still unreachable: leave the rest to `s2lpo sync`
            self._abandon.set()
            self._thread.join(2.0)
        return self.remaining()
