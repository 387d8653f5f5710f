"""Prepare local copies of the public datasets in verl's parquet schema (nothing is downloaded):

    python experiments/prepare_data.py dapo_math ~/data/dapo-math-17k.parquet   [--out data/processed]
    python experiments/prepare_data.py dapo_math ~/data/dapo-math-17k.parquet --solutions ~/data/solutions.jsonl
    python experiments/prepare_data.py aime24 ~/data/aime_2024/train.parquet
    python experiments/prepare_data.py aime25 ~/data/aime2025.jsonl
    python experiments/prepare_data.py math500 ~/data/MATH-500/test.jsonl
    python experiments/prepare_data.py csqa ~/data/commonsense_qa/validation.parquet

Writes <out>/<dataset>/<split>.parquet; the input layouts are listed in s2lpo/data/prepare.py and the README.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from s2lpo.cli.console import console
from s2lpo.data.prepare import DATASETS, DataError, prepare


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", choices=sorted(d for d in DATASETS if d != "toy"))
    p.add_argument("input", type=Path, help="the local file (.parquet, .jsonl or .json)")
    p.add_argument("--out", type=Path, default=Path("data/processed"))
    p.add_argument("--split", help="split name written to extra_info and the file name (default per dataset)")
    p.add_argument("--solutions", type=Path, help="join reference solutions (G²RPO-A's guidance) by question text "
                   "from this file (question/problem + solution columns); rows without one are dropped")
    args = p.parse_args(argv)
    try:
        path, read, written = prepare(args.dataset, args.input, args.out, args.split, args.solutions)
    except DataError as e:
        console.print(f"error: {e}", style="red", markup=False)  # the file's own text may hold brackets
        return 2
    console.print(f"{args.dataset}: {read} rows read, {written} written -> {path}"
                  + (f" ({read - written} {'duplicate or unsolved' if args.solutions else 'duplicate'} questions "
                     "dropped)" if read != written else ""), soft_wrap=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
