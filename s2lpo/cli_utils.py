"""Shared glue of the thin entry points: progress bars, error reporting."""

from __future__ import annotations

import functools
import sys

from omegaconf import DictConfig
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from s2lpo.config.validate import ConfigError

_probe = Console(stderr=True)
# logs and CI are no terminal: give tables and paths room instead of rich's 80-column default
console = _probe if _probe.is_terminal else Console(stderr=True, width=140)


def progress_bar() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=console, transient=False)


def train_with_progress(cfg: DictConfig, label: str | None = None):
    from s2lpo.trainer.dispatch import train

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
    from s2lpo.data.prepare import DataError
    from s2lpo.eval.benchmarks import EvalError

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ConfigError, EvalError, DataError) as e:
            console.print(f"[red]{e}[/red]")
            sys.exit(2)

    return wrapper


@exit_on_config_error
def run_training(cfg: DictConfig) -> float | None:
    """Train and return the last pass@1 (for sweepers); a bad config exits with its error list before anything is
    built or drawn (a progress bar sized by a bad ``total_steps`` would raise first)."""
    from s2lpo.config.validate import validate

    validate(cfg)
    result = train_with_progress(cfg)
    console.print(f"run {result.run_id}: {result.status} -> {result.run_dir}")
    return result.final_metrics.get(f"eval/{cfg.data.benchmark}/pass@1")
