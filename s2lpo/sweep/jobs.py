"""What a SLURM job runs: picklable callables for submitit.

``TrainJob`` is a ``submitit.helpers.Checkpointable`` (submitit finds the hook by
``hasattr(fn, "checkpoint")``): on USR2 (preemption, or the time limit drawing near) submitit calls
``checkpoint``, which marks the run preempting and hands back the same call; submitit requeues the job
(same job id) and the restarted job resumes from the run's last checkpoint, into the same run
directory and the same MLflow and W&B runs (the run id is the config's). Steps after that checkpoint
are trained again and reproduce the same values.
"""

from __future__ import annotations

from pathlib import Path

import submitit

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def compose(overrides: list[str] | tuple[str, ...], config_name: str = "train"):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return hydra_compose(config_name, overrides=list(overrides))


class TrainJob(submitit.helpers.Checkpointable):
    def __call__(self, overrides: list[str]) -> dict[str, float]:
        from s2lpo.trainer.local import train

        res = train(compose(overrides), log=print)
        if res.status != "finished":
            raise RuntimeError(f"run {res.run_id} ended {res.status}")
        return res.final_metrics

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        from s2lpo.trainer.local import PREEMPTING

        PREEMPTING.set()  # the run's manifest and trackers end as "preempted", not "killed"
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


class ExplorerCacheJob(submitit.helpers.Checkpointable):
    """Fill the explorer cache for every run of a group (runs sharing an explorer and its sampling).
    Filling is idempotent (only missing entries are generated), so a requeued job just goes on."""

    def __call__(self, runs: list[list[str]]) -> int:
        from s2lpo.rollout.explorer_fill import fill_explorer_cache

        return sum(fill_explorer_cache(compose(ov), log=print) for ov in runs)
