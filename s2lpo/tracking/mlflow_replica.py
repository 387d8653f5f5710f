"""MLflow as a replica of the journal: a tracking server (``http://…``) or a sqlite store.

One MLflow experiment per project; a run is created once, found again by its ``s2lpo.run_id`` tag
(so a lost ``tracking/mlflow.json`` or a create whose answer was lost never makes a second run) and
reopened on resume. Sweep members are children of one parent run per sweep (``mlflow.parentRunId``;
MLflow's ``nested=True`` only works inside one process). Writes are ``log_batch`` calls of up to 1000
metrics; no async logging (it drops data on server errors and on exit without ``end_run``).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from s2lpo.tracking.replica import Point, ReplicaState
from s2lpo.tracking.sqlite_store import ensure_store

RUN_ID_TAG = "s2lpo.run_id"
SWEEP_TAG = "s2lpo.sweep"
KIND_TAG = "s2lpo.kind"
SIZE_TAG = "s2lpo.sweep_size"  # runs in the sweep (set by `s2lpo sweep submit` and studies)
STATUS = {"finished": "FINISHED", "failed": "FAILED", "killed": "KILLED", "preempted": "KILLED"}


def configure_http() -> None:
    """Short retries and timeouts (the defaults block 4-20 minutes on a dead server); telemetry off."""
    for k, v in {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "10", "MLFLOW_ENABLE_TELEMETRY": "false", "DO_NOT_TRACK": "1",
                 "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}.items():
        os.environ.setdefault(k, v)
    # urllib3 logs every retry of a dead server; the delivery thread says it once, with what to do
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)


def mlflow_key(key: str) -> str:
    """MLflow forbids '@' in metric names, and its UI sorts names as text: ``eval/toy/pass@8`` is stored as
    ``eval/toy/pass_at_0008`` (k zero-padded to 4 digits), so pass@1, 2, 4, …, 16 list in order. The
    journal, W&B and the analysis keep ``pass@8``."""
    return re.sub(r"@(\d+)", lambda m: f"_at_{int(m.group(1)):04d}", key).replace("@", "_at_")


def from_mlflow_key(key: str) -> str:
    """Inverse of :func:`mlflow_key` (also reads the unpadded ``pass_at_8`` of runs logged before)."""
    return re.sub(r"_at_(\d+)", lambda m: f"@{int(m.group(1))}", key)


# MLflow 3 opens an experiment on its GenAI "Traces" page unless it is tagged as model development
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def experiment_id(client, name: str, tracking_uri: str = "") -> str:
    """The experiment's id, created when missing: tagged so MLflow's UI opens on the runs table, and (a
    sqlite store) with its artifacts beside the database, not in whatever directory a job runs in."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is not None:
        for k, v in EXPERIMENT_KIND.items():  # an experiment made before the tag existed, or by hand
            if k not in exp.tags:
                client.set_experiment_tag(exp.experiment_id, k, v)
        return exp.experiment_id
    where = None
    if tracking_uri.startswith("sqlite:///"):
        where = (Path(tracking_uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()
    try:
        return client.create_experiment(name, artifact_location=where, tags=EXPERIMENT_KIND)
    except MlflowException:  # created meanwhile by a concurrent run
        return client.get_experiment_by_name(name).experiment_id


def runs_url(tracking_uri: str, exp_id: str, run_id: str | None = None) -> str | None:
    """Where the run (or the experiment's runs table) is in MLflow's UI; None for a store without one."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    base = f"{tracking_uri.rstrip('/')}/#/experiments/{exp_id}"
    return f"{base}/runs/{run_id}" if run_id else f"{base}/runs?workflowType=machine_learning"


def find_run(client, exp_id: str, **tags: str):
    flt = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = client.search_runs([exp_id], flt, max_results=50, order_by=["attributes.start_time ASC"])
    return sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))


def settle_sweep_parent(client, parent_id: str) -> str:
    """The parent's status follows its members: RUNNING while one runs (or fewer than the sweep's size have
    started), then FINISHED when all finished, else FAILED. Every member calls it after its own end, so
    the last one to end sees the others ended."""
    parent = client.get_run(parent_id)
    members = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'",
                                 max_results=5000)
    size = int(parent.data.tags.get(SIZE_TAG, 0) or 0)
    if any(m.info.status in ("RUNNING", "SCHEDULED") for m in members) or len(members) < size:
        status = "RUNNING"
    else:
        status = "FINISHED" if all(m.info.status == "FINISHED" for m in members) else "FAILED"
    if parent.info.status != status:
        if status == "RUNNING":
            client.update_run(parent_id, status="RUNNING")
        else:
            client.set_terminated(parent_id, status=status)
    return status


def sweep_parent(client, exp_id: str, sweep: str) -> str:
    """The sweep's parent run: made by ``s2lpo sweep submit`` before any job starts, else by whichever
    member comes first. Members racing may both create one: the oldest is kept and the extra deleted,
    and every member checks its link again when it ends (``MlflowReplica.close``)."""
    found = find_run(client, exp_id, **{SWEEP_TAG: sweep, KIND_TAG: "sweep"})
    if not found:
        client.create_run(exp_id, run_name=f"sweep: {sweep}", tags={SWEEP_TAG: sweep, KIND_TAG: "sweep",
                                                                    "sweep": sweep})
        found = find_run(client, exp_id, **{SWEEP_TAG: sweep, KIND_TAG: "sweep"})
        for extra in found[1:]:
            try:
                client.delete_run(extra.info.run_id)
            except Exception:  # noqa: BLE001 - already deleted by the other member
                pass
    return found[0].info.run_id


class MlflowReplica:
    name = "mlflow"

    def __init__(self, tracking_uri: str, experiment: str, rid: str, run_name: str, tags: dict[str, str],
                 params: dict[str, str], sweep: str | None = None, config: dict | None = None):
        self.uri, self.experiment, self.rid, self.run_name = tracking_uri, experiment, rid, run_name
        self.tags, self.params, self.sweep, self.config = tags, params, sweep, config
        self.client = None
        self.run_id: str | None = None
        # imported here, on the thread that builds the replica, before its delivery thread starts: MLflow's
        # package imports in circles, and two threads importing it at once see a half-initialised module
        import mlflow.tracking  # noqa: F401

    def open(self, state: ReplicaState) -> dict[str, int]:
        configure_http()
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        ensure_store(self.uri)
        self.client = c = MlflowClient(tracking_uri=self.uri)
        known = state.remote.get("run_id") if state.remote.get("tracking_uri") == self.uri else None
        run = None
        if known:
            try:
                run = c.get_run(known)
            except MlflowException:  # deleted, or another store behind the same address
                run = None
        exp_id = run.info.experiment_id if run else experiment_id(c, self.experiment, self.uri)
        if run is None:
            found = find_run(c, exp_id, **{RUN_ID_TAG: self.rid})
            run = c.get_run(found[0].info.run_id) if found else self._create(exp_id)
        self.run_id = run.info.run_id
        if run.info.status != "RUNNING":
            c.update_run(self.run_id, status="RUNNING")
        parent = run.data.tags.get("mlflow.parentRunId")
        if parent:
            settle_sweep_parent(c, parent)  # back to RUNNING while a member runs
        state.remote = {"tracking_uri": self.uri, "experiment_id": exp_id, "run_id": self.run_id,
                        "parent_run_id": parent, "url": runs_url(self.uri, exp_id, self.run_id)}
        return {from_mlflow_key(m.key): int(m.step) for m in run.data._metric_objs}

    def _create(self, exp_id: str):
        from mlflow.entities import Param

        tags = {**self.tags, RUN_ID_TAG: self.rid}
        if self.sweep:
            tags["mlflow.parentRunId"] = sweep_parent(self.client, exp_id, self.sweep)
        run = self.client.create_run(exp_id, run_name=self.run_name, tags=tags)
        items = sorted(self.params.items())
        for b in range(0, len(items), 100):
            self.client.log_batch(run.info.run_id, params=[Param(k, str(v)[:6000]) for k, v in items[b : b + 100]])
        if self.config is not None:
            self._log_config(run.info.run_id)
        return self.client.get_run(run.info.run_id)

    def _log_config(self, run_id: str) -> None:
        """The whole resolved config as ``config.yaml`` (the params hold the few that matter)."""
        import yaml

        try:
            self.client.log_text(run_id, yaml.safe_dump(self.config, sort_keys=False), "config.yaml")
        except Exception as e:  # noqa: BLE001 - a store without artifacts: the manifest keeps the config
            logging.getLogger(__name__).warning("MLflow run %s: config.yaml not stored (%s: %s); the run's "
                                                "manifest.json holds the config", run_id, type(e).__name__, e)

    def send(self, points: list[Point]) -> None:
        from mlflow.entities import Metric

        ms = [Metric(mlflow_key(p.key), p.value, int(p.t * 1000), p.step) for p in points]
        for b in range(0, len(ms), 1000):
            self.client.log_batch(self.run_id, metrics=ms[b : b + 1000])

    def close(self, status: str) -> None:
        if self.sweep:  # a parent deleted by a racing member: link to the one that was kept
            run = self.client.get_run(self.run_id)
            kept = sweep_parent(self.client, run.info.experiment_id, self.sweep)
            if run.data.tags.get("mlflow.parentRunId") != kept:
                self.client.set_tag(self.run_id, "mlflow.parentRunId", kept)
            self.client.set_terminated(self.run_id, status=STATUS.get(status, status))
            settle_sweep_parent(self.client, kept)
            return
        self.client.set_terminated(self.run_id, status=STATUS.get(status, status))


def ensure_sweep_parent(tracking_uri: str, experiment: str, sweep: str, size: int | None = None) -> str:
    """Create (or find) a sweep's parent run up front, so its members never race to make it; ``size`` (the
    sweep's number of runs) keeps it RUNNING until that many members have ended."""
    configure_http()
    from mlflow.tracking import MlflowClient

    ensure_store(tracking_uri)
    client = MlflowClient(tracking_uri)
    parent = sweep_parent(client, experiment_id(client, experiment, tracking_uri), sweep)
    if size:
        client.set_tag(parent, SIZE_TAG, str(size))
        settle_sweep_parent(client, parent)
    return parent


def announce_sweep(loggers: list[dict], sweep: str, size: int, warn=print) -> None:
    """The MLflow parent run of a sweep or study, made before any member starts (members would race), sized
    so it ends FINISHED or FAILED with its last member. An unreachable server: the first member makes it."""
    targets = {(lg["mlflow"]["tracking_uri"], lg["mlflow"]["experiment"]) for lg in loggers if "mlflow" in lg["sinks"]}
    for uri, experiment in sorted(targets):
        try:
            ensure_sweep_parent(uri, experiment, sweep, size=size)
        except Exception as e:  # noqa: BLE001 - unreachable now: the first member makes it
            warn(f"warning: could not create the MLflow parent run of {sweep} at {uri} ({type(e).__name__}); "
                 "its first run will")
