"""``s2lpo sync``: replay run journals to their replicas, idempotently.

For runs whose tracking server was down, or which ran with no network: each replica is opened (the
remote run found again by its id, or created), asked what it holds, and sent only what it lacks; a
second sync sends nothing. With W&B online, offline directories not uploaded yet are handed to
``wandb sync`` first, oldest first, then the journal fills whatever they lacked.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from s2lpo.tracking.delivery import Delivery
from s2lpo.tracking.run import Manifest
from s2lpo.tracking.sinks import make_replicas
from s2lpo.tracking.wandb_files import offline_dirs, wandb_cli


@dataclass
class SyncResult:
    run_dir: Path
    run_id: str
    status: str
    sent: dict[str, int]  # replica -> points sent now
    errors: dict[str, str]


def upload_offline(run_dir: Path, wandb_id: str) -> None:
    """``wandb sync`` each offline directory not uploaded yet (W&B marks uploaded ones), oldest first."""
    for d in offline_dirs(run_dir, wandb_id):
        if not list(d.glob("*.synced")):
            subprocess.run([wandb_cli(), "sync", str(d)], check=True, capture_output=True, timeout=3600)


def sync_run(run_dir: Path, sinks: list[str] | None = None, mlflow_uri: str | None = None,
             wandb_mode: str | None = None, warn=print) -> SyncResult:
    manifest = Manifest(run_dir)
    if "config" not in manifest.data:
        raise FileNotFoundError(f"{run_dir / 'manifest.json'} has no config: not a run directory of s2lpo")
    rid, status = manifest.data["run_id"], manifest.status or "running"
    result = SyncResult(Path(run_dir), rid, status, {}, {})
    config = manifest.data["config"]
    if sinks:  # a replica the run never had can be added afterwards (its logger block names where it goes)
        logger = config["logger"]
        config = {**config, "logger": {**logger, "sinks": [*logger["sinks"], *(s for s in sinks
                                                                               if s not in logger["sinks"])]}}
    for replica in make_replicas(config, run_dir, rid, mlflow_uri, wandb_mode):
        if sinks and replica.name not in sinks:
            continue
        try:
            if replica.name == "wandb" and replica.mode == "online":
                upload_offline(run_dir, rid)
            d = Delivery(replica, run_dir, warn, on_open=manifest.record_tracking)
            result.sent[replica.name] = d.drain()
            if status != "running":  # a live or hard-killed run stays RUNNING until it ends
                replica.close(status)
        except Exception as e:  # noqa: BLE001 - report per run and replica, go on with the rest
            result.errors[replica.name] = f"{type(e).__name__}: {str(e)[:300]}"
    undelivered = {**manifest.data.get("undelivered", {})}
    for name in result.sent:
        undelivered[name] = 0
    manifest.update(undelivered=undelivered)
    return result
