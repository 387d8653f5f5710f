"""pass@k vs k for every model of the toy family (the paper's motivating experiment, on the toy task):

    python experiments/family_passk.py [family=toy] [+n=64]

Writes results/family_passk.md (k = 1, 2, 4, ..., n) and results/family_passk.csv (every k <= n).
"""

import hydra
from omegaconf import DictConfig

from s2lpo.cli.console import family_passk_printed


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> None:
    family_passk_printed(cfg, cfg.get("n", 64))


if __name__ == "__main__":
    main()
