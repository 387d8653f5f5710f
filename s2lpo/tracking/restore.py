"""A run's journal checked against what its checkpoint says was trained, and mended from the replicas.

The journal is the source of truth, but a journal cut or deleted by hand (or by a disk) while the replicas
still hold the points must not lose them: before a run resumes (or reports itself finished), every step up to
its checkpoint's must be in the journal. Missing steps are read back from MLflow (the run's remote recorded in
``tracking/mlflow.json``) or from the W&B offline files, and appended to the journal; what no replica holds is
reported, never skipped. Imports tracking only.
"""

from __future__ import annotations

import time
from pathlib import Path

from s2lpo.tracking.journal import Journal, read_history
from s2lpo.tracking.replica import ReplicaState
from s2lpo.tracking.wandb_files import offline_dirs, read_offline_run


class JournalGapError(RuntimeError):
    """The journal lacks steps the run's checkpoint covers and no replica holds them."""


def missing_steps(run_dir: Path, required: dict[str, list[int]]) -> list[int]:
    """The steps at which the journal lacks one of ``required``'s keys (``key -> steps it must hold``)."""
    hist = read_history(run_dir)
    return sorted({s for key, steps in required.items() for s in steps if s not in hist.get(key, {})})


def _from_mlflow(run_dir: Path, steps: set[int]) -> dict[int, dict[str, tuple[float, float]]]:
    from mlflow.tracking import MlflowClient

    from s2lpo.tracking.mlflow_replica import from_mlflow_key

    remote = ReplicaState(run_dir, "mlflow").remote
    if not remote.get("run_id"):
        return {}
    client = MlflowClient(remote["tracking_uri"])
    out: dict[int, dict[str, tuple[float, float]]] = {}
    for key in client.get_run(remote["run_id"]).data.metrics:
        for m in client.get_metric_history(remote["run_id"], key):
            if m.step in steps:
                out.setdefault(int(m.step), {})[from_mlflow_key(key)] = (float(m.value), m.timestamp / 1000)
    return out


def _from_wandb(run_dir: Path, rid: str, steps: set[int]) -> dict[int, dict[str, tuple[float, float]]]:
    out: dict[int, dict[str, tuple[float, float]]] = {}
    for d in offline_dirs(run_dir, rid):
        for step, metrics in read_offline_run(d).rows:
            if step in steps:
                out.setdefault(step, {}).update({k: (v, 0.0) for k, v in metrics.items()})
    return out


def mend_journal(run_dir: Path, rid: str, required: dict[str, list[int]], upto: int, log=print) -> list[int]:
    """Make the journal hold every ``key`` at its ``required`` steps (those a checkpoint of step ``upto``
    covers), from the replicas where it does not; returns the steps restored. Raises
    :class:`JournalGapError` naming the steps no replica holds and the way on."""
    gaps = missing_steps(run_dir, required)
    if not gaps:
        return []
    want = set(gaps)
    found: dict[int, dict[str, tuple[float, float]]] = {}
    sources = []
    for name, read in (("MLflow", lambda: _from_mlflow(run_dir, want)), ("W&B", lambda: _from_wandb(run_dir, rid, want))):
        try:
            got = read()
        except Exception as e:  # noqa: BLE001 - an unreachable replica is one source fewer
            log(f"warning: could not read {name} to mend the journal ({type(e).__name__}: {str(e)[:120]})")
            continue
        got = {s: m for s, m in got.items() if s not in found and all(k in m for k, ss in required.items() if s in ss)}
        if got:
            sources.append(f"{name} ({len(got)} steps)")
        found.update(got)
    lost = sorted(want - set(found))
    if lost:
        raise JournalGapError(
            f"the journal of run {rid} ({Path(run_dir) / 'metrics.jsonl'}) lacks steps {_ranges(lost)} that its "
            f"checkpoint covers (step {upto}), and no replica holds them; to train those steps again (the run is "
            f"seeded per step: they come out the same), remove the checkpoints: rm -r {Path(run_dir) / 'checkpoints'}")
    journal = Journal(run_dir)
    try:
        for step in sorted(found):
            metrics = found[step]
            t = max((tt for _, tt in metrics.values()), default=0.0) or time.time()
            journal.log(step, {k: v for k, (v, _) in metrics.items()}, t=t)
    finally:
        journal.close()
    log(f"warning: the journal of run {rid} lacked steps {_ranges(sorted(found))}; restored from "
        f"{', '.join(sources)}")
    return sorted(found)


def _ranges(steps: list[int]) -> str:
    out, start = [], None
    for i, s in enumerate(steps):
        if start is None:
            start = s
        if i + 1 == len(steps) or steps[i + 1] != s + 1:
            out.append(f"{start}" if start == s else f"{start}-{s}")
            start = None
    return ", ".join(out)
