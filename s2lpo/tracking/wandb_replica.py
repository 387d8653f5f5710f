"""W&B as a replica of the journal.

``id`` = our run id, ``resume="allow"``, group = sweep name, job_type = method, config = the resolved
config. Offline (files under ``<run dir>/wandb``) unless an API key is configured; ``WANDB_MODE``
wins when set (``disabled`` turns the sink off). W&B's step is one counter for all keys and must only
grow, so what W&B already holds is read back on opening: from its offline files (every directory of
the run: each start makes a new one) or, online, from the resumed run's ``starting_step``.
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path

from s2lpo.tracking.replica import Point, ReplicaState
from s2lpo.tracking.wandb_files import offline_high_water


def wandb_mode(configured: str) -> str:
    """``online`` / ``offline`` / ``disabled``: ``WANDB_MODE`` when set, else the configured mode, where
    ``auto`` means online with an API key and offline without one."""
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    mode = env or configured
    if mode in ("dryrun",):
        return "offline"
    if mode in ("online", "offline", "disabled"):
        return mode
    return "online" if has_api_key() else "offline"


def has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].rstrip("/")
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


class WandbReplica:
    name = "wandb"

    def __init__(self, run_dir: Path, rid: str, project: str, entity: str | None, group: str | None,
                 job_type: str, config: dict, tags: dict[str, str], mode: str, name: str | None = None):
        self.run_dir, self.rid, self.project, self.entity = Path(run_dir), rid, project, entity
        self.group, self.job_type, self.config, self.tags, self.mode = group, job_type, config, tags, mode
        self.display_name, self.run = name, None  # (``name`` is the replica's kind: "wandb")

    def open(self, state: ReplicaState) -> dict[str, int]:
        if self.run is not None:  # W&B's local service took every point we handed it
            return state.high_water
        state.remote = {"id": self.rid, "project": self.project, "mode": self.mode}
        if self.mode == "offline":
            # the files say what is held; with no files left (removed after `wandb sync --clean`) the saved
            # marks are all there is to go by. The new offline directory is made on the first point sent,
            # so a replay with nothing to add leaves no empty directory behind.
            held = offline_high_water(self.run_dir, self.rid)
            return held if held is not None else state.high_water
        self._init()
        return {"*": int(getattr(self.run, "starting_step", 0)) - 1}

    def _init(self) -> None:
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        settings = wandb.Settings(console="off", x_disable_stats=True, disable_git=True, save_code=False,
                                  quiet=True)
        self.run = wandb.init(
            id=self.rid, name=self.display_name, resume="allow", project=self.project, entity=self.entity, group=self.group or None,
            job_type=self.job_type, config=self.config, dir=str(self.run_dir), mode=self.mode,
            tags=[f"{k}={v}"[:64] for k, v in sorted(self.tags.items()) if v], settings=settings,
            reinit="create_new")

    def send(self, points: list[Point]) -> None:
        if self.run is None:
            self._init()
        by_step: dict[int, dict[str, float]] = {}
        for p in points:
            by_step.setdefault(p.step, {})[p.key] = p.value
        for step in sorted(by_step):
            self.run.log(by_step[step], step=step)

    def close(self, status: str) -> None:
        if self.run is None:
            return
        if status == "preempted":
            self.run.mark_preempting()
        self.run.finish(exit_code=0 if status == "finished" else 1)
        self.run = None
