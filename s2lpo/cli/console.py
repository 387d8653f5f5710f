"""The entry points' console: progress bars, results printed, and bad input turned into one message and exit
code 2 (only ``experiments/*`` and ``s2lpo.cli`` print or exit; the library returns or raises)."""

from __future__ import annotations

import functools
import sys
import tempfile
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from s2lpo.config.domains import _int
from s2lpo.config.validate import ConfigError, validate, writable_problem
from s2lpo.tracking.where import dashboard_lines


def hydra_dir(runs_dir: str) -> str:
    """The root of Hydra's own output folder (``hydra.run.dir`` in conf/run.yaml and conf/study.yaml):
    ``paths.runs_dir`` where it can be written, else a temporary folder. Hydra makes that folder before the entry
    point runs, so an unwritable ``paths.runs_dir`` was Hydra's traceback; now the run's validation names it, with
    every other problem, and exits 2."""
    if writable_problem("paths.runs_dir", runs_dir) is None:
        return runs_dir
    return str(Path(tempfile.gettempdir()) / "s2lpo-hydra")


# registered by every entry point's import of this module, before @hydra.main composes its config
OmegaConf.register_new_resolver("s2lpo.hydra_dir", hydra_dir, replace=True)


def user_errors() -> tuple[type[Exception], ...]:
    """What the library raises for bad input or a damaged run: each says what is wrong and what to do, so the entry
    points print it and exit 2 (a traceback would bury it). Imported when something is raised: the modules that
    define them import transformers and the trainer (~10 s), which a rejected override need not wait for."""
    from s2lpo.analysis.cells import MixedCellError
    from s2lpo.data.prepare import DataError
    from s2lpo.eval.benchmarks import EvalError
    from s2lpo.models.checkpoint import CheckpointError
    from s2lpo.rollout.explorer_cache import ExplorerCacheError
    from s2lpo.tracking.lifecycle import RunDirError
    from s2lpo.tracking.restore import JournalGapError
    from s2lpo.tracking.run import ManifestError

    return (ConfigError, EvalError, DataError, CheckpointError, ExplorerCacheError, RunDirError, JournalGapError,
            ManifestError, MixedCellError)


def train(cfg: DictConfig, **kw):
    from s2lpo.trainer.dispatch import train as dispatch

    return dispatch(cfg, **kw)


_probe = Console(stderr=True)
# logs and CI are no terminal: give tables and paths room instead of rich's 80-column default
console = _probe if _probe.is_terminal else Console(stderr=True, width=140)


def progress_bar(on: Console | None = None, transient: bool = False) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=on or console, transient=transient)


def lazy_bars(bar: Progress):
    """``show(name, done, total, info="")``: a bar per name, added on its first call (work that is skipped, a
    cached family, draws none)."""
    tasks: dict[str, int] = {}

    def show(name: str, done: int, total: int, info: str = "") -> None:
        if name not in tasks:
            tasks[name] = bar.add_task(name, total=total, info=info)
        bar.update(tasks[name], completed=done, total=total, info=info)

    return show


def prepare_with_progress(cfg: DictConfig) -> None:
    """What a run needs before its first step, each with a progress bar: the toy family (built once; minutes on a
    CPU: its size and an ETA) and the explorer's cached samples (local backend; verl's runner fills its own)."""
    from s2lpo.models.resolve import toy_family
    from s2lpo.trainer.explorer_fill import fill_explorer_cache

    with progress_bar() as bar:
        show = lazy_bars(bar)
        if cfg.learner.family == "toy":
            toy_family(cfg, log=console.print, progress=lambda d, t, what: show("toy family", d, t, what))
        if cfg.trainer.backend == "local":
            fill_explorer_cache(cfg, log=console.print,
                                progress=lambda d, t: show(f"explorer cache {cfg.explorer.name}", d, t, "samples"))


def train_with_progress(cfg: DictConfig, label: str | None = None):
    if cfg.trainer.backend == "verl":  # verl draws its own progress bar
        return train(cfg, log=console.print)
    with progress_bar() as bar:
        task = bar.add_task(label or cfg.algorithm.name, total=cfg.trainer.total_steps, info="")

        def update(step: int, total: int, m: dict) -> None:
            info = f"acc {m.get('train/accuracy', 0):.2f}"
            key = f"eval/{cfg.data.benchmark}/pass@1"
            if key in m:
                info += f"  pass@1 {m[key]:.3f}"
            bar.update(task, completed=step, info=info)

        return train(cfg, progress=update, log=console.print)


def exit_on_config_error(fn):
    """Entry points: a bad configuration or input prints its error list and exits with code 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if not isinstance(e, ConfigError) and not isinstance(e, user_errors()):  # the common one first: cheap
                raise
            console.print(str(e), style="red", markup=False, highlight=False)
            sys.exit(2)

    return wrapper


@exit_on_config_error
def run_training(cfg: DictConfig) -> float | None:
    """Train and return the last pass@1 (for sweepers); a bad config exits with its error list before anything is
    built or drawn (a progress bar sized by a bad ``total_steps`` would raise first)."""
    validate(cfg)
    prepare_with_progress(cfg)
    result = train_with_progress(cfg)
    console.print(f"run {result.run_id}: {result.status} -> {result.run_dir}", soft_wrap=True)
    for line in dashboard_lines(result.run_dir):
        console.print(line, soft_wrap=True, highlight=False, markup=False)
    return result.final_metrics.get(f"eval/{cfg.data.benchmark}/pass@1")


@exit_on_config_error
def fill_explorer_printed(cfg: DictConfig) -> None:
    """experiments/generate_explorer.py: the explorer cache of a run's config, with progress bars."""
    from s2lpo.trainer.explorer_fill import fill_explorer_cache

    validate(cfg)
    prepare_with_progress(cfg)
    if cfg.trainer.backend != "local":
        fill_explorer_cache(cfg, log=console.print)


@exit_on_config_error
def run_study_printed(cfg: DictConfig) -> None:
    """experiments/study.py: the study with one progress bar per run, then its first table and the files."""
    from rich.markdown import Markdown

    from s2lpo.study.run import run_study

    res = run_study(cfg, train=train_with_progress, log=console.print, prepare=prepare_with_progress)
    tables = [p for p in res.written if p.suffix == ".md"]
    if tables:
        console.print(Markdown(tables[0].read_text()))
    console.print("wrote " + ", ".join(str(p.relative_to(res.out.parent)) if res.out.parent in p.parents else str(p)
                                      for p in res.written))
    first = next((d for dirs in res.runs.values() for d in dirs), None)
    for line in dashboard_lines(first, runs_table=True) if first else []:
        console.print(line, soft_wrap=True, highlight=False, markup=False)


@exit_on_config_error
def run_search_printed(cfg: DictConfig, overrides: list[str]) -> None:
    """experiments/search.py: the Optuna search, one progress bar per trial, then the best trial."""
    from omegaconf import OmegaConf

    from s2lpo.study.search import run_search

    study = run_search(cfg, overrides, train=train_with_progress, log=console.print)
    best = study.best_trial
    console.print(f"best {cfg.hparams_search.metric} = {best.value:.4f} with "
                  f"{OmegaConf.to_yaml(OmegaConf.create(best.params))}")


@exit_on_config_error
def family_passk_printed(cfg: DictConfig, n) -> None:
    """experiments/family_passk.py: the family's pass@k table, printed and written; ``n`` (``+n=``) and the config
    are checked before the family is built."""
    from rich.table import Table

    from s2lpo.eval.runner import power_of_two_ks
    from s2lpo.study.family_passk import family_passk

    if not _int(n) or n < 1:
        raise ConfigError([f"n={n!r} must be an integer >= 1 (samples per problem: +n=64 gives pass@k for k = 1, 2, "
                           "4, …, 64)"])
    validate(cfg)
    res = family_passk(cfg, n, log=console.print)
    ks = power_of_two_ks(n)
    table = Table(title=f"pass@k (%) on {res.n_problems} held-out problems, n={n} samples each")
    for col in ("model", "params", *(f"k={k}" for k in ks)):
        table.add_column(col, justify="left" if col == "model" else "right")
    for size, curve in res.curves.items():
        table.add_row(f"toy-{size}", f"{res.params[size] / 1e6:.2f}M", *(f"{100 * curve[k]:.1f}" for k in ks))
    console.print(table)
    console.print(f"wrote {res.markdown} and {res.csv}")
