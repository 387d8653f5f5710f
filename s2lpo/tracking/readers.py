"""Readers of logged runs: MLflow (server or store), W&B (offline files; the public API online), and
run journals. Each lists runs (with a version that changes whenever the run gets new points) and
fetches their points as ``run_id, key, step, value, t`` rows; ``s2lpo.analysis.cache`` turns them into
one tidy DataFrame.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from s2lpo.tracking.journal import JOURNAL_NAME, read_records
from s2lpo.tracking.run import find_run_dirs
from s2lpo.tracking.sinks import dashboard_params, run_tags

POINT_COLUMNS = ["key", "step", "value", "t"]


@dataclass
class RunInfo:
    run_id: str  # our run id (the s2lpo.run_id tag)
    source_id: str  # the id in the source (MLflow run id, W&B id, run directory)
    tags: dict[str, str]
    version: str  # changes when the run gets new points
    extra: dict = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)  # the flat semantic config: names what differs


def tags_from_config(cfg: dict, rid: str) -> dict[str, str]:
    tags = run_tags(cfg, rid)
    tags.pop("git_commit", None)
    tags["group_size"] = str(cfg["algorithm"]["group_size"])
    return tags


def params_from_config(cfg: dict) -> dict[str, str]:
    return {k: v for k, v in dashboard_params(cfg).items() if k != "seed"}


def matches(tags: dict[str, str], where: dict[str, str] | None) -> bool:
    """``where``: tag -> value or list of values (all must hold)."""
    return all(str(tags.get(k, "")) in [str(x) for x in (v if isinstance(v, list) else [v])]
               for k, v in (where or {}).items())


def mlflow_filter(where: dict[str, str] | None) -> str:
    """``where`` in MLflow's search syntax, so the server returns only those runs."""
    parts = []
    for k, v in (where or {}).items():
        vals = [str(x).replace("'", "\\'") for x in (v if isinstance(v, list) else [v])]
        parts.append(f"tags.`{k}` = '{vals[0]}'" if len(vals) == 1 else
                     f"tags.`{k}` IN ({', '.join(repr(x) for x in vals)})")
    return " and ".join(parts)


def points_frame(rows: Iterable[tuple[str, int, float, float]]) -> pd.DataFrame:
    df = pd.DataFrame(list(rows), columns=POINT_COLUMNS)
    return df.astype({"key": "string", "step": "int64", "value": "float64", "t": "float64"})


class JournalReader:
    """Run directories (``manifest.json`` + ``metrics.jsonl``) under one or more roots."""

    name = "journal"

    def __init__(self, *roots: str | Path, where: dict | None = None):
        self.roots, self.where = [Path(r) for r in roots], where

    def runs(self) -> list[RunInfo]:
        out = []
        for root in self.roots:
            for d in find_run_dirs(root):
                j = d / JOURNAL_NAME
                if not j.exists():
                    continue
                m = json.loads((d / "manifest.json").read_text())
                st = j.stat()
                tags = tags_from_config(m["config"], m["run_id"])
                tags["status"] = str(m.get("status"))
                if matches(tags, self.where):
                    out.append(RunInfo(m["run_id"], str(d), tags, f"{st.st_size}:{st.st_mtime_ns}",
                                       params=params_from_config(m["config"])))
        return out

    def fetch(self, runs: list[RunInfo], progress=None, want=None) -> dict[str, pd.DataFrame]:
        out = {}  # a local file is read whole (``want`` only matters for remote sources)
        for r in runs:
            recs = read_records(Path(r.source_id))
            out[r.run_id] = points_frame((k, rec["step"], v, rec.get("t", 0.0)) for rec in recs
                                         for k, v in rec["metrics"].items())
            if progress:
                progress(1)
        return out


class MlflowReader:
    """Runs of one MLflow experiment (``filter_string`` in MLflow's search syntax narrows them). Metric
    histories come in bulk from a server (its get-history-bulk endpoint, ≤ 25,000 points a call) and run
    by run from a store."""

    name = "mlflow"

    def __init__(self, tracking_uri: str, experiment: str = "s2lpo", filter_string: str = "", where: dict | None = None):
        from s2lpo.tracking.mlflow_replica import configure_http

        configure_http()
        from mlflow.tracking import MlflowClient

        self.uri, self.experiment = tracking_uri, experiment
        self.filter = " and ".join(f for f in (filter_string, mlflow_filter(where)) if f)  # filtered by the server
        self.client = MlflowClient(tracking_uri)

    def runs(self) -> list[RunInfo]:
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is None:
            raise LookupError(f"MLflow at {self.uri} has no experiment {self.experiment!r}")
        out, token = [], None
        while True:
            page = self.client.search_runs([exp.experiment_id], self.filter, max_results=1000, page_token=token)
            for run in page:
                t = run.data.tags
                if t.get("s2lpo.kind") == "sweep":  # a sweep's parent run holds no points
                    continue
                objs = run.data._metric_objs
                latest = {m.key: m.step for m in objs}
                tags = {k: v for k, v in t.items() if not k.startswith("mlflow.")}
                tags.setdefault("kind", "train")
                tags["group_size"] = run.data.params.get("algorithm.group_size", tags.get("group_size", ""))
                tags["status"] = run.info.status.lower()
                version = f"{run.info.status}:{run.info.end_time}:{len(latest)}:{max(latest.values(), default=-1)}"
                out.append(RunInfo(t.get("s2lpo.run_id", run.info.run_id), run.info.run_id, tags, version,
                                   {"keys": sorted(latest), "max_step": max(latest.values(), default=0),
                                    "latest": [(m.key, m.step, m.value, m.timestamp) for m in objs]},
                                   {k: v for k, v in run.data.params.items() if k != "seed"}))
            token = page.token
            if not token:
                return out

    def fetch(self, runs: list[RunInfo], progress=None, want=None) -> dict[str, pd.DataFrame]:
        """Every run's latest point per key (from the run listing, no extra call), and the full
        history of the keys ``want(key)`` accepts (all keys when ``want`` is None)."""
        from s2lpo.tracking.mlflow_replica import from_mlflow_key

        rows: dict[str, list] = {r.run_id: [(from_mlflow_key(k), s, _inf(v), ts / 1000.0)
                                             for k, s, v, ts in r.extra["latest"]] for r in runs}
        bulk = self.uri.startswith(("http://", "https://"))
        by_source = {r.source_id: r for r in runs}
        keys = sorted({k for r in runs for k in r.extra["keys"] if want is None or want(from_mlflow_key(k))})
        for key in keys:
            have = [r for r in runs if key in r.extra["keys"]]
            for batch in _batches(have, 20000) if bulk else [[r] for r in have]:  # < the 25,000 cap
                for source_id, step, value, ts in self._history(key, batch, bulk):
                    rows[by_source[source_id].run_id].append((from_mlflow_key(key), step, _inf(value), ts / 1000.0))
        if progress:
            progress(len(runs))
        return {rid: points_frame(r) for rid, r in rows.items()}

    def _history(self, key: str, batch: list[RunInfo], bulk: bool):
        if bulk:
            import requests

            resp = requests.get(f"{self.uri}/ajax-api/2.0/mlflow/metrics/get-history-bulk",
                                params={"run_id": [r.source_id for r in batch], "metric_key": key,
                                        "max_results": 25000}, timeout=60)
            if resp.ok:
                ms = resp.json().get("metrics", [])
                if len(ms) < 25000:
                    return [(m["run_id"], int(m["step"]), float(m["value"]), int(m["timestamp"])) for m in ms]
            # no bulk endpoint, or a truncated answer: run by run
        return [(r.source_id, m.step, m.value, m.timestamp) for r in batch
                for m in self.client.get_metric_history(r.source_id, key)]


def _inf(v: float) -> float:
    """MLflow's store keeps NaN but clamps ±inf to ±sys.float_info.max: read those back as ±inf."""
    return v if abs(v) != sys.float_info.max else math.copysign(math.inf, v)


def _batches(runs: list[RunInfo], limit: int) -> list[list[RunInfo]]:
    """Runs grouped so that each group's points (≈ last step + 1 per run) stay under ``limit``."""
    out, cur, size = [], [], 0
    for r in runs:
        n = int(r.extra["max_step"]) + 1
        if cur and (size + n > limit or len(cur) == 100):
            out.append(cur)
            cur, size = [], 0
        cur.append(r)
        size += n
    return out + ([cur] if cur else [])


class WandbOfflineReader:
    """W&B offline run directories (``<run dir>/wandb/offline-run-*``) under roots; a run's several
    directories (one per start) are read together."""

    name = "wandb"

    def __init__(self, *roots: str | Path, where: dict | None = None):
        self.roots, self.where = [Path(r) for r in roots], where

    def _dirs(self) -> dict[str, list[Path]]:
        found: dict[str, list[Path]] = {}
        for root in self.roots:
            for d in sorted(root.rglob("offline-run-*")):
                if d.is_dir() and list(d.glob("run-*.wandb")):
                    wid = next(d.glob("run-*.wandb")).stem.removeprefix("run-")
                    found.setdefault(wid, []).append(d)
        return found

    def runs(self) -> list[RunInfo]:
        from s2lpo.tracking.wandb_files import read_offline_run

        out = []
        for wid, dirs in sorted(self._dirs().items()):
            meta = next((m for m in (read_offline_run(d) for d in dirs) if m.config), None)
            if meta is None:
                continue
            tags = tags_from_config(meta.config, wid)
            if not matches(tags, self.where):
                continue
            sizes = ":".join(str(f.stat().st_size) for d in dirs for f in d.glob("run-*.wandb"))
            out.append(RunInfo(wid, str(dirs[0].parent.parent), tags, f"{len(dirs)}:{sizes}", {"dirs": dirs},
                               params_from_config(meta.config)))
        return out

    def fetch(self, runs: list[RunInfo], progress=None, want=None) -> dict[str, pd.DataFrame]:
        from s2lpo.tracking.wandb_files import read_offline_run

        out = {}
        for r in runs:
            rows = [(k, step, v, float(i)) for d in r.extra["dirs"] for i, (step, m) in
                    enumerate(read_offline_run(d).rows) for k, v in m.items()]
            out[r.run_id] = points_frame(rows)
            if progress:
                progress(1)
        return out


class WandbApiReader:
    """Runs of a W&B project through the public API (online). Curves come from ``scan_history`` (every
    point); ``history()`` returns a sample of ~500 points and is never used."""

    name = "wandb-api"

    def __init__(self, path: str, filters: dict | None = None, where: dict | None = None):
        import wandb

        self.api, self.path, self.where = wandb.Api(), path, where
        tags = [{"tags": {"$in": [f"{k}={v}"[:64] for v in (v if isinstance(v, list) else [v])]}}
                for k, v in (where or {}).items()]  # our runs' W&B tags are ``tag=value``: the server filters
        self.filters = {"$and": [filters, *tags]} if filters and tags else (filters or ({"$and": tags} if tags else {}))

    def runs(self) -> list[RunInfo]:
        out = []
        for run in self.api.runs(self.path, filters=self.filters):
            cfg = {k: v for k, v in run.config.items() if not k.startswith("_")}
            tags = tags_from_config(cfg, run.id) if "algorithm" in cfg else {"kind": "train"}
            if not matches(tags, self.where):
                continue
            out.append(RunInfo(run.id, run.path and "/".join(run.path), tags,
                               f"{run.state}:{run.lastHistoryStep}", {"run": run}))
        return out

    def fetch(self, runs: list[RunInfo], progress=None, want=None) -> dict[str, pd.DataFrame]:
        out = {}
        for r in runs:
            keys = [k for k in r.extra["run"].summary.keys() if not k.startswith("_") and (want is None or want(k))]
            rows = [(k, int(h["_step"]), float(v), float(h.get("_timestamp", 0.0)))
                    for h in r.extra["run"].scan_history(keys=keys or None)
                    for k, v in h.items() if not k.startswith("_") and isinstance(v, (int, float))]
            out[r.run_id] = points_frame(rows)
            if progress:
                progress(1)
        return out


def make_reader(source: str, where: dict | None = None):
    """``mlflow:<uri>[#experiment]``, ``journal:<dir>``, ``wandb:<dir>`` (offline files) or
    ``wandb-api:<entity>/<project>``; ``where`` (tag -> value) narrows the runs at the source."""
    kind, _, rest = source.partition(":")
    if kind == "mlflow":
        uri, _, exp = rest.partition("#")
        return MlflowReader(uri, exp or "s2lpo", where=where)
    if kind == "journal":
        return JournalReader(rest, where=where)
    if kind == "wandb":
        return WandbOfflineReader(rest, where=where)
    if kind == "wandb-api":
        return WandbApiReader(rest, where=where)
    raise ValueError(f"unknown source {source!r}; use mlflow:<uri>[#experiment], journal:<dir>, wandb:<dir> "
                     "or wandb-api:<entity>/<project>")
