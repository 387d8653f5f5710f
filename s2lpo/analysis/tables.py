"""Table specs → Markdown, LaTeX (booktabs) and CSV, from the tidy DataFrame.

A spec (YAML in ``analysis/specs/``)::

    kind: table
    name: table1_math
    title: Pass@1 (%) on AIME 24 and AIME 25
    filter: {kind: train, sweep: paper}            # tag -> value or list of values
    group: learner                                 # a section per value (optional)
    rows: [method, explorer]                       # a row per distinct value set (seeds aggregated)
    row_label: "{method} · {explorer}"             # optional
    labels: {grpo: GRPO, s2lpo: S2L-PO, none: ""}  # display names of tag values (optional)
    columns: [{label: AIME 24, metric: eval/aime24/pass@1}, ...]   # each may set scale, digits, bold, delta,
                                                   # at, change_from: 0, reach: {method: grpo}, report: <metric>
    at: final                                      # each run's last point of the metric, or a step number
    scale: 100
    digits: 1
    delta_vs: {method: grpo}                       # Δ against that row of the same group
    bold: max                                      # best per column beyond the noise (max | min | none)
    mixed: refuse                                  # a cell mixing configs: refuse (default) | split
    reference: {label: paper, rows: [{learner: …, method: …, explorer: …, values: [15.0, 12.1]}]}

A cell aggregates the seeds of one configuration only (``s2lpo.analysis.cells``): the mean and its 95 %
bootstrap interval over seeds, ``mean [low, high]`` (the mean alone for one seed). Bold marks the best of
a column only when its interval lies above every other's (never with one seed). The caption says all this
and the problems × samples each number is over. Output is sorted and formatted deterministically: the same
runs give byte-identical files.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, replace

import pandas as pd

from s2lpo.algo.labels import METHOD_LABELS
from s2lpo.analysis import cells as cellcheck
from s2lpo.analysis.columns import column_values, final_values
from s2lpo.analysis.stats import LEVEL, RESAMPLES, clearly_best, estimate


@dataclass
class Cell:
    mean: float | None
    low: float | None  # the 95 % bootstrap interval over seeds (None with one seed)
    high: float | None
    n: int
    delta: float | None = None
    bold: bool = False
    reference: float | None = None
    of: int | None = None  # a ``reach`` column: the runs of the cell (``n`` of them reached the target)
    digits: int = 1


def select(df: pd.DataFrame, flt: dict | None) -> pd.DataFrame:
    for k, v in (flt or {}).items():
        vals = [str(x) for x in (v if isinstance(v, list) else [v])]
        df = df[df[k].astype(str).isin(vals)]
    return df


def eval_sizes(spec: dict, df: pd.DataFrame) -> str:
    """``toy: 16 problems × 4 samples`` for each benchmark of the columns (``eval/<bench>/n_problems``,
    ``n_samples`` at the cells' step)."""
    parts = []
    for bench in sorted({c["metric"].split("/")[1] for c in spec["columns"] if c["metric"].startswith("eval/")}):
        got = [sorted({int(v) for v in final_values(df, f"eval/{bench}/{w}", spec.get("at", "final"))["value"]
                       if v == v}) for w in ("n_problems", "n_samples")]
        span = lambda xs: str(xs[0]) if len(xs) == 1 else f"{xs[0]}–{xs[-1]}"  # noqa: E731
        parts.append(f"{bench}: {span(got[0])} problems × {span(got[1])} samples" if all(got) else
                     f"{bench}: problems × samples not logged")
    return "; ".join(parts)


def labels_of(spec: dict) -> dict:
    """Display names of tag values: the methods' (one mapping for study, table and figure) and the spec's."""
    return {**METHOD_LABELS, "none": "", **spec.get("labels", {})}


def build(spec: dict, df: pd.DataFrame, params: dict[str, dict] | None = None
          ) -> tuple[list[tuple[str, str, dict, list[Cell]]], list[str]]:
    """``[(group, row label, row tags, cells)]`` in a stable order, and the column labels. Raises
    :class:`s2lpo.analysis.cells.MixedCellError` when a cell would mix configs (unless ``mixed: split``)."""
    df = select(df, spec.get("filter"))
    rows_by, group_by = list(spec["rows"]), spec.get("group")
    keys = ([group_by] if group_by else []) + rows_by
    df, keys, mixed = cellcheck.settle(df, keys, spec, params)
    spec["_sizes"] = eval_sizes(spec, df)
    at = spec.get("at", "final")
    per_col = []
    for col in spec["columns"]:
        v = column_values(df, col, at, keys)
        per_col.append(v.groupby(keys, observed=True)["value"].agg(list) if len(v) else pd.Series(dtype=object))
    index = sorted({k if isinstance(k, tuple) else (k,) for s in per_col for k in s.index})
    runs_per_key = df[df["key"].isin([c["metric"] for c in spec["columns"]])].groupby(
        keys, observed=True)["run_id"].nunique()
    order = spec.get("order", {})

    def sort_key(k: tuple) -> tuple:
        return tuple((order.get(name, []).index(val) if val in order.get(name, []) else len(order.get(name, [])), val)
                     for name, val in zip(keys, k))

    out = []
    for k in sorted(index, key=sort_key):
        tags = dict(zip(keys, k))
        cells = []
        for col, s in zip(spec["columns"], per_col):
            scale = float(col.get("scale", spec.get("scale", 1.0)))
            e = estimate([x * scale for x in s.get(k if len(k) > 1 else k[0], [])])
            digits = int(col.get("digits", spec.get("digits", 1)))
            cells.append(Cell(e.mean, e.low, e.high, e.n, digits=digits) if e else Cell(None, None, None, 0,
                                                                                      digits=digits))
            if "reach" in col:  # how many of the cell's runs reached the target at all
                cells[-1].of = int(runs_per_key.get(k if len(k) > 1 else k[0], 0))
        shown = {k: labels_of(spec).get(str(v), v) for k, v in tags.items()}
        label = spec.get("row_label", " · ".join("{" + r + "}" for r in rows_by)).format(**shown).strip(" ·")
        label = " · ".join(p for p in label.split(" · ") if p.strip())  # an empty part (explorer none) drops out
        if "config" in tags and k[:-1] in mixed:
            label += f" [config {tags['config']}]"
        out.append((str(tags.get(group_by, "")) if group_by else "", label, tags, cells))
    _deltas(spec, out)
    _bold(spec, out)
    _reference(spec, out)
    return out, [c["label"] for c in spec["columns"]]


def _deltas(spec: dict, rows) -> None:
    base_tags = spec.get("delta_vs")
    if not base_tags:
        return
    for group, _, tags, cells in rows:
        if all(str(tags.get(k)) == str(v) for k, v in base_tags.items()):
            continue
        base = next((c for g, _, t, c in rows if g == group and all(str(t.get(k)) == str(v)
                                                                     for k, v in base_tags.items())), None)
        if base is None:
            continue
        for col, cell, b in zip(spec["columns"], cells, base):
            if cell.mean is not None and b.mean is not None and col.get("delta", True):
                cell.delta = cell.mean - b.mean


def _bold(spec: dict, rows) -> None:
    if not rows:
        return
    for j, col in enumerate(spec["columns"]):
        how = col.get("bold", spec.get("bold", "max"))
        if how == "none":
            continue
        groups = {g for g, *_ in rows}
        for group in groups:  # best per column within a section (a learner), when beyond the noise
            cells = [r[3][j] for r in rows if r[0] == group and r[3][j].mean is not None]
            if len(cells) > 1:
                best = (max if how == "max" else min)(cells, key=lambda c: c.mean)
                best.bold = clearly_best(best, [c for c in cells if c is not best], higher=how == "max")


def _reference(spec: dict, rows) -> None:
    ref = spec.get("reference")
    if not ref:
        return
    for ref_row in ref["rows"]:
        for _, _, tags, cells in rows:
            if all(str(tags.get(k)) == str(v) for k, v in ref_row.items() if k != "values"):
                for cell, v in zip(cells, ref_row["values"]):
                    cell.reference = None if v is None else float(v)


def _num(x: float | None, digits: int) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


def _cell_text(c: Cell, tex: bool) -> str:
    digits = c.digits
    if c.of is not None and c.n < c.of:
        return (f"never (0 of {c.of})" if c.mean is None else
                _cell_text(replace(c, of=None), tex) + f" ({c.n} of {c.of} reached)")
    if c.mean is None:
        return "–"
    ci = f"[{_num(c.low, digits)}, {_num(c.high, digits)}]" if c.low is not None else ""
    s = _num(c.mean, digits) + ((r"\,{\scriptsize " + ci + "}" if tex else " " + ci) if ci else "")
    if c.bold:
        s = rf"\textbf{{{s}}}" if tex else f"**{s}**"
    if c.delta is not None:
        s += f" ({c.delta:+.{digits}f})"
    return s


def markdown(spec: dict, rows, labels: list[str]) -> str:
    ref = spec.get("reference")
    head = ["", *labels] + ([f"{label} ({ref['label']})" for label in labels] if ref else [])
    lines = [f"**{spec.get('title', spec['name'])}**", "", "| " + " | ".join(head) + " |",
             "|---|" + "---:|" * (len(head) - 1)]
    group = None
    for g, label, _, cells in rows:
        if g and g != group:
            lines.append(f"| *{g}* |" + " |" * (len(head) - 1))
            group = g
        refs = [_num(c.reference, c.digits) for c in cells] if ref else []
        lines.append("| " + " | ".join([label, *(_cell_text(c, False) for c in cells), *refs]) + " |")
    lines += ["", caption(spec, rows)]
    return "\n".join(lines) + "\n"


def caption(spec: dict, rows, sizes: str | None = None) -> str:
    """What the numbers are: over how many seeds, what the interval is, the problems × samples behind each
    evaluation, what bold and the differences mean."""
    n = sorted({c.n for *_, cells in rows for c in cells if c.n})
    seeds = ", ".join(map(str, n)) or "0"
    text = (f"Mean over seeds (n = {seeds} per row) with its {LEVEL:.0%} bootstrap interval over seeds "
            f"[low, high] (percentile, {RESAMPLES:,} resamples); a row of one seed shows the mean alone.")
    sizes = spec.get("_sizes", sizes)
    if sizes:
        text += f" Each evaluation: {sizes}."
    if spec.get("bold", "max") != "none":
        text += " Bold: best in its column beyond the noise (its interval above every other's; never with one seed)."
    if spec.get("delta_vs"):
        base = ", ".join(labels_of(spec).get(str(v), v) or f"{k}={v}" for k, v in spec["delta_vs"].items())
        text += f" (+x): difference of the means to {base}."
    return text


def _tex_escape(s: str) -> str:
    return s.replace("\\", r"\textbackslash{}").replace("&", r"\&").replace("%", r"\%").replace("_", r"\_") \
        .replace("#", r"\#").replace("·", r"$\cdot$").replace("Δ", r"$\Delta$").replace("×", r"$\times$")


def latex(spec: dict, rows, labels: list[str]) -> str:
    ref = spec.get("reference")
    head = ["", *labels] + ([f"{label} ({ref['label']})" for label in labels] if ref else [])
    title = f"{spec.get('title', spec['name'])}. {caption(spec, rows)}"
    out = [r"\begin{table}[t]", r"\centering", rf"\caption{{{_tex_escape(title)}}}",
           rf"\label{{tab:{spec['name']}}}", r"\begin{tabular}{l" + "r" * (len(head) - 1) + "}", r"\toprule",
           " & ".join(_tex_escape(h) for h in head) + r" \\", r"\midrule"]
    group = None
    for g, label, _, cells in rows:
        if g and g != group:
            if group is not None:
                out.append(r"\midrule")
            out.append(rf"\multicolumn{{{len(head)}}}{{l}}{{\textit{{{_tex_escape(g)}}}}} \\")
            group = g
        refs = [_num(c.reference, c.digits) for c in cells] if ref else []
        out.append(" & ".join([_tex_escape(label), *(_cell_text(c, True) for c in cells), *refs]) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(out) + "\n"


def csv_text(spec: dict, rows, labels: list[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    tag_names = ([spec["group"]] if spec.get("group") else []) + list(spec["rows"])
    w.writerow([*tag_names, "column", "mean", "ci_low", "ci_high", "n", "delta", "reference"])
    fmt = lambda x: "" if x is None else repr(round(x, 10))  # noqa: E731
    for _, _, tags, cells in rows:
        for label, c in zip(labels, cells):
            w.writerow([*(tags[t] for t in tag_names), label, fmt(c.mean), fmt(c.low), fmt(c.high), c.n,
                        fmt(c.delta), fmt(c.reference)])
    return buf.getvalue()
