"""Train one run: ``python experiments/train.py [algorithm=s2lpo learner=toy_l explorer=toy_m ...]``."""

import hydra
from omegaconf import DictConfig

from s2lpo.cli.console import run_training


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return run_training(cfg)


if __name__ == "__main__":
    main()
