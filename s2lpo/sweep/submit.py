"""Submit a sweep to SLURM without waiting for it, and resubmit only what is not finished.

``submit_sweep`` composes and validates every run first (a bad run stops the submission before any job
is queued), asks ``sweep_status`` what each run is doing, then queues: one explorer-cache job per group
of runs sharing an explorer and its sampling (training jobs wait on it with ``afterok``), and the
training runs as job arrays (one ``sbatch`` per group of equal requests). It returns as soon as
``sbatch`` has answered (the stock Hydra submitit launcher waits for every job: hydra#2479). The sweep
manifest ``<root>/sweeps/<name>/sweep.json`` records every run's overrides, run id and job ids.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from s2lpo.config.validate import ConfigError, file_problems, validate
from s2lpo.sweep.cost import RunCost, run_cost
from s2lpo.sweep.grid import Sweep, SweepError
from s2lpo.sweep.jobs import ExplorerCacheJob, TrainJob, compose, compose_many
from s2lpo.sweep.manifest import SweepManifest, sweep_dir
from s2lpo.sweep.status import slurm_states, sweep_status
from s2lpo.tracking.mlflow_replica import announce_sweep
from s2lpo.tracking.run import run_id
from s2lpo.verl_ext.config import run_container

RESUBMIT = {"failed", "preempted", "not submitted"}


@dataclass
class PlannedRun:
    overrides: list[str]
    run_id: str
    run_dir: Path
    method: str
    seed: int
    total_steps: int
    request: dict  # the training job's SLURM request
    logger: dict = field(default_factory=dict)  # the run's logger config
    cache_key: str | None = None  # explorer-cache group, None without an explorer
    explorer_request: dict | None = None
    config: dict = field(default_factory=dict)  # the resolved run config
    warnings: list[str] = field(default_factory=list)  # files missing now (a dry run plans anyway)

    @property
    def cost(self) -> RunCost:
        return run_cost(self.config)

    def verl(self) -> dict | None:
        """The mapped verl config of a verl run, resolved (what verl's trainer will read)."""
        if self.config["trainer"]["backend"] != "verl":
            return None
        from omegaconf import OmegaConf

        from s2lpo.verl_ext.config import to_verl

        cfg = OmegaConf.create(self.config)
        return OmegaConf.to_container(to_verl(cfg, self.run_dir, self.run_id,
                                              learner_params=int(self.config["learner"].get("params") or 0),
                                              explorer_params=int(self.config["explorer"].get("params") or 0)),
                                      resolve=True)


@dataclass
class SubmitReport:
    sweep: str
    manifest: Path
    submitted: list[str] = field(default_factory=list)  # run ids queued now
    skipped: dict[str, str] = field(default_factory=dict)  # run id -> state that kept it
    cache_jobs: list[str] = field(default_factory=list)
    planned: list[PlannedRun] = field(default_factory=list)  # every run of the grid, as planned
    seconds: float = 0.0


def _request(src: dict, launcher: dict) -> dict:
    return {"timeout_min": int(src["timeout_min"]), "gpus_per_node": int(src["gpus_per_node"]),
            "nodes": int(src.get("nodes") or 1),
            "cpus_per_task": int(src["cpus_per_task"]), "mem_gb": int(src["mem_gb"]),
            **{k: launcher[k] for k in ("partition", "account", "qos", "max_num_timeout", "signal_delay_s",
                                        "array_parallelism")},
            "setup": list(launcher["setup"]), "additional_parameters": dict(launcher["additional_parameters"])}


def _runs(ix: list[int], sweep: Sweep) -> str:
    if len(ix) == 1:
        return f"run {ix[0]} ({' '.join(sweep.runs[ix[0]])})"
    return f"{len(ix)} runs ({', '.join(map(str, ix[:8]))}{', …' if len(ix) > 8 else ''})"


def plan_sweep(sweep: Sweep, root: Path, dry_run: bool = False,
               progress: Callable[[str, int, int], None] | None = None) -> list[PlannedRun]:
    """Compose and validate every run of the sweep; one error lists every bad run. In a dry run, models and
    data files not on disk are warnings on the run (``PlannedRun.warnings``), not errors."""
    root = Path(root).resolve()
    planned, problems = [], {}  # problem -> indices of the runs that have it
    all_overrides = []
    for ov in sweep.runs:
        overrides = [f"paths.root_dir={root}", *ov]
        if not any(o.startswith("launcher=") for o in overrides):
            overrides.append("launcher=slurm")
        all_overrides.append(overrides)
    try:
        cfgs = compose_many(all_overrides)
    except Exception:  # noqa: BLE001 - compose run by run below, to name the bad one
        cfgs = [None] * len(all_overrides)
    for i, (overrides, cfg) in enumerate(zip(all_overrides, cfgs)):
        if progress:
            progress("checking runs", i, len(all_overrides))
        try:
            cfg = cfg if cfg is not None else compose(overrides)
            # jobs run on compute nodes: no GPU check on this one
            validate(cfg, this_machine=False, files=not dry_run)
        except ConfigError as e:
            for p in e.problems:
                problems.setdefault(p, []).append(i)
            continue
        except Exception as e:  # noqa: BLE001 - Hydra's own errors name the override: one line for all runs
            problems.setdefault(" ".join(str(e).split()), []).append(i)
            continue
        c = run_container(cfg)  # trainer.verl resolved as its own root (its interpolations are absolute)
        if c["launcher"]["name"] != "slurm":
            problems.setdefault(f"launcher={c['launcher']['name']}; sweeps go through SLURM: use launcher=slurm",
                                []).append(i)
            continue
        rid = run_id(c)
        a = c["algorithm"]
        run = PlannedRun(overrides, rid, Path(c["paths"]["runs_dir"]).resolve() / rid, a["name"], int(c["seed"]),
                         int(c["trainer"]["total_steps"]), _request(c["launcher"], c["launcher"]), c["logger"],
                         config=c, warnings=file_problems(cfg) if dry_run else [])
        if a["t_mix"]:
            key = json.dumps([c["explorer"]["name"], c["family"], c["data"], c["explorer"]["sampling"],
                              c["paths"]["explorer_cache_dir"]], sort_keys=True, default=str)
            run.cache_key = hashlib.sha256(key.encode()).hexdigest()[:12]
            run.explorer_request = _request(c["launcher"]["explorer_job"], c["launcher"])
        planned.append(run)
    if problems:
        raise SweepError(f"sweep {sweep.name}: nothing submitted; fix these runs:\n" +
                         "\n".join(f"  - {_runs(ix, sweep)}: {p}" for p, ix in problems.items()))
    return planned


def _executor(folder: Path, req: dict, name: str, dependency: list[str]):
    import submitit

    ex = submitit.SlurmExecutor(folder=str(folder), max_num_timeout=int(req["max_num_timeout"]))
    extra = dict(req["additional_parameters"])
    if dependency:
        extra["dependency"] = "afterok:" + ":".join(dependency)
    params = {"time": req["timeout_min"], "cpus_per_task": req["cpus_per_task"], "mem": f"{req['mem_gb']}GB",
              "job_name": name, "signal_delay_s": int(req["signal_delay_s"]), "setup": req["setup"],
              "array_parallelism": int(req["array_parallelism"]), "additional_parameters": extra}
    if req["gpus_per_node"]:
        params["gpus_per_node"] = req["gpus_per_node"]
    if req.get("nodes", 1) > 1:  # one task per node: the job starts a Ray cluster over them (verl backend)
        params.update(nodes=req["nodes"], ntasks_per_node=1)
    for k in ("partition", "account", "qos"):
        if req[k]:
            params[k] = req[k]
    ex.update_parameters(**params)
    return ex


def submit_sweep(sweep: Sweep, root: Path, dry_run: bool = False,
                 progress: Callable[[str, int, int], None] | None = None) -> SubmitReport:
    """Plan (compose and check every run), then queue what is not finished, queued or running;
    ``progress(what, done, total)`` while checking runs and while queuing jobs."""
    t0 = time.perf_counter()
    root = Path(root).resolve()
    planned = plan_sweep(sweep, root, dry_run, progress)
    if progress:
        progress("checking runs", len(sweep.runs), len(sweep.runs))
    manifest = SweepManifest(root, sweep.name)
    report = SubmitReport(sweep.name, manifest.path, planned=planned)
    for run in planned:  # record the plan first: status knows every run even before its first job
        entry = manifest.data["runs"].setdefault(run.run_id, {"jobs": []})
        entry.update(overrides=run.overrides, run_dir=str(run.run_dir), method=run.method, seed=run.seed,
                     total_steps=run.total_steps, cache_key=run.cache_key)
    if not dry_run:
        announce_sweep([r.logger for r in planned], sweep.name, len(planned))
    states = {s.run_id: s.state for s in sweep_status(root, sweep.name, manifest=manifest)}
    todo = [r for r in planned if states.get(r.run_id, "not submitted") in RESUBMIT]
    report.skipped = {r.run_id: states[r.run_id] for r in planned if r not in todo}
    folder = sweep_dir(root, sweep.name) / "submitit"
    # explorer-cache jobs: reuse a queued or running one, else submit one per group that needs it
    groups: dict[str, list[PlannedRun]] = {}
    for r in todo:
        if r.cache_key:
            groups.setdefault(r.cache_key, []).append(r)
    cache_ids = [j for jobs in manifest.data["cache_jobs"].values() for j in jobs[-1:]]
    live = {j for j, s in slurm_states(cache_ids).items() if s in ("PENDING", "RUNNING", "REQUEUED")}
    dep: dict[str, str] = {}
    for key, runs in groups.items():
        last = (manifest.data["cache_jobs"].get(key) or [None])[-1]
        if last in live:
            dep[key] = last
        elif dry_run:
            report.cache_jobs.append(f"(dry run) {key}")
        else:
            ex = _executor(folder, runs[0].explorer_request, f"s2lpo-{sweep.name}-explorer", [])
            job = ex.submit(ExplorerCacheJob(), [r.overrides for r in runs])
            dep[key] = job.job_id
            manifest.data["cache_jobs"].setdefault(key, []).append(job.job_id)
            report.cache_jobs.append(job.job_id)
    # training jobs: one array per (request, dependency)
    batches: dict[str, list[PlannedRun]] = {}
    for r in todo:
        batches.setdefault(json.dumps([r.request, dep.get(r.cache_key or "")], sort_keys=True), []).append(r)
    for b, runs in enumerate(batches.values()):
        if progress and not dry_run:
            progress("queuing job arrays", b, len(batches))
        if dry_run:
            report.submitted += [r.run_id for r in runs]
            continue
        d = dep.get(runs[0].cache_key or "")
        ex = _executor(folder, runs[0].request, f"s2lpo-{sweep.name}", [d] if d else [])
        with ex.batch():
            jobs = [ex.submit(TrainJob(), r.overrides) for r in runs]
        for r, job in zip(runs, jobs):
            manifest.data["runs"][r.run_id]["jobs"].append(job.job_id)
            report.submitted.append(r.run_id)
    if progress and not dry_run:
        progress("queuing job arrays", len(batches), len(batches))
    if not dry_run:
        manifest.data["submissions"].append({"at": time.time(), "runs": len(report.submitted),
                                             "cache_jobs": len(report.cache_jobs)})
        manifest.save()
    report.seconds = time.perf_counter() - t0
    return report
