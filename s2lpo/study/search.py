"""Optuna search over dotted train-config keys (the search space is data: conf/hparams_search/). Returns the
study or raises; ``train`` and ``log`` come from the entry point."""

from __future__ import annotations

from collections.abc import Callable

from hydra import compose
from omegaconf import DictConfig

from s2lpo.config.validate import ConfigError, validate
from s2lpo.tracking.lifecycle import RunResult
from s2lpo.trainer.dispatch import train as train_run

KINDS = ("float", "int", "categorical")


def check_space(space: DictConfig) -> None:
    """Every problem of the search space, as one ConfigError."""
    errs = []
    for key, spec in space.items():
        if spec.get("type") not in KINDS:
            errs.append(f"hparams_search.params.{key}.type={spec.get('type')!r}; use one of {', '.join(KINDS)}")
        elif spec.type == "categorical" and not spec.get("choices"):
            errs.append(f"hparams_search.params.{key}.choices must list at least one value")
        elif spec.type != "categorical" and not spec.get("low", 0) < spec.get("high", 0):
            errs.append(f"hparams_search.params.{key} needs low < high (low={spec.get('low')}, "
                        f"high={spec.get('high')})")
    if errs:
        raise ConfigError(errs)


def suggest(trial, space: DictConfig) -> list[str]:
    out = []
    for key, spec in space.items():
        if spec.type == "float":
            v = trial.suggest_float(key, spec.low, spec.high, log=bool(spec.get("log", False)))
        elif spec.type == "int":
            v = trial.suggest_int(key, spec.low, spec.high, log=bool(spec.get("log", False)))
        else:
            v = trial.suggest_categorical(key, list(spec.choices))
        out.append(f"{key}={v}")
    return out


def run_search(cfg: DictConfig, base_overrides: list[str],
               train: Callable[[DictConfig, str], RunResult] | None = None, log: Callable[[str], None] = print):
    """Run the trials still missing from the search's storage; returns the Optuna study."""
    import optuna

    train = train or (lambda c, _label: train_run(c, log=log))
    hs = cfg.hparams_search
    if hs is None:
        raise ConfigError(["hparams_search is not set; run with hparams_search=<name> (see conf/hparams_search/)"])
    check_space(hs.params)
    validate(cfg)
    base = [o for o in base_overrides if not o.startswith("hparams_search")]
    study = optuna.create_study(study_name=hs.study_name, storage=hs.storage, load_if_exists=True,
                                direction=hs.direction, sampler=optuna.samplers.TPESampler(seed=hs.sampler_seed))

    def objective(trial) -> float:
        trial_cfg = compose("train", overrides=[*base, *suggest(trial, hs.params)])
        result = train(trial_cfg, f"trial {trial.number}")
        value = result.final_metrics.get(hs.metric)
        if value is None:
            raise optuna.TrialPruned(f"{hs.metric} was not logged by {result.run_id}")
        trial.set_user_attr("run_dir", str(result.run_dir))
        return float(value)

    remaining = hs.n_trials - len([t for t in study.trials if t.state.is_finished()])
    if remaining > 0:
        study.optimize(objective, n_trials=remaining)
    return study
