"""Run identity and manifest.

The run id is a hash of the semantic config (everything but paths, logging, launcher and device
settings) and the seed, so a requeued or resumed job finds the same run directory.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import socket
import subprocess
import threading
import time
from pathlib import Path

from s2lpo.tracking.journal import JOURNAL_NAME

NON_SEMANTIC = ("paths", "logger", "launcher", "hparams_search", "run_name", "sweep", "hydra")
NON_SEMANTIC_TRAINER = ("device", "threads", "gen_batch_size")


def semantic_config(cfg: dict) -> dict:
    out = {k: v for k, v in cfg.items() if k not in NON_SEMANTIC}
    if "trainer" in out:
        out["trainer"] = {k: v for k, v in out["trainer"].items() if k not in NON_SEMANTIC_TRAINER}
    for role in ("learner", "explorer"):  # a job's SLURM request does not change what it computes
        if isinstance(out.get(role), dict):
            out[role] = {k: v for k, v in out[role].items() if k != "resources"}
    return out


def config_hash(cfg: dict) -> str:
    return hashlib.sha256(json.dumps(semantic_config(cfg), sort_keys=True, default=str).encode()).hexdigest()


PER_SEED = ("seed", "evaluated_run")  # what differs between the seeds of one configuration


def config_id(cfg: dict) -> str:
    """The semantic config without the seed (for an eval run, without which seed's run it evaluated): runs
    with equal ids are seeds of one configuration, the only runs a table cell may aggregate (12 hex)."""
    sem = {k: v for k, v in semantic_config(cfg).items() if k not in PER_SEED}
    if isinstance(sem.get("eval"), dict):
        sem["eval"] = {k: v for k, v in sem["eval"].items() if k != "run_dir"}
    return hashlib.sha256(json.dumps(sem, sort_keys=True, default=str).encode()).hexdigest()[:12]


def run_id(cfg: dict) -> str:
    a = cfg["algorithm"]
    explorer = cfg["explorer"]["name"] if a.get("t_mix", 0) else "none"
    return f"{a['name']}-{cfg['learner']['name']}-{explorer}-s{cfg['seed']}-{config_hash(cfg)[:8]}".replace("/", "_")


@functools.lru_cache(maxsize=8)
def git_commit(root: Path | None = None) -> str:
    """The checkout's commit (asked of git once per process)."""
    return _git(["rev-parse", "HEAD"], root) or "unknown"


@functools.lru_cache(maxsize=8)
def git_diff(root: Path | None = None) -> str:
    """Uncommitted changes to tracked files (``git diff HEAD``), empty when clean or not a checkout."""
    return _git(["diff", "HEAD", "--no-color"], root)


def _git(args: list[str], root: Path | None) -> str:
    try:
        return subprocess.run(["git", *args], cwd=root or Path(__file__).parent, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


PACKAGES = ("s2lpo", "torch", "transformers", "verl", "vllm", "mlflow", "wandb", "hydra-core", "submitit")


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


SLURM_VARS = {"job_id": "SLURM_JOB_ID", "array_job_id": "SLURM_ARRAY_JOB_ID", "array_task_id": "SLURM_ARRAY_TASK_ID",
              "restart_count": "SLURM_RESTART_COUNT", "partition": "SLURM_JOB_PARTITION",
              "node_list": "SLURM_JOB_NODELIST"}

STATUSES = ("running", "finished", "failed", "preempted", "killed")


class ManifestError(RuntimeError):
    """A run's ``manifest.json`` exists but cannot be read (the message names it and what to do)."""


class Manifest:
    """``manifest.json`` in the run directory, rewritten atomically on every update (thread-safe: the
    replicas' delivery threads record their remote run ids here)."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / "manifest.json"
        self.data: dict = self._read() if self.path.exists() else {}
        self._lock = threading.Lock()

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            why = e.strerror if isinstance(e, OSError) else f"not JSON: {str(e).splitlines()[0]}"
            data, bad = None, why
        else:
            bad = None if isinstance(data, dict) else f"holds a {type(data).__name__}, not an object"
        if bad:
            raise ManifestError(f"{self.path} is damaged ({bad}); starting the run again with its config rebuilds "
                                f"it (the journal and checkpoints are kept), or remove {self.path.parent}")
        return data

    def update(self, **fields) -> None:
        if "status" in fields and fields["status"] not in STATUSES:
            raise ValueError(f"manifest status {fields['status']!r} is not one of {STATUSES}")
        with self._lock:
            self.data.update(fields)
            tmp = self.path.with_suffix(f".{threading.get_ident()}.tmp")
            tmp.write_text(json.dumps(self.data, indent=2, sort_keys=True, default=str))
            os.replace(tmp, self.path)

    def start(self, cfg: dict, rid: str) -> None:
        """Record a start (first or resumed): identity, code, environment, scheduler ids."""
        diff = git_diff()
        if diff:
            (self.path.parent / "git_diff.patch").write_text(diff + "\n")
        slurm = {k: os.environ[v] for k, v in SLURM_VARS.items() if v in os.environ}
        starts = [*self.data.get("starts", []), {"at": time.time(), "host": socket.gethostname(), "slurm": slurm}]
        self.update(run_id=rid, config=cfg, config_hash=config_hash(cfg), git_commit=git_commit(),
                    git_dirty=bool(diff), packages=package_versions(), host=socket.gethostname(),
                    python=platform.python_version(), status="running", restarts=len(starts) - 1, starts=starts,
                    started_at=self.data.get("started_at", time.time()), ended_at=None,
                    slurm_job_id=slurm.get("job_id"), slurm_array_job_id=slurm.get("array_job_id"),
                    slurm_array_task_id=slurm.get("array_task_id"),
                    slurm_restart_count=int(slurm.get("restart_count", 0)))

    def record_tracking(self, name: str, remote: dict) -> None:
        with self._lock:
            tracking = {**self.data.get("tracking", {}), name: remote}
        self.update(tracking=tracking)

    @property
    def status(self) -> str | None:
        return self.data.get("status")


def find_run_dirs(path: Path) -> list[Path]:
    """``path`` itself when it is a run directory, else every run directory below it."""
    path = Path(path)
    if (path / "manifest.json").exists():
        return [path]
    return sorted(p.parent for p in path.rglob("manifest.json") if (p.parent / JOURNAL_NAME).exists())
