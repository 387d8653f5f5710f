"""Figure specs → PNG and PDF, from the tidy DataFrame.

    kind: figure
    name: fig1_pass1_vs_step
    filter: {kind: train}
    panels: [{label: AIME 24, y: eval/aime24/pass@1}, ...]    # one subplot each
    x: step            # step | a metric key (e.g. compute/rollout_flops_cum) | k (pass@k curves)
    series: method     # a tag, or a list of tags: one line each (mean over seeds, band = 95 % bootstrap interval)
    labels: {grpo: GRPO, none: ""}   # display names of tag values (optional)
    series_format: "T_mix = {t_mix}" # or a format of the series tags (optional)
    divide_by: group_size   # optional: y / that tag (e.g. explorer rows / group size = explorer share)
    scale: 100
    xlabel: …, ylabel: …, logx: 2 (log base), at: final (x: k)
    optional: true     # no matching runs: no figure (else an error naming the filter and panels)
    # a panel may set its own scale and ylabel ({label: …, y: …, scale: 1, ylabel: paths})

With ``x: k`` each panel's ``y`` is a pattern with ``{k}`` (``eval/toy/pass@{k}``), read at each run's
last step. A series aggregates the seeds of one configuration only (``s2lpo.analysis.cells``; ``mixed:
split`` draws one line per config). The figure's footnote says what the line and the band are. Output files
carry no timestamps, so the same runs give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from s2lpo.analysis import cells as cellcheck
from s2lpo.analysis.stats import LEVEL, estimate
from s2lpo.analysis.tables import labels_of, select


def _series_label(tags: tuple, names: list[str], labels: dict) -> str:
    return " · ".join(shown for v in tags if (shown := str(labels.get(str(v), v))))


def curves(spec: dict, df: pd.DataFrame, panel: dict, params: dict | None = None
           ) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """``{series label: (x, mean y, interval low, interval high)}`` for one panel (the interval is the
    mean's where a point has one seed)."""
    df = select(df, spec.get("filter"))
    names = spec["series"] if isinstance(spec["series"], list) else [spec["series"]]
    df, names, mixed = cellcheck.settle(df, names, spec, params)
    x, scale = spec.get("x", "step"), float(panel.get("scale", spec.get("scale", 1.0)))
    if x == "k":
        pat = re.compile("^" + re.escape(panel["y"]).replace(r"\{k\}", r"(\d+)") + "$")
        d = df[df["key"].astype(str).str.match(pat)].copy()
        d["x"] = d["key"].astype(str).str.extract(pat, expand=False).astype(int)
        last = d.groupby("run_id", observed=True)["step"].transform("max")
        d = d[d["step"] == last]
        d["y"] = d["value"]
    else:
        d = df[df["key"] == panel["y"]][["run_id", "step", "value", *names, "group_size"]].rename(columns={"value": "y"})
        if x == "step":
            d["x"] = d["step"].astype(float)
        else:
            xs = df[df["key"] == x][["run_id", "step", "value"]].rename(columns={"value": "x"})
            d = d.merge(xs, on=["run_id", "step"])
    if spec.get("divide_by"):
        d["y"] = d["y"] / pd.to_numeric(d[spec["divide_by"]].astype(str), errors="coerce")
        d = d.dropna(subset=["y"])  # runs without that tag have no share to show
    d["y"] = d["y"] * scale
    out = {}
    for tags, g in d.groupby(names, observed=True, sort=True):
        tags = tags if isinstance(tags, tuple) else (tags,)
        by = "step" if x not in ("step", "k") else "x"
        pts = []
        for _, at in g.groupby(by, observed=True):
            e = estimate(list(at["y"]))
            pts.append((float(at["x"].mean()), e.mean, e.mean if e.low is None else e.low,
                        e.mean if e.high is None else e.high))
        pts.sort(key=lambda p: p[0])
        shown = tags[:-1] if "config" in names else tags
        label = (spec["series_format"].format(**dict(zip(names, tags))) if spec.get("series_format")
                 else _series_label(shown, names, labels_of(spec)))
        if "config" in names and tags[:-1] in mixed:
            label += f" [config {tags[-1]}]"
        out[label] = tuple(np.array([p[i] for p in pts], dtype=float) for i in range(4))
    return out


def footnote(spec: dict, df: pd.DataFrame) -> str:
    """What a line and its band are, over how many seeds."""
    d = select(df, spec.get("filter"))
    n = sorted({int(v) for v in d.groupby(cellcheck.run_config(d), observed=True)["run_id"].nunique()}) if len(d) else []
    band = (f"band: {LEVEL:.0%} bootstrap interval over seeds" if spec.get("band", "ci") != "none" else "no band")
    return spec.get("caption") or f"Line: mean over seeds (n = {', '.join(map(str, n)) or '0'} per line); {band}."


def render(spec: dict, df: pd.DataFrame, out_dir: Path, cache_dir: Path | None = None,
           params: dict | None = None) -> list[Path]:
    """Write the figure; with ``cache_dir``, files drawn before from the same spec and the same curves
    are copied from there instead of drawn again."""
    panels = spec["panels"]
    data = [curves(spec, df, panel, params) for panel in panels]
    spec = {**spec, "_footnote": footnote(spec, df)}
    if not any(data):
        if spec.get("optional"):  # drawn only when the runs hold what it shows (e.g. a study's diversity runs)
            return []
        raise ValueError(f"figure {spec['name']}: no data matched (filter {spec.get('filter')}, "
                         f"panels {[p['y'] for p in panels]})")
    formats = spec.get("formats", ["png", "pdf"])
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{spec['name']}.{ext}" for ext in formats]
    key = None
    if cache_dir is not None:
        h = hashlib.sha256(json.dumps({k: v for k, v in spec.items() if not k.startswith("_")}, sort_keys=True,
                                      default=str).encode())
        for panel in data:
            for label, arrays in sorted(panel.items()):
                h.update(label.encode())
                for a in arrays:
                    h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
        h.update(spec["_footnote"].encode())
        key = h.hexdigest()[:24]
        cached = [cache_dir / f"{key}.{ext}" for ext in formats]
        if all(c.exists() for c in cached):
            for c, p in zip(cached, paths):
                shutil.copyfile(c, p)
            return paths
    _draw(spec, data, paths)
    if key is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        for p in paths:
            shutil.copyfile(p, cache_dir / f"{key}{p.suffix}")
    return paths


def _draw(spec: dict, data: list[dict], paths: list[Path]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = spec["panels"]
    w, h = spec.get("size", [5.0 * len(panels), 3.6])
    fig, axes = plt.subplots(1, len(panels), figsize=(w, h), dpi=int(spec.get("dpi", 150)), squeeze=False)
    for ax, panel, lines in zip(axes[0], panels, data):
        for label, (x, y, lo, hi) in lines.items():
            ax.plot(x, y, marker="o", ms=2.5, lw=1.4, label=label)
            if spec.get("band", "ci") != "none" and np.any(hi > lo):
                ax.fill_between(x, lo, hi, alpha=0.18)
        ax.set_title(panel.get("label", panel["y"]))
        ax.set_xlabel(spec.get("xlabel", spec.get("x", "step")))
        ax.set_ylabel(panel.get("ylabel", spec.get("ylabel", panel["y"])))
        if spec.get("logx"):
            ax.set_xscale("log", base=int(spec["logx"]))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.text(0.01, 0.01, spec["_footnote"], fontsize=7, color="0.3")
    for p in paths:
        meta = {"Software": None} if p.suffix == ".png" else {"Creator": None, "Producer": None, "CreationDate": None}
        fig.savefig(p, metadata=meta)
    plt.close(fig)
