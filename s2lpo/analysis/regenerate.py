"""Regenerate every table and figure of a spec directory from logged runs.

    regenerate(["mlflow:http://host:5000", "journal:runs"], "analysis/specs/paper", "results/paper")

Sources are read through the run cache (only new or changed runs are fetched); a run found in
several sources is taken from the first that has it. Specs are YAML files (``kind: table`` or
``kind: figure``), checked before anything is fetched.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from s2lpo.analysis import figures, tables
from s2lpo.analysis.cache import RunCache, tidy
from s2lpo.config.yaml_file import load_mapping
from s2lpo.tracking.readers import make_reader

TABLE_KEYS = {"kind", "name", "title", "filter", "group", "rows", "row_label", "columns", "at", "scale", "digits",
              "delta_vs", "bold", "reference", "order", "formats", "labels", "mixed"}
FIGURE_KEYS = {"kind", "name", "optional", "title", "filter", "panels", "x", "series", "divide_by", "scale", "xlabel",
               "ylabel", "logx", "band", "size", "dpi", "formats", "labels", "series_format", "mixed", "caption"}


class SpecError(ValueError):
    pass


@dataclass
class Regeneration:
    written: list[Path] = field(default_factory=list)
    runs: int = 0
    fetched: int = 0
    cached: int = 0
    offline: bool = False
    params: dict[str, dict] = field(default_factory=dict)  # run id -> flat semantic config


def load_specs(spec_dir: str | Path) -> list[dict]:
    spec_dir = Path(spec_dir)
    files = sorted(spec_dir.glob("*.yaml")) if spec_dir.is_dir() else [spec_dir]
    if not files or not files[0].exists():
        raise SpecError(f"no spec files (*.yaml) in {spec_dir}")
    specs = []
    for f in files:
        spec = load_mapping(f, SpecError, "a spec is a mapping with kind: table or kind: figure; see "
                            "analysis/specs/toy")
        kind = spec.get("kind")
        allowed, required = {"table": (TABLE_KEYS, ("name", "rows", "columns")),
                             "figure": (FIGURE_KEYS, ("name", "panels", "series"))}.get(kind, (None, ()))
        if allowed is None:
            raise SpecError(f"{f}: kind={kind!r}; use kind: table or kind: figure")
        missing = [k for k in required if k not in spec]
        unknown = sorted(set(spec) - allowed)
        if spec.get("mixed", "refuse") not in ("refuse", "split"):
            unknown.append(f"mixed={spec['mixed']!r} (use refuse or split)")
        if missing or unknown:
            raise SpecError(f"{f}: " + "; ".join(
                ([f"missing {missing}"] if missing else []) + ([f"unknown key(s) {unknown}"] if unknown else [])))
        spec["_file"] = str(f)
        specs.append(spec)
    return specs


def history_keys(specs: list[dict]) -> list[str]:
    """Regexes of the metrics whose whole history the specs need; every other metric is needed at each
    run's last point only, which a remote source lists without fetching histories."""
    out = set()
    for spec in specs:
        if spec["kind"] == "table":
            if spec.get("at", "final") != "final":
                out |= {"^" + re.escape(c["metric"]) + "$" for c in spec["columns"]}
        elif spec.get("x", "step") != "k":
            out |= {"^" + re.escape(p["y"]) + "$" for p in spec["panels"]}
            if spec.get("x", "step") != "step":
                out.add("^" + re.escape(spec["x"]) + "$")
    return sorted(out)


def load_runs(sources: list, cache_dir: Path, progress: Callable[[str, int, int], None] | None = None,
              warn=print, history: list[str] | None = None, where: dict | None = None) -> tuple[pd.DataFrame, Regeneration]:
    """Every source's runs (``where``: tag -> value, applied by the source: MLflow's search, not after fetching)."""
    rep = Regeneration()
    frames, seen = [], set()
    for source in sources:  # a source string, or a reader object
        reader = make_reader(source, where) if isinstance(source, str) else source
        if not isinstance(source, str):
            source = f"{reader.name}:{sorted(map(str, getattr(reader, 'roots', [])))}"
        cache = RunCache(cache_dir, source + (f"?{sorted(where.items())}" if where else ""))
        df, counts = cache.load(reader, (lambda d, n, s=source: progress(s, d, n)) if progress else None,
                                warn=warn, history=history)
        df = df[~df["run_id"].astype(str).isin(seen)]
        seen |= set(df["run_id"].astype(str).unique())
        frames.append(df)
        rep.params.update(cache.params(df["run_id"].astype(str).unique()))
        rep.fetched += counts["fetched"]
        rep.cached += counts["cached"]
        rep.offline |= counts["offline"]
    df = tidy(pd.concat(frames, ignore_index=True)) if len(frames) > 1 else frames[0]
    rep.runs = df["run_id"].nunique()
    return df, rep


def regenerate(sources: list, spec_dir: str | Path, out_dir: str | Path, cache_dir: str | Path = ".cache/analysis",
               extra_filter: dict | None = None, progress=None, warn=print) -> Regeneration:
    specs = load_specs(spec_dir)  # bad specs fail before anything is fetched
    df, rep = load_runs(sources, Path(cache_dir), progress, warn, history_keys(specs), where=extra_filter)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for spec in specs:
        if extra_filter:
            spec["filter"] = {**(spec.get("filter") or {}), **extra_filter}
        if spec["kind"] == "table":
            rows, labels = tables.build(spec, df, rep.params)
            for ext in spec.get("formats", ["md", "tex", "csv"]):
                text = {"md": tables.markdown, "tex": tables.latex, "csv": tables.csv_text}[ext](spec, rows, labels)
                p = out / f"{spec['name']}.{ext}"
                p.write_text(text, encoding="utf-8")
                rep.written.append(p)
        else:
            rep.written += figures.render(spec, df, out, Path(cache_dir) / "artefacts", rep.params)
    return rep
