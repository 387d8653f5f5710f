"""A sweep's own record, ``sweeps/<name>/sweep.json``: its runs (overrides, SLURM job ids per submission), its
explorer-cache jobs and its submissions; rewritten atomically. Imports nothing of ours."""

from __future__ import annotations

import json
import os
from pathlib import Path


def sweep_dir(root: Path, name: str) -> Path:
    return Path(root) / "sweeps" / name


class SweepManifest:
    def __init__(self, root: Path, name: str):
        self.path = sweep_dir(root, name) / "sweep.json"
        self.data: dict = json.loads(self.path.read_text()) if self.path.exists() else {
            "name": name, "runs": {}, "cache_jobs": {}, "submissions": []}

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, sort_keys=True))
        os.replace(tmp, self.path)
