"""The mini study: every method of conf/study/<name>.yaml, then results/table.md and a figure.

    python experiments/study.py                    # one seed per method
    python experiments/study.py 'study.seeds=[0,1,2]'
"""

import hydra
from omegaconf import DictConfig

from s2lpo.study import run_study


@hydra.main(version_base="1.3", config_path="../conf", config_name="study")
def main(cfg: DictConfig) -> None:
    run_study(cfg)


if __name__ == "__main__":
    main()
