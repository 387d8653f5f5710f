"""Where a restarted verl run resumes, so that a kill loses no step's metrics.

verl saves step ``k``'s checkpoint *before* it logs step ``k`` (``RayPPOTrainer.fit``: update actor, save,
sync weights, validate, then ``logger.log``), so a run killed between the save and the log would resume at
``k + 1`` with step ``k``'s training and evaluation metrics never logged. Before verl starts, the runner
points verl's tracker file (``latest_checkpointed_iteration.txt``, read by ``resume_mode=auto``) at the latest
checkpoint whose step verl did log (``verl/training/global_step`` in the run's journal), or removes it (train
from the start) when there is none; the steps after it are trained again and reproduce the same values
(sampling is seeded per step and row). Validation before training runs only while step 0's evaluation is
missing, so a resumed run keeps the first attempt's evaluations.
"""

from __future__ import annotations

import os
from pathlib import Path

TRACKER = "latest_checkpointed_iteration.txt"
LOGGED_STEP = "verl/training/global_step"


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "verl_checkpoints"


def latest_verl_step(run_dir: Path) -> int:
    """The step verl's tracker file names (what ``resume_mode=auto`` loads), 0 if none."""
    try:
        return int((checkpoint_dir(run_dir) / TRACKER).read_text().strip())
    except (OSError, ValueError):
        return 0


def settle_resume(run_dir: Path, hist: dict[str, dict[int, float]], log=print) -> int:
    """Point verl's tracker at the latest checkpoint of a logged step; returns that step (0: from the start)."""
    ckpts = checkpoint_dir(run_dir)
    saved = sorted(int(p.name.rsplit("_", 1)[1]) for p in ckpts.glob("global_step_*") if p.name.rsplit("_", 1)[1].isdigit())
    logged = set(hist.get(LOGGED_STEP, {}))
    target = max((s for s in saved if s in logged), default=0)
    current = latest_verl_step(run_dir)
    if current != target:
        tracker = ckpts / TRACKER
        if target:
            tmp = ckpts / f".{TRACKER}.{os.getpid()}"
            tmp.write_text(str(target))
            tmp.replace(tracker)
        else:
            tracker.unlink(missing_ok=True)
        log(f"verl checkpoint of step {current} was saved but its step was never logged: resuming from "
            f"{'step ' + str(target) if target else 'the start'} instead")
    return target


def needs_initial_validation(hist: dict[str, dict[int, float]]) -> bool:
    return not any(0 in h for k, h in hist.items() if k.startswith("eval/"))
