"""The ``s2lpo`` command: ``s2lpo sync <run dir | sweep dir>``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _sync(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from s2lpo.tracking.sync import find_run_dirs, sync_run

    console = Console(width=140 if not sys.stdout.isatty() else None)
    runs = find_run_dirs(args.path)
    if not runs:
        console.print(f"[red]no run directory (manifest.json + metrics.jsonl) under {args.path}[/red]")
        return 2
    table = Table("run", "status", "sent", "errors")
    failed = 0
    for run_dir in runs:
        r = sync_run(run_dir, args.sink or None, args.mlflow_uri, args.wandb_mode, warn=lambda m: console.print(m))
        failed += bool(r.errors)
        table.add_row(r.run_id, r.status, ", ".join(f"{k}: {v}" for k, v in r.sent.items()) or "-",
                      "; ".join(f"{k}: {v}" for k, v in r.errors.items()) or "")
    console.print(table)
    console.print(f"synced {len(runs) - failed} of {len(runs)} run(s)")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="s2lpo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("sync", help="replay run journals to MLflow and W&B (idempotent)")
    p.add_argument("path", type=Path, help="a run directory, or any directory holding run directories")
    p.add_argument("--sink", action="append", choices=["mlflow", "wandb"], help="only this replica (repeatable)")
    p.add_argument("--mlflow-uri", help="send to this tracking URI instead of the run's configured one")
    p.add_argument("--wandb-mode", choices=["online", "offline"], help="override the run's W&B mode")
    p.set_defaults(func=_sync)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
