"""The s2lpo command.

    s2lpo sync <run dir | any dir>                 replay journals to MLflow and W&B
    s2lpo sweep submit sweeps/<name>.yaml [k=v…]   queue a grid on SLURM (returns once queued)
    s2lpo sweep status <name | sweeps/<name>.yaml> per-run state from sacct and the run manifests
    s2lpo cluster up | down | status               a local single-node SLURM cluster (tests, trying out)
    s2lpo build-kernel                             build the compiled decode step and training ops (make setup)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _sync(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from s2lpo.tracking.run import ManifestError, find_run_dirs
    from s2lpo.tracking.sync import sync_run

    console = Console(width=140 if not sys.stdout.isatty() else None)
    runs = find_run_dirs(args.path)
    if not runs:
        console.print(f"[red]no run directory (manifest.json + metrics.jsonl) under {args.path}[/red]")
        return 2
    table = Table("run", "status", "sent", "errors")
    failed = 0
    for run_dir in runs:
        try:
            r = sync_run(run_dir, args.sink or None, args.mlflow_uri, args.wandb_mode, warn=lambda m: console.print(m))
        except ManifestError as e:
            failed += 1
            table.add_row(run_dir.name, "damaged", "-", str(e))
            continue
        failed += bool(r.errors)
        table.add_row(r.run_id, r.status, ", ".join(f"{k}: {v}" for k, v in r.sent.items()) or "-",
                      "; ".join(f"{k}: {v}" for k, v in r.errors.items()) or "")
    console.print(table)
    console.print(f"synced {len(runs) - failed} of {len(runs)} run(s)")
    return 1 if failed else 0


def _root(args: argparse.Namespace) -> Path:
    return Path(args.root or os.environ.get("S2LPO_ROOT") or ".").resolve()


def _sweep_submit(args: argparse.Namespace) -> int:
    from s2lpo.cli.console import lazy_bars, progress_bar
    from s2lpo.sweep.grid import SweepError, load_sweep
    from s2lpo.sweep.submit import submit_sweep

    console = _console(stderr=args.json)  # --json: stdout carries the JSON lines only
    if args.json and not args.dry_run:
        console.print("[red]--json lists a plan: use it with --dry-run[/red]")
        return 2
    try:
        sweep = load_sweep(args.file, args.overrides)
        with progress_bar(console, transient=True) as bar:  # gone once the summary (or the error) prints
            rep = submit_sweep(sweep, _root(args), dry_run=args.dry_run, progress=lazy_bars(bar))
    except SweepError as e:
        console.print(str(e), style="red", markup=False)  # the file's own text may hold brackets
        return 2
    if args.json:
        from s2lpo.cli.plan_view import plan_json_lines

        for line in plan_json_lines(rep.planned):
            print(line)
        return 0
    if args.dry_run:
        from s2lpo.cli.plan_view import print_plan

        print_plan(console, rep.planned)
    verb = "would submit" if args.dry_run else "submitted"
    console.print(f"sweep {rep.sweep}: {verb} {len(rep.submitted)} run(s) and {len(rep.cache_jobs)} explorer-cache "
                  f"job(s) in {rep.seconds:.2f}s; {len(rep.skipped)} skipped ({_counts(rep.skipped.values())})"
                  + ("; nothing was written" if args.dry_run else f"; manifest {rep.manifest}"))
    return 0


def _counts(states) -> str:
    from collections import Counter

    return ", ".join(f"{n} {s}" for s, n in sorted(Counter(states).items())) or "none"


def _sweep_status(args: argparse.Namespace) -> int:
    from rich.table import Table

    from s2lpo.sweep.manifest import sweep_dir
    from s2lpo.sweep.status import sweep_status

    name = Path(args.sweep).stem if args.sweep.endswith((".yaml", ".yml")) else args.sweep
    console = _console()
    if not (sweep_dir(_root(args), name) / "sweep.json").exists():
        known = sorted(p.parent.name for p in (_root(args) / "sweeps").glob("*/sweep.json"))
        console.print(f"no sweep named {name!r} was submitted under {_root(args) / 'sweeps'}; "
                      f"{'known: ' + ', '.join(known) if known else 'none was'} (--root sets where to look)",
                      style="red", markup=False)
        return 2
    try:
        rows = sweep_status(_root(args), name)
    except (FileNotFoundError, RuntimeError) as e:
        console.print(str(e), style="red", markup=False)
        return 2
    if args.json:
        import dataclasses
        import json

        print(json.dumps([dataclasses.asdict(r) for r in rows], indent=1))
        return 0
    table = Table("run", "method", "seed", "state", "progress", "job", "slurm", "restarts", "error",
                  title=f"sweep {name}")
    for r in rows:
        prog = f"{r.step}/{r.total_steps}" if r.step is not None else "-"
        table.add_row(r.run_id, r.method, str(r.seed), r.state, prog, r.job_id or "-", r.slurm_state or "-",
                      str(r.restarts), r.error[:120])
    console.print(table)
    console.print(_counts(r.state for r in rows))
    return 0


def _cluster(args: argparse.Namespace) -> int:
    import time

    from s2lpo.sweep.cluster import DEFAULT_ROOT, ClusterError, LocalCluster

    c = LocalCluster(args.dir or DEFAULT_ROOT, args.cpus)
    try:
        if args.action == "up":
            t0 = time.time()
            c.up()
            print(f"cluster up in {time.time() - t0:.1f}s; use it with:\nexport SLURM_CONF={c.conf}")
        elif args.action == "down":
            c.down()
            print("cluster stopped")
        else:
            for name, pid in c.status().items():
                print(f"{name:10s} {pid or '-'}")
    except ClusterError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def _build_kernel(args: argparse.Namespace) -> int:
    import time

    from s2lpo.rollout.kernel import build

    t0 = time.time()
    b = build()
    if b.module is None:
        print(f"the compiled kernels could not be built; sampling and training will take the Python operations "
              f"(the same results, slower).\n{b.error}", file=sys.stderr)
        return 1
    print(f"compiled kernels (decode step, training ops) ready in {time.time() - t0:.1f}s: {b.directory}")
    return 0


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(width=160 if not sys.stdout.isatty() else None, stderr=stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="s2lpo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("sync", help="replay run journals to MLflow and W&B (idempotent)")
    p.add_argument("path", type=Path, help="a run directory, or any directory holding run directories")
    p.add_argument("--sink", action="append", choices=["mlflow", "wandb"], help="only this replica (repeatable)")
    p.add_argument("--mlflow-uri", help="send to this tracking URI instead of the run's configured one")
    p.add_argument("--wandb-mode", choices=["online", "offline"], help="override the run's W&B mode")
    p.set_defaults(func=_sync)

    sw = sub.add_parser("sweep", help="SLURM sweeps").add_subparsers(dest="sweep_command", required=True)
    p = sw.add_parser("submit", help="queue a sweep grid (only runs not finished, queued or running)")
    p.add_argument("file", type=Path, help="sweeps/<name>.yaml")
    p.add_argument("overrides", nargs="*", help="Hydra overrides for every run, e.g. trainer.total_steps=100")
    p.add_argument("--root", help="project root for runs/ and sweeps/ (default: $S2LPO_ROOT or .)")
    p.add_argument("--dry-run", action="store_true",
                   help="plan every run (settings, explorer-cache jobs, cost) and submit nothing; missing model and "
                        "data files are warnings here, errors in a submit")
    p.add_argument("--json", action="store_true", help="with --dry-run: one JSON object per run on stdout "
                   "(run_id, overrides, config, verl, cost, warnings), nothing else")
    p.set_defaults(func=_sweep_submit)
    p = sw.add_parser("status", help="per-run state from SLURM accounting and the run manifests")
    p.add_argument("sweep", help="sweep name or its sweeps/<name>.yaml")
    p.add_argument("--root", help="project root (default: $S2LPO_ROOT or .)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_sweep_status)

    p = sub.add_parser("cluster", help="a local single-node SLURM cluster with accounting")
    p.add_argument("action", choices=["up", "down", "status"])
    p.add_argument("--dir", type=Path, help="where the cluster lives (default: $S2LPO_SLURM_DIR or /tmp/s2lpo-slurm)")
    p.add_argument("--cpus", type=int, default=8, help="CPUs the node announces (may exceed the machine's)")
    p.set_defaults(func=_cluster)

    p = sub.add_parser("build-kernel", help="build the compiled decode step and training ops for this machine's CPU "
                       "($TORCH_EXTENSIONS_DIR, default ~/.cache/torch_extensions)")
    p.set_defaults(func=_build_kernel)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
