"""A study's runs over several worker processes, each with its share of the cores.

For the tiny models of the embedded default a run is bound by per-operation overhead, not by matmul
throughput: a second torch thread gains it little, a second process nearly doubles what two cores do
(``study.jobs``). Each worker trains whole runs (``s2lpo.trainer.dispatch.train``); the journals, manifests
and the tracking replicas are per run, and the sqlite MLflow store is made for concurrent writers.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from s2lpo.tracking.run import run_id


def _train(container: dict, threads: int) -> tuple[str, str]:
    from s2lpo.trainer.dispatch import train

    cfg = OmegaConf.create(container)
    if not cfg.trainer.get("threads"):
        cfg.trainer.threads = threads
    res = train(cfg, log=lambda *_: None)
    return str(res.run_dir), res.status


def finished_run(cfg: DictConfig) -> Path | None:
    """The run directory of a local-backend run that already finished (reused without starting a worker:
    a second study costs seconds), else None."""
    if cfg.trainer.backend != "local":
        return None
    d = Path(cfg.paths.runs_dir).expanduser().resolve() / run_id(OmegaConf.to_container(cfg, resolve=True))
    try:
        return d if json.loads((d / "manifest.json").read_text()).get("status") == "finished" else None
    except (OSError, ValueError):  # none yet, or damaged: the worker's start says so
        return None


def threads_per_job(jobs: int) -> int:
    return max(1, (os.cpu_count() or 1) // jobs)


def train_in_workers(items: list[tuple[str, DictConfig]], jobs: int,
                     log: Callable[[str], None] = print) -> list[Path]:
    """Train ``(name, config)`` items on ``jobs`` processes; their run directories, in the items' order. Runs that
    already finished are reused without a worker; the first run that raises stops the rest (not yet started ones
    are cancelled) and its error is raised here."""
    threads = threads_per_job(jobs)
    out: list[Path | None] = [None] * len(items)
    for i, (_, c) in enumerate(items):
        out[i] = finished_run(c)
    todo = [i for i, d in enumerate(out) if d is None]
    if not todo:
        return [p for p in out if p is not None]
    with ProcessPoolExecutor(min(jobs, len(todo)), mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(_train, OmegaConf.to_container(items[i][1], resolve=True), threads): i for i in todo}
        for f in as_completed(futures):  # as each run ends
            if f.exception() is not None:
                for other in futures:
                    other.cancel()
                raise f.exception()
            run_dir, status = f.result()
            i = futures[f]
            out[i] = Path(run_dir)
            log(f"{items[i][0]}: {status} ({sum(o is not None for o in out)}/{len(items)}, {jobs} workers "
                f"x {threads} thread(s))")
    return [p for p in out if p is not None]
