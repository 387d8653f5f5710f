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


def compose_many(runs: list[list[str]], config_name: str = "train") -> list:
    """``[compose(ov) for ov in runs]``, faster: Hydra composes once per distinct set of config-group
    choices and plain value overrides (``seed=1``, ``trainer.lr=1e-5``) are applied to a copy with
    Hydra's own value parser (``+key=v`` adds a key that must not exist, as in Hydra). Runs with
    ``~``/``++`` overrides, sweeps, or ``+`` on a config group are composed in full."""
    import copy

    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf, open_dict

    parser = OverridesParser.create()
    base: dict[tuple[str, ...], object] = {}
    out = []
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        for ov in runs:
            parsed = parser.parse_overrides(list(ov))
            is_group = [o.package is not None or (CONF_DIR / o.key_or_group).is_dir() for o in parsed]
            if any(o.is_delete() or o.is_force_add() or o.is_sweep_override() or (o.is_add() and g)
                   for o, g in zip(parsed, is_group)):
                out.append(hydra_compose(config_name, overrides=list(ov)))
                continue
            groups = tuple(o.input_line for o, g in zip(parsed, is_group) if g)
            if groups not in base:
                base[groups] = hydra_compose(config_name, overrides=list(groups))
            cfg = copy.deepcopy(base[groups])
            with open_dict(cfg):
                for o, g in zip(parsed, is_group):
                    if not g:
                        exists = OmegaConf.select(cfg, o.key_or_group, default="__missing__") != "__missing__"
                        if exists == o.is_add():
                            raise KeyError(f"Could not {'add' if o.is_add() else 'override'} '{o.key_or_group}'"
                                           f" ({'it exists' if exists else f'no such key; use +{o.input_line}'})")
                        OmegaConf.update(cfg, o.key_or_group, o.value(), merge=False)
            out.append(cfg)
    return out


class TrainJob(submitit.helpers.Checkpointable):
    def __call__(self, overrides: list[str]) -> dict[str, float]:
        import os

        from s2lpo.trainer.dispatch import train

        # sbatch exports the submitter's environment: a W&B service of the submitting process (another
        # node, or gone) must not be joined; this job starts its own
        os.environ.pop("WANDB_SERVICE", None)
        cfg = compose(overrides)
        if cfg.trainer.backend == "verl" and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
            from s2lpo.verl_ext.ray_cluster import ray_cluster

            shared = submitit.JobEnvironment().paths.folder
            with ray_cluster(shared, gpus_per_node=int(cfg.learner.resources.gpus_per_node)) as head:
                if head is None:  # a worker node's task: its raylet served the run until the head stopped
                    return {}
                res = train(cfg, log=print)
        else:
            res = train(cfg, log=print)
        if res.status != "finished":
            raise RuntimeError(f"run {res.run_id} ended {res.status}")
        return res.final_metrics

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        from s2lpo.tracking.lifecycle import PREEMPTING

        PREEMPTING.set()  # the run's manifest and trackers end as "preempted", not "killed"
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


class ExplorerCacheJob(submitit.helpers.Checkpointable):
    """Fill the explorer cache for every run of a group (runs sharing an explorer and its sampling).
    Filling is idempotent (only missing entries are generated), so a requeued job just goes on."""

    def __call__(self, runs: list[list[str]]) -> int:
        from s2lpo.trainer.explorer_fill import fill_explorer_cache

        return sum(fill_explorer_cache(compose(ov), log=print) for ov in runs)
