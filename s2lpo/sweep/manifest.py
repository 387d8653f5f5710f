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
        self.data: dict = {"name": name, "runs": {}, "cache_jobs": {}, "submissions": []}
        if self.path.exists():
            try:
                self.data = json.loads(self.path.read_text())
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise RuntimeError(f"{self.path} is damaged ({str(e).splitlines()[0]}); submitting the sweep again "
                                   f"rebuilds it from the runs' own manifests once it is moved away "
                                   f"(mv {self.path} {self.path}.damaged)") from None

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, sort_keys=True))
        os.replace(tmp, self.path)
