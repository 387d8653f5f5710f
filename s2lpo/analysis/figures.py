"""Figure specs → PNG and PDF, from the tidy DataFrame.

    kind: figure
    name: fig1_pass1_vs_step
    filter: {kind: train}
    panels: [{label: AIME 24, y: eval/aime24/pass@1}, ...]    # one subplot each
    x: step            # step | a metric key (e.g. compute/rollout_flops_cum) | k (pass@k curves)
    series: method     # a tag, or a list of tags: one line each (mean over seeds, band = std)
    labels: {grpo: GRPO, none: ""}   # display names of tag values (optional)
    series_format: "T_mix = {t_mix}" # or a format of the series tags (optional)
    divide_by: group_size   # optional: y / that tag (e.g. explorer rows / group size = explorer share)
    scale: 100
    xlabel: …, ylabel: …, logx: 2 (log base), at: final (x: k)

With ``x: k`` each panel's ``y`` is a pattern with ``{k}`` (``eval/toy/pass@{k}``), read at each run's
last step. Output files carry no timestamps, so the same runs give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from s2lpo.analysis.tables import select


def _series_label(tags: tuple, names: list[str], labels: dict) -> str:
    return " · ".join(shown for v in tags if (shown := str(labels.get(str(v), v))))


def curves(spec: dict, df: pd.DataFrame, panel: dict) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``{series label: (x, mean y, std y)}`` for one panel."""
    df = select(df, spec.get("filter"))
    names = spec["series"] if isinstance(spec["series"], list) else [spec["series"]]
    x, scale = spec.get("x", "step"), float(spec.get("scale", 1.0))
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
        agg = g.groupby(by, observed=True).agg(xm=("x", "mean"), y=("y", "mean"), s=("y", "std"))
        agg = agg.reset_index(drop=True).sort_values("xm", kind="stable")
        label = (spec["series_format"].format(**dict(zip(names, tags))) if spec.get("series_format")
                 else _series_label(tags, names, spec.get("labels", {})))
        out[label] = (agg["xm"].to_numpy(), agg["y"].to_numpy(),
                                           np.nan_to_num(agg["s"].to_numpy()))
    return out


def render(spec: dict, df: pd.DataFrame, out_dir: Path, cache_dir: Path | None = None) -> list[Path]:
    """Write the figure; with ``cache_dir``, files drawn before from the same spec and the same curves
    are copied from there instead of drawn again."""
    panels = spec["panels"]
    data = [curves(spec, df, panel) for panel in panels]
    if not any(data):
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
        for label, (x, y, s) in lines.items():
            ax.plot(x, y, marker="o", ms=2.5, lw=1.4, label=label)
            if spec.get("band", "std") == "std" and np.any(s > 0):
                ax.fill_between(x, y - s, y + s, alpha=0.18)
        ax.set_title(panel.get("label", panel["y"]))
        ax.set_xlabel(spec.get("xlabel", spec.get("x", "step")))
        ax.set_ylabel(spec.get("ylabel", panel["y"]))
        if spec.get("logx"):
            ax.set_xscale("log", base=int(spec["logx"]))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    for p in paths:
        meta = {"Software": None} if p.suffix == ".png" else {"Creator": None, "Producer": None, "CreationDate": None}
        fig.savefig(p, metadata=meta)
    plt.close(fig)
