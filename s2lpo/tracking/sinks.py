"""Metric sinks: replicas of the journal. Small interface; full tracking (W&B, servers, outages,
resume without duplicates) lives behind the same interface."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Protocol

from s2lpo.tracking.journal import Journal


class Sink(Protocol):
    def log(self, step: int, metrics: dict[str, float]) -> None: ...

    def close(self, status: str = "FINISHED") -> None: ...


class JournalSink:
    def __init__(self, run_dir: Path):
        self.journal = Journal(run_dir)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.journal.log(step, metrics)

    def close(self, status: str = "FINISHED") -> None:
        self.journal.close()


def mlflow_key(key: str) -> str:
    """MLflow forbids '@' in metric names: ``eval/toy/pass@8`` is stored as ``eval/toy/pass_at_8``."""
    return key.replace("@", "_at_")


def from_mlflow_key(key: str) -> str:
    return key.replace("_at_", "@")


class MlflowSink:
    """Batched writes with ``MlflowClient.log_batch``; the MLflow run id is kept in the run dir so a
    resumed run continues the same MLflow run, and a high-water mark keeps re-run steps from being
    sent twice (MLflow stores every row it is sent)."""

    def __init__(self, run_dir: Path, tracking_uri: str, experiment: str, run_name: str, tags: dict[str, str],
                 params: dict[str, str]):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
        os.environ.setdefault("DO_NOT_TRACK", "1")
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.state_path = Path(run_dir) / "mlflow.json"
        state = json.loads(self.state_path.read_text()) if self.state_path.exists() else {}
        if state.get("run_id"):
            self.run_id = state["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            exp = self.client.get_experiment_by_name(experiment)
            exp_id = exp.experiment_id if exp else self.client.create_experiment(experiment)
            run = self.client.create_run(exp_id, run_name=run_name, tags=tags)
            self.run_id = run.info.run_id
            from mlflow.entities import Param

            items = list(params.items())
            for b in range(0, len(items), 100):
                self.client.log_batch(self.run_id, params=[Param(k, str(v)[:6000]) for k, v in items[b : b + 100]])
        self.high_water = int(state.get("high_water", -1))  # step 0 (the initial evaluation) is a step too
        self._save()

    def _save(self) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"run_id": self.run_id, "high_water": self.high_water}))
        os.replace(tmp, self.state_path)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if step <= self.high_water:
            return
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        ms = [Metric(mlflow_key(k), float(v), ts, step) for k, v in metrics.items()]
        for b in range(0, len(ms), 1000):
            self.client.log_batch(self.run_id, metrics=ms[b : b + 1000])
        self.high_water = step  # a step's metrics arrive in one call, so the step is now delivered
        self._save()

    def close(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)


def run_tags(cfg: dict, rid: str) -> dict[str, str]:
    """Tags on every run, so dashboards can group and filter."""
    from s2lpo.tracking.run import git_commit

    a = cfg["algorithm"]
    return {
        "s2lpo.run_id": rid, "method": a["name"], "learner": cfg["learner"]["name"],
        "explorer": cfg["explorer"]["name"] if a["t_mix"] else "none", "t_mix": str(a["t_mix"]),
        "schedule": a["schedule"], "temperature": str(a["temperature"]),
        "temperature_mode": a["temperature_mode"],
        "guidance": a["guidance"]["kind"] if a["guidance"]["enabled"] else "none", "seed": str(cfg["seed"]),
        "sweep": str(cfg.get("sweep") or ""), "git_commit": git_commit(),
    }


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = str(v)
    return out


class GuardedSink:
    """A replica that may fail (a tracking server down) without failing training: the first error
    disables it for the rest of this process, with one warning; the journal keeps every point and the
    sink's high-water mark says where a later replay starts."""

    def __init__(self, name: str, factory, warn=print):
        self.name, self.warn, self.sink = name, warn, None
        try:
            self.sink = factory()
        except Exception as e:  # noqa: BLE001 - any failure of a replica is contained
            self._down(e)

    def _down(self, e: Exception) -> None:
        self.sink = None
        self.warn(f"warning: {self.name} sink disabled for this run ({type(e).__name__}: {str(e)[:200]}); "
                  "every metric stays in the run's journal (metrics.jsonl)")

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if self.sink is not None:
            try:
                self.sink.log(step, metrics)
            except Exception as e:  # noqa: BLE001
                self._down(e)

    def close(self, status: str = "FINISHED") -> None:
        if self.sink is not None:
            try:
                self.sink.close(status)
            except Exception as e:  # noqa: BLE001
                self._down(e)


def make_sinks(cfg, run_dir: Path, rid: str, container: dict, warn=print) -> list[Sink]:
    sinks: list[Sink] = []
    for name in cfg.logger.sinks:
        if name == "journal":
            sinks.append(JournalSink(run_dir))
        elif name == "mlflow":
            m = cfg.logger.mlflow
            sinks.append(GuardedSink("mlflow", lambda m=m: MlflowSink(
                run_dir, m.tracking_uri, m.experiment, cfg.run_name or rid, run_tags(container, rid),
                flatten(container)), warn))
        else:
            raise ValueError(f"logger.sinks has unknown sink {name!r}; use journal or mlflow")
    return sinks
