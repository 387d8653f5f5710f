"""Fill the explorer rollout cache ahead of training (same overrides as experiments/train.py):

    python experiments/generate_explorer.py explorer=toy_s algorithm=s2lpo
"""

import hydra
from omegaconf import DictConfig

from s2lpo.cli.console import fill_explorer_printed


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> None:
    fill_explorer_printed(cfg)


if __name__ == "__main__":
    main()
