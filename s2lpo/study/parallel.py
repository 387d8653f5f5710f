"""A study's work over several worker processes, each with its share of the cores.

For the tiny models of the embedded default a run is bound by per-operation overhead, not by matmul
throughput: a second torch thread gains it little, a second process nearly doubles what two cores do
(``study.jobs``). The work is a list of :class:`Task` — whole training runs (``s2lpo.trainer.dispatch.train``)
and the diversity measurements (``s2lpo.study.diversity``), the short ones last so that they fill the cores the
last runs leave idle. The journals, manifests and tracking replicas are per run, and the sqlite MLflow store is
made for concurrent writers.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from s2lpo.tracking.run import run_id


@dataclass(frozen=True)
class Task:
    """One unit of a study's work: ``fn(*args, threads)`` in a worker with ``threads`` torch threads returns ``(run
    directory or "", status)``; ``fn`` is a module-level function (workers are spawned: it travels by name).
    ``done``: the run directory of a run that already finished (no worker is started for it); ``after``: the
    indices of the tasks that must end first (a run after the task that built its explorer and filled its cache)."""

    name: str
    fn: Callable[..., tuple[str, str]]
    args: tuple
    done: Path | None = None
    after: tuple[int, ...] = ()


def _train(container: dict, threads: int) -> tuple[str, str]:
    from s2lpo.trainer.dispatch import train

    cfg = OmegaConf.create(container)
    if not cfg.trainer.get("threads"):
        cfg.trainer.threads = threads
    res = train(cfg, log=lambda *_: None)
    return str(res.run_dir), res.status


def finished_dir(d: Path) -> Path | None:
    """``d`` if it holds a run that finished, else None (none yet, or damaged: its worker's start says so)."""
    try:
        return d if json.loads((d / "manifest.json").read_text()).get("status") == "finished" else None
    except (OSError, ValueError):
        return None


def finished_run(cfg: DictConfig) -> Path | None:
    """The run directory of a local-backend run that already finished (reused without starting a worker:
    a second study costs seconds), else None."""
    if cfg.trainer.backend != "local":
        return None
    return finished_dir(Path(cfg.paths.runs_dir).expanduser().resolve() / run_id(OmegaConf.to_container(cfg, resolve=True)))


def train_task(name: str, cfg: DictConfig, after: tuple[int, ...] = ()) -> Task:
    return Task(name, _train, (OmegaConf.to_container(cfg, resolve=True),), finished_run(cfg), after)


def _prepare(containers: list[dict], threads: int) -> tuple[str, str]:
    from s2lpo.trainer.explorer_fill import fill_explorer_cache

    made = sum(fill_explorer_cache(OmegaConf.create(c), log=lambda *_: None) for c in containers)
    return "", f"built, {made} explorer samples cached"


def prepare_task(name: str, cfgs: list[DictConfig]) -> Task:
    """Build the family sizes ``cfgs`` need and fill their explorer caches (in their order: the caches' contents do
    not depend on the schedule) in a worker."""
    return Task(name, _prepare, ([OmegaConf.to_container(c, resolve=True) for c in cfgs],))


def threads_per_job(jobs: int) -> int:
    return max(1, (os.cpu_count() or 1) // jobs)


def _call(fn: Callable[..., tuple[str, str]], args: tuple, threads: int) -> tuple[str, str]:
    torch.set_num_threads(threads)
    return fn(*args, threads)


def run_tasks(tasks: list[Task], jobs: int, log: Callable[[str], None] = print) -> list[Path | None]:
    """Run ``tasks`` on ``jobs`` processes, in their order as their ``after`` allow; their run directories (None for
    a task that makes none), in the same order. Finished runs are reused without a worker; the first task that
    raises stops the rest (not yet started ones are never started) and its error is raised here."""
    threads = threads_per_job(jobs)
    out: list[Path | None] = [t.done for t in tasks]
    ended = {i for i, d in enumerate(out) if d is not None}
    pending = [i for i in range(len(tasks)) if i not in ended]
    if not pending:
        return out
    with ProcessPoolExecutor(min(jobs, len(pending)), mp_context=mp.get_context("spawn")) as pool:
        running: dict = {}
        while pending or running:
            for i in [i for i in pending if all(a in ended for a in tasks[i].after)][: jobs - len(running)]:
                running[pool.submit(_call, tasks[i].fn, tasks[i].args, threads)] = i
                pending.remove(i)
            if not running:
                raise ValueError(f"tasks {[tasks[i].name for i in pending]} wait for tasks that never run")
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for f in finished:
                i = running.pop(f)
                if f.exception() is not None:
                    raise f.exception()
                run_dir, status = f.result()
                out[i] = Path(run_dir) if run_dir else None
                ended.add(i)
                log(f"{tasks[i].name}: {status} ({len(ended)}/{len(tasks)}, {jobs} workers x {threads} thread(s))")
    return out


def train_in_workers(items: list[tuple[str, DictConfig]], jobs: int,
                     log: Callable[[str], None] = print) -> list[Path]:
    """Train ``(name, config)`` items on ``jobs`` processes (:func:`run_tasks`); their run directories, in order."""
    return [d for d in run_tasks([train_task(name, c) for name, c in items], jobs, log) if d is not None]
