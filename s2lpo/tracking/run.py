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
import time
from pathlib import Path

NON_SEMANTIC = ("paths", "logger", "launcher", "hparams_search", "run_name", "sweep", "hydra")
NON_SEMANTIC_TRAINER = ("device", "threads", "gen_batch_size")


def semantic_config(cfg: dict) -> dict:
    out = {k: v for k, v in cfg.items() if k not in NON_SEMANTIC}
    if "trainer" in out:
        out["trainer"] = {k: v for k, v in out["trainer"].items() if k not in NON_SEMANTIC_TRAINER}
    return out


def config_hash(cfg: dict) -> str:
    return hashlib.sha256(json.dumps(semantic_config(cfg), sort_keys=True, default=str).encode()).hexdigest()


def run_id(cfg: dict) -> str:
    a = cfg["algorithm"]
    explorer = cfg["explorer"]["name"] if a.get("t_mix", 0) else "none"
    return f"{a['name']}-{cfg['learner']['name']}-{explorer}-s{cfg['seed']}-{config_hash(cfg)[:8]}".replace("/", "_")


@functools.lru_cache(maxsize=8)
def git_commit(root: Path | None = None) -> str:
    """The checkout's commit (asked of git once per process)."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root or Path(__file__).parent, capture_output=True,
                              text=True, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class Manifest:
    """``manifest.json`` in the run directory, rewritten atomically on every update."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / "manifest.json"
        self.data: dict = json.loads(self.path.read_text()) if self.path.exists() else {}

    def update(self, **fields) -> None:
        self.data.update(fields)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, sort_keys=True, default=str))
        os.replace(tmp, self.path)

    def start(self, cfg: dict, rid: str) -> None:
        restarts = self.data.get("restarts", -1) + 1
        self.update(run_id=rid, config=cfg, config_hash=config_hash(cfg), git_commit=git_commit(),
                    host=socket.gethostname(), python=platform.python_version(), status="running",
                    restarts=restarts, started_at=self.data.get("started_at", time.time()),
                    slurm_job_id=os.environ.get("SLURM_JOB_ID"))

    @property
    def status(self) -> str | None:
        return self.data.get("status")
