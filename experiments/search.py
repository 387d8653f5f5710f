"""Hyper-parameter search with Optuna over the train config (conf/hparams_search/<name>.yaml):

    python experiments/search.py hparams_search=toy_optuna [other train overrides]

hydra-optuna-sweeper pins optuna<3, so Optuna is driven directly: each trial composes the train
config with the sampled overrides, trains, and reports the metric's last value. Trials are stored in
the search's Optuna storage (sqlite by default), so an interrupted search continues where it stopped.
"""

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from s2lpo.cli.console import run_search_printed


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> None:
    run_search_printed(cfg, list(HydraConfig.get().overrides.task))


if __name__ == "__main__":
    main()
