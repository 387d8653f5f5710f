"""Per-run state of a sweep, from SLURM accounting *and* the run manifests.

SLURM's word alone is not trusted (a failed job can read COMPLETED: hydra#1928): a run is ``done``
only when its own manifest says finished, and a job that ended without that is ``failed``.

    manifest finished                      -> done
    job PENDING / REQUEUED                 -> queued (preempted, if the run was preempted before)
    job RUNNING                            -> running, with the last step in the run's journal
    job PREEMPTED, or manifest preempted   -> preempted
    job ended any other way                -> failed
    no job                                 -> not submitted
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from s2lpo.sweep.manifest import SweepManifest
from s2lpo.tracking.journal import JOURNAL_NAME
from s2lpo.tracking.run import Manifest, ManifestError


@dataclass
class RunStatus:
    run_id: str
    method: str
    seed: int
    state: str
    step: int | None
    total_steps: int
    job_id: str | None
    slurm_state: str | None
    restarts: int
    error: str = ""  # the run's own account of why it ended (the manifest's ``error``), or why it cannot be read


def slurm_states(job_ids: list[str]) -> dict[str, str]:
    """``{job id: state}`` from ``sacct`` (accounting knows finished and cancelled jobs too)."""
    ids = [j for j in job_ids if j]
    if not ids:
        return {}
    out = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(sorted(set(ids)))],
                         capture_output=True, text=True, timeout=60, env=os.environ)
    if out.returncode != 0:
        raise RuntimeError(f"sacct failed: {out.stderr.strip()[:500]} (is SLURM_CONF set and slurmdbd up?)")
    states = _parse_states(out.stdout)
    missing = [j for j in ids if j not in states]
    if missing:  # accounting lags a just-submitted job by a moment: the controller knows it
        q = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(sorted(set(missing)))],
                           capture_output=True, text=True, timeout=60, env=os.environ)
        states.update({k: v for k, v in _parse_states(q.stdout).items() if k not in states})
    return states


def _parse_states(text: str) -> dict[str, str]:
    """``JobID|State`` lines; a pending array's ``12_[0-3,7%4]`` stands for each of its tasks."""
    states: dict[str, str] = {}
    for line in text.splitlines():
        jid, _, state = line.strip().partition("|")
        if not jid:
            continue
        state = state.split()[0] if state else "UNKNOWN"
        for one in _expand(jid):
            states[one] = state
    return states


def _expand(jid: str) -> list[str]:
    if "_[" not in jid:
        return [jid]
    base, _, ranges = jid.partition("_[")
    out = []
    for part in ranges.rstrip("]").split("%")[0].split(","):
        lo, _, hi = part.partition("-")
        out += [f"{base}_{i}" for i in range(int(lo), int(hi or lo) + 1)]
    return out


def last_step(run_dir: Path) -> int | None:
    """The last step the run's journal holds (reads only the file's tail)."""
    p = Path(run_dir) / JOURNAL_NAME
    if not p.exists():
        return None
    with open(p, "rb") as f:
        f.seek(max(0, p.stat().st_size - 65536))
        lines = f.read().decode("utf-8", errors="replace").splitlines()
    for line in reversed(lines):
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            continue
    return None


def run_state(manifest_status: str | None, slurm: str | None) -> str:
    if manifest_status == "finished":
        return "done"
    if slurm in ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING"):
        return "queued"
    if slurm in ("RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "STAGE_OUT", "SIGNALING"):
        return "running"
    if slurm == "PREEMPTED" or (slurm is None and manifest_status == "preempted"):
        return "preempted"
    if slurm is None:
        return "not submitted"
    return "failed"


def sweep_status(root: Path, name: str, manifest=None) -> list[RunStatus]:
    manifest = manifest or SweepManifest(root, name)
    runs = manifest.data["runs"]
    states = slurm_states([e["jobs"][-1] for e in runs.values() if e.get("jobs")])
    out = []
    for rid, e in runs.items():
        run_dir = Path(e["run_dir"])
        try:
            m, damaged = Manifest(run_dir).data, ""
        except ManifestError as err:
            m, damaged = {}, str(err)
        job = e["jobs"][-1] if e.get("jobs") else None
        slurm = states.get(job) if job else None
        state = run_state(m.get("status"), slurm)
        if state == "queued" and m.get("status") == "preempted":
            state = "preempted (requeued)"
        out.append(RunStatus(rid, e.get("method", "?"), int(e.get("seed", 0)), state,
                             last_step(run_dir), int(e.get("total_steps", 0)), job, slurm, int(m.get("restarts", 0)),
                             damaged or m.get("error") or ""))
    return sorted(out, key=lambda s: (s.method, s.run_id))
