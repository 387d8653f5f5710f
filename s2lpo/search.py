"""Optuna search over dotted train-config keys (the search space is data: conf/hparams_search/)."""

from __future__ import annotations

from hydra import compose
from omegaconf import DictConfig, OmegaConf

from s2lpo.cli_utils import console, train_with_progress
from s2lpo.config.validate import validate

KINDS = ("float", "int", "categorical")


def check_space(space: DictConfig) -> None:
    for key, spec in space.items():
        if spec.get("type") not in KINDS:
            raise ValueError(f"hparams_search.params.{key}.type={spec.get('type')!r}; use one of {', '.join(KINDS)}")
        if spec.type == "categorical" and not spec.get("choices"):
            raise ValueError(f"hparams_search.params.{key}.choices must list at least one value")
        if spec.type != "categorical" and not spec.get("low", 0) < spec.get("high", 0):
            raise ValueError(f"hparams_search.params.{key} needs low < high")


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


def run_search(cfg: DictConfig, base_overrides: list[str]):
    import optuna

    hs = cfg.hparams_search
    check_space(hs.params)
    validate(cfg)
    base = [o for o in base_overrides if not o.startswith("hparams_search")]
    study = optuna.create_study(study_name=hs.study_name, storage=hs.storage, load_if_exists=True,
                                direction=hs.direction, sampler=optuna.samplers.TPESampler(seed=hs.sampler_seed))

    def objective(trial) -> float:
        trial_cfg = compose("train", overrides=[*base, *suggest(trial, hs.params)])
        result = train_with_progress(trial_cfg, label=f"trial {trial.number}")
        value = result.final_metrics.get(hs.metric)
        if value is None:
            raise optuna.TrialPruned(f"{hs.metric} was not logged by {result.run_id}")
        trial.set_user_attr("run_dir", str(result.run_dir))
        return float(value)

    remaining = hs.n_trials - len([t for t in study.trials if t.state.is_finished()])
    if remaining > 0:
        study.optimize(objective, n_trials=remaining)
    best = study.best_trial
    console.print(f"best {hs.metric} = {best.value:.4f} with {OmegaConf.to_yaml(OmegaConf.create(best.params))}")
    return study
