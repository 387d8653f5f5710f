"""New sqlite MLflow stores, made fast: MLflow migrates a new sqlite store through its whole schema history
(~5 s on 2 cores, more on a busy node), once per store, and every run in a fresh root makes one. The migrated
schema is the same for every store of one MLflow version, so it is made once per machine and version (an empty
store under ``$XDG_CACHE_HOME/s2lpo/mlflow``, default ``~/.cache``) and copied for each new store (milliseconds).
The copy holds no experiment: MLflow adds its ``Default`` experiment on the first open, with the opener's
artifact root, as it does in a store it migrated itself."""

from __future__ import annotations

import fcntl
import os
import shutil
import sqlite3
from pathlib import Path


def _atomic(db: Path, make) -> None:
    """Make ``db`` once, under a file lock (several processes migrating a new store at once crash), in a
    temporary file renamed into place: a process killed while making it leaves no half-made store behind."""
    if db.exists():
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if db.exists():
            return
        tmp = db.with_name(f".{db.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        make(tmp)
        os.replace(tmp, db)


def _migrate(path: Path) -> None:
    from mlflow.tracking import MlflowClient

    MlflowClient(f"sqlite:///{path}").search_experiments(max_results=1)


def empty_store() -> Path | None:
    """This MLflow version's migrated empty store (made on first use), or None where it cannot be made."""
    import mlflow

    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    tpl = base / "s2lpo" / "mlflow" / f"empty-{mlflow.__version__}.db"

    def make(tmp: Path) -> None:
        _migrate(tmp)
        with sqlite3.connect(tmp) as con:  # MLflow's Default experiment carries its maker's artifact root
            con.execute("DELETE FROM experiments")
        con.close()

    try:
        _atomic(tpl, make)
    except (OSError, sqlite3.Error):  # a read-only home: each store migrates itself
        return None
    return tpl


def ensure_store(uri: str) -> None:
    """Create the sqlite store of ``uri`` once, atomically, from the migrated empty store where there is one.
    A server (``http://``) manages its own store."""
    if not uri.startswith("sqlite:///"):
        return
    db = Path(uri.removeprefix("sqlite:///"))
    if db.exists():
        return
    tpl = empty_store()
    _atomic(db, (lambda tmp: shutil.copyfile(tpl, tmp)) if tpl is not None else _migrate)
