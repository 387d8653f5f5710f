"""Regenerate every table and figure of a spec directory from logged runs.

    python analysis/regenerate.py --source mlflow:http://mlflow.lab:5000 --specs analysis/specs/paper --out results/paper
    python analysis/regenerate.py --source journal:runs --source wandb:runs --sweep toy
    python analysis/regenerate.py --source mlflow:sqlite:///mlruns.db#s2lpo --specs analysis/specs/toy

Sources: ``mlflow:<tracking uri>[#experiment]``, ``journal:<dir of run dirs>``, ``wandb:<dir>`` (offline
files), ``wandb-api:<entity>/<project>``. Fetched runs are cached under ``--cache``; a second call fetches
only new or changed runs and works without network from the cache.
"""

from __future__ import annotations

import argparse
import sys

from s2lpo.analysis.regenerate import SpecError, regenerate
from s2lpo.cli.console import console, lazy_bars, progress_bar


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", action="append", help="where runs were logged (repeatable; default journal:runs)")
    p.add_argument("--specs", default="analysis/specs/toy", help="a spec directory or one spec file")
    p.add_argument("--out", default="results", help="output directory")
    p.add_argument("--cache", default=".cache/analysis", help="run cache directory")
    p.add_argument("--sweep", help="only runs of this sweep")
    p.add_argument("--filter", action="append", default=[], metavar="TAG=VALUE", help="only runs with this tag value")
    args = p.parse_args(argv)
    flt = dict(f.split("=", 1) for f in args.filter)
    if args.sweep:
        flt["sweep"] = args.sweep
    with progress_bar() as bar:
        show = lazy_bars(bar)

        def progress(source: str, done: int, total: int) -> None:
            show(f"fetching {source}", done, total)

        try:
            rep = regenerate(args.source or ["journal:runs"], args.specs, args.out, args.cache, flt or None, progress,
                             warn=console.print)
        except (SpecError, LookupError, ValueError) as e:
            console.print(f"error: {e}", style="red", markup=False)  # a spec's own text may hold brackets
            return 2
    console.print(f"{rep.runs} run(s): {rep.fetched} fetched, {rep.cached} from the cache"
                  + (" (source unreachable: cache only)" if rep.offline else ""))
    for path in rep.written:
        console.print(f"wrote {path}", soft_wrap=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
