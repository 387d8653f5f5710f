"""Which runs a table cell or a figure series may aggregate: the seeds of one configuration. Runs carry a
``config`` tag (their semantic config without the seed, ``s2lpo.tracking.run.config_id``); a cell whose
runs have different configs is refused with the runs and the keys that differ (or, with ``mixed: split``
in the spec, split into one cell per config). A run without the tag (logged before it existed) is a
configuration of its own."""

from __future__ import annotations

import pandas as pd

NOT_CONFIG = {"run_id", "key", "step", "value", "t", "seed", "status", "evaluated_run", "config"}


class MixedCellError(ValueError):
    """A cell would average runs of different configurations (the message names them and the fix)."""


def run_config(df: pd.DataFrame) -> pd.Series:
    """Each row's configuration: its ``config`` tag, or ``?<run id>`` when the run has none."""
    cfg = df["config"].astype(str) if "config" in df else pd.Series("", index=df.index)
    return cfg.where(cfg != "", "?" + df["run_id"].astype(str))


def settle(df: pd.DataFrame, keys: list[str], spec: dict, params: dict[str, dict] | None = None
           ) -> tuple[pd.DataFrame, list[str], set[tuple]]:
    """``(df, keys, mixed cells)``: unchanged when every cell holds one configuration; with ``mixed: split``
    the keys gain ``config`` and the mixed cells are returned (their labels name the config); else
    :class:`MixedCellError`."""
    if df.empty:
        return df, keys, set()
    df = df.assign(config=run_config(df))
    first = df.drop_duplicates("run_id")  # one row per run: its tags
    runs = first[["run_id", *keys, "config"]].astype(str)
    counts = runs.groupby(keys, observed=True)["config"].nunique()
    mixed = {k if isinstance(k, tuple) else (k,) for k, n in counts.items() if n > 1}
    if not mixed:
        return df, keys, set()
    if spec.get("mixed", "refuse") == "split":
        return df, [*keys, "config"], mixed
    where = spec.get("_file", spec["name"])
    tags = first.set_index(first["run_id"].astype(str))
    tags = tags[[c for c in tags.columns if c not in NOT_CONFIG]].astype(str)
    params = {r: (params or {}).get(r) or tags.loc[r].to_dict() for r in runs["run_id"]}
    msgs = [_describe(runs, keys, cell, params) for cell in sorted(mixed)[:3]]
    more = f"\n  … and {len(mixed) - 3} more cell(s)" if len(mixed) > 3 else ""
    raise MixedCellError(f"{spec['kind']} {spec['name']}: {len(mixed)} cell(s) would average runs of different "
                         f"configs as if they were seeds:\n" + "\n".join(msgs) + more +
                         f"\n  narrow the runs (--sweep NAME or --filter TAG=VALUE, e.g. --filter config=<id>) or set "
                         f"`mixed: split` in {where} to show one cell per config")


def _describe(runs: pd.DataFrame, keys: list[str], cell: tuple, params: dict[str, dict]) -> str:
    mine = runs[(runs[keys] == pd.Series(cell, index=keys)).all(axis=1)]
    by_cfg = {c: sorted(g["run_id"]) for c, g in mine.groupby("config")}
    lines = [f"  cell {', '.join(f'{k}={v}' for k, v in zip(keys, cell))}:"]
    for c, ids in by_cfg.items():
        name = "no config tag (logged before runs were tagged)" if c.startswith("?") else f"config {c}"
        lines.append(f"    {name}: {', '.join(ids[:4])}{' …' if len(ids) > 4 else ''}")
    reps = [params.get(ids[0], {}) for ids in by_cfg.values()]
    differ = sorted(k for k in set().union(*reps) if len({str(r.get(k, '—')) for r in reps}) > 1)
    if differ:
        lines.append("    they differ in " + "; ".join(
            f"{k}: {' vs '.join(str(r.get(k, '—')) for r in reps)}" for k in differ[:8]) +
            (f"; and {len(differ) - 8} more" if len(differ) > 8 else ""))
    return "\n".join(lines)
