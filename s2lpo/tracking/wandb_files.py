"""W&B offline runs read back from their own files.

``wandb.init(mode="offline", dir=<run dir>)`` writes ``<run dir>/wandb/offline-run-<time>-<id>/run-<id>.wandb``,
a new directory every start. The records are read with W&B's own reader (``wandb leet inspect --json``);
a hard-killed writer loses its last unwritten block, which is why the journal, not W&B, is what a run
resumes from.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

NON_FINITE = ("NaN", "Infinity", "-Infinity")


@dataclass
class OfflineRun:
    directory: Path
    run_id: str = ""
    group: str = ""
    job_type: str = ""
    project: str = ""
    config: dict = field(default_factory=dict)
    rows: list[tuple[int, dict[str, float]]] = field(default_factory=list)  # (step, metrics) per history record
    exit_code: int | None = None


def offline_dirs(run_dir: Path, wandb_id: str | None = None) -> list[Path]:
    """The offline run directories under ``run_dir/wandb`` (of one W&B id if given), oldest first."""
    root = Path(run_dir) / "wandb"
    pattern = f"offline-run-*-{wandb_id}" if wandb_id else "offline-run-*"
    return sorted(p for p in root.glob(pattern) if p.is_dir())


def wandb_cli() -> str:
    sibling = Path(sys.executable).with_name("wandb")
    return str(sibling) if sibling.exists() else (shutil.which("wandb") or "wandb")


def read_offline_run(directory: Path) -> OfflineRun:
    files = sorted(Path(directory).glob("run-*.wandb"))
    run = OfflineRun(Path(directory))
    if not files:
        return run
    out = subprocess.run([wandb_cli(), "leet", "inspect", "--json", str(files[0])], capture_output=True,
                         text=True, timeout=120)
    for line in out.stdout.splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        kind = rec.get("type")
        if kind == "run":
            r = rec["run"]
            run.run_id, run.group, run.job_type = r.get("run_id", ""), r.get("run_group", ""), r.get("job_type", "")
            run.project = r.get("project", "")
            run.config = {k: v for k, v in r.get("config", {}).get("update", {}).items() if k != "_wandb"}
        elif kind == "history":
            item = rec["history"]["item"]
            step = int(rec["history"].get("step", {}).get("num", item.get("_step", 0)))
            run.rows.append((step, {k: float(v) for k, v in item.items()  # W&B writes NaN/inf as strings
                                    if not k.startswith("_") and (isinstance(v, (int, float)) or v in NON_FINITE)}))
        elif kind == "exit":
            run.exit_code = int(rec["exit"].get("exit_code", 0))
    return run


def offline_high_water(run_dir: Path, wandb_id: str) -> dict[str, int] | None:
    """The last step per key that the run's offline files hold; None when there are no files."""
    dirs = offline_dirs(run_dir, wandb_id)
    if not dirs:
        return None
    hw: dict[str, int] = {}
    for d in dirs:
        for step, metrics in read_offline_run(d).rows:
            for k in metrics:
                hw[k] = max(hw.get(k, -1), step)
    return hw
