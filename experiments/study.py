"""The mini study: every method of conf/study/<name>.yaml, then results/table.md and a figure.

    python experiments/study.py                    # one seed per method
    python experiments/study.py 'study.seeds=[0,1,2]'
"""

import hydra
from omegaconf import DictConfig

from s2lpo.cli.console import run_study_printed


@hydra.main(version_base="1.3", config_path="../conf", config_name="study")
def main(cfg: DictConfig) -> None:
    run_study_printed(cfg)


if __name__ == "__main__":
    main()
