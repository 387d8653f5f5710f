"""One value per run for a table column: a metric at a step, its change since a step, or when (and at what
cost) a run first reached another row's final mean. Pure functions of the tidy frame."""

from __future__ import annotations

import pandas as pd


def final_values(df: pd.DataFrame, metric: str, at) -> pd.DataFrame:
    """One value per run: the metric at its last step (``at: final``) or at step ``at``."""
    d = df[df["key"] == metric]
    if at == "final":
        d = d.sort_values(["run_id", "step"]).groupby("run_id", observed=True).tail(1)
    else:
        d = d[d["step"] == int(at)]
    return d


def column_values(df: pd.DataFrame, col: dict, at, keys: list[str]) -> pd.DataFrame:
    """One value per run for a column: the metric at ``at`` (the column's own ``at`` first); with ``change_from:
    <step>`` its change since that step; with ``reach: {<tag>: <value>}`` the first step at which the run's
    metric reaches the final mean of that row of its group (``report: <metric>`` gives that metric at that
    step instead, e.g. the FLOPs spent by then; a run that never reaches it is left out of the cell)."""
    v = final_values(df, col["metric"], col.get("at", at))
    if "change_from" in col:
        start = final_values(df, col["metric"], col["change_from"]).set_index("run_id")["value"]
        v = v.assign(value=v["value"].to_numpy() - v["run_id"].map(start).astype(float).to_numpy())
    if "reach" in col:
        ref = v
        for k, val in col["reach"].items():
            ref = ref[ref[k].astype(str) == str(val)]
        group = [k for k in keys if k not in col["reach"]][:1] if len(keys) > len(col["reach"]) else []
        target = ref.groupby(group, observed=True)["value"].mean() if group else ref["value"].mean()
        hist = df[df["key"] == col["metric"]].sort_values(["run_id", "step"])
        rows = []
        for rid, h in hist.groupby("run_id", observed=True):
            t = target.get(h[group[0]].iloc[0]) if group else target
            hit = h[h["value"] >= t - 1e-12] if t is not None and t == t else h.iloc[0:0]
            if len(hit):
                step = int(hit["step"].iloc[0])
                if col.get("report"):
                    r = df[(df["key"] == col["report"]) & (df["run_id"] == rid) & (df["step"] == step)]
                    value = float(r["value"].iloc[0]) if len(r) else float("nan")
                else:
                    value = float(step)
                rows.append(h.iloc[[0]].assign(value=value))
        v = pd.concat(rows) if rows else v.iloc[0:0]
        v = v[v["value"] == v["value"]]
    return v
