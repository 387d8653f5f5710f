"""Hyper-parameter search with Optuna over the train config (conf/hparams_search/<name>.yaml):

    python experiments/search.py hparams_search=toy_optuna [other train overrides]

hydra-optuna-sweeper pins optuna<3, so Optuna is driven directly: each trial composes the train
config with the sampled overrides, trains, and reports the metric's last value. Trials are stored in
the search's Optuna storage (sqlite by default), so an interrupted search continues where it stopped.
"""

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from s2lpo.cli_utils import console, exit_on_config_error
from s2lpo.search import run_search


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> None:
    if cfg.hparams_search is None:
        console.print("[red]hparams_search is not set; run with hparams_search=<name> (see conf/hparams_search/)[/red]")
        sys.exit(2)
    exit_on_config_error(run_search)(cfg, list(HydraConfig.get().overrides.task))


if __name__ == "__main__":
    main()
