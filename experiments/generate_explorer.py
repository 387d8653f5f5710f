"""Fill the explorer rollout cache ahead of training (same overrides as experiments/train.py):

    python experiments/generate_explorer.py explorer=toy_s algorithm=s2lpo
"""

import hydra
from omegaconf import DictConfig

from s2lpo.cli.console import console, exit_on_config_error
from s2lpo.trainer.explorer_fill import fill_explorer_cache


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> None:
    exit_on_config_error(fill_explorer_cache)(cfg, log=console.print)


if __name__ == "__main__":
    main()
