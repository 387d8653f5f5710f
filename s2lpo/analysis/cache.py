"""A local cache of fetched runs (one parquet file per run, keyed by run id and version) and the tidy
DataFrame built from it: one row per (run, key, step) with the run's tags as columns.

A regeneration fetches only runs that are new or changed; with the source unreachable it works from
the cache alone (saying so). Duplicate (run, key, step) rows (MLflow keeps every row it was sent)
are resolved by the latest timestamp.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from s2lpo.tracking.readers import POINT_COLUMNS, RunInfo

TAG_COLUMNS = ["method", "learner", "explorer", "t_mix", "schedule", "temperature", "temperature_mode", "guidance",
               "seed", "sweep", "kind", "group_size", "status", "correction", "scorer", "evaluated_run", "family",
               "config", "label", "policy"]


class RunCache:
    def __init__(self, directory: str | Path, source: str):
        self.dir = Path(directory) / hashlib.sha256(source.encode()).hexdigest()[:16]
        self.index_path = self.dir / "index.json"
        self.index: dict[str, dict] = json.loads(self.index_path.read_text()) if self.index_path.exists() else {}

    def _file(self, run_id: str) -> Path:
        return self.dir / f"{hashlib.sha256(run_id.encode()).hexdigest()[:24]}.parquet"

    def save_index(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.index_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.index, indent=1, sort_keys=True))
        os.replace(tmp, self.index_path)

    def load(self, reader, progress: Callable[[int, int], None] | None = None, warn=print,
             history: list[str] | None = None) -> tuple[pd.DataFrame, dict]:
        """The tidy frame of every run the reader lists (or, unreachable, every cached run), and counts.
        ``history``: regexes of the keys whose whole history is needed (None: all); of the other keys a
        remote source gives each run's last point only. A run is fetched again when it changed or when
        the needed keys grew."""
        try:
            runs = reader.runs()
        except Exception as e:  # noqa: BLE001 - no network: the cache is what there is
            if not self.index:
                raise
            warn(f"warning: {reader.name} unreachable ({type(e).__name__}: {str(e)[:200]}); using the "
                 f"{len(self.index)} cached run(s)")
            runs = [RunInfo(rid, e_["source_id"], e_["tags"], e_["version"], params=e_.get("params", {}))
                    for rid, e_ in self.index.items()]
            return self._frame(runs), {"cached": len(runs), "fetched": 0, "offline": True}
        need = sorted(history) if history is not None else ["*"]
        stale = [r for r in runs if self._stale(r, need)]
        done = [0]

        def tick(n: int) -> None:
            done[0] += n
            if progress:
                progress(done[0], len(stale))

        if stale:
            pats = [re.compile(h) for h in history] if history is not None else None
            want = (lambda k: any(p.search(k) for p in pats)) if pats is not None else None
            fetched = reader.fetch(stale, tick, want)
            self.dir.mkdir(parents=True, exist_ok=True)
            for r in stale:
                df = fetched[r.run_id]
                tmp = self._file(r.run_id).with_suffix(".tmp")
                df.to_parquet(tmp, index=False)
                os.replace(tmp, self._file(r.run_id))
                self.index[r.run_id] = {"version": r.version, "source_id": r.source_id, "tags": r.tags,
                                        "history": need, "params": r.params}
            self.save_index()
        changed = [r for r in runs if r.run_id in self.index  # tags or params fixed on the source, no new points
                   and (self.index[r.run_id]["tags"], self.index[r.run_id].get("params")) != (r.tags, r.params)]
        for r in changed:
            self.index[r.run_id].update(tags=r.tags, params=r.params)
        if changed:
            self.save_index()
        return self._frame(runs), {"cached": len(runs) - len(stale), "fetched": len(stale), "offline": False}

    def params(self, run_ids) -> dict[str, dict[str, str]]:
        """Each run's flat semantic config (what names the keys in which two runs' configs differ)."""
        return {r: self.index.get(r, {}).get("params", {}) for r in run_ids}

    def _stale(self, r: RunInfo, need: list[str]) -> bool:
        e = self.index.get(r.run_id)
        if e is None or e["version"] != r.version or not self._file(r.run_id).exists():
            return True
        have = set(e.get("history", ["*"]))
        return "*" not in have and not set(need) <= have

    def _frame(self, runs: list[RunInfo]) -> pd.DataFrame:
        """The tidy frame of ``runs``; the assembled frame is kept too (one file, keyed by every run's
        id, version and fetched keys), so an unchanged set of runs is one read."""
        key = hashlib.sha256(json.dumps([TAG_COLUMNS, sorted((r.run_id, r.version, self.index.get(r.run_id, {}).get(
            "history"), sorted(r.tags.items())) for r in runs)], default=str).encode()).hexdigest()[:20]
        whole = self.dir / f"frame-{key}.parquet"
        if whole.exists():
            return pd.read_parquet(whole)
        df = self._assemble(runs)
        if runs:
            self.dir.mkdir(parents=True, exist_ok=True)
            for old in self.dir.glob("frame-*.parquet"):
                old.unlink(missing_ok=True)
            tmp = whole.with_suffix(".tmp")
            df.to_parquet(tmp, index=False)
            os.replace(tmp, whole)
        return df

    def _assemble(self, runs: list[RunInfo]) -> pd.DataFrame:
        parts = []
        for r in sorted(runs, key=lambda r: r.run_id):
            df = pd.read_parquet(self._file(r.run_id))
            df["run_id"] = r.run_id
            for c in TAG_COLUMNS:
                df[c] = str(r.tags.get(c, ""))
            parts.append(df)
        if not parts:
            return pd.DataFrame(columns=["run_id", *POINT_COLUMNS, *TAG_COLUMNS])
        df = pd.concat(parts, ignore_index=True)
        return tidy(df)


def tidy(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, key, step): of duplicates the latest timestamp wins; sorted, categorical tags."""
    df = df.sort_values(["run_id", "key", "step", "t"], kind="stable")
    df = df.drop_duplicates(["run_id", "key", "step"], keep="last").reset_index(drop=True)
    for c in ["run_id", "key", *TAG_COLUMNS]:
        df[c] = df[c].astype("category")
    return df
