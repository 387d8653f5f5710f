"""Evaluate a model (or a trained run) on prepared benchmarks: pass@k for k <= n and mean@n per benchmark.

    python experiments/evaluate.py learner=qwen3_8b 'eval.benchmarks=[data/processed/aime24/test.parquet]'
    python experiments/evaluate.py eval.run_dir=runs/<run id> 'eval.benchmarks=[...]' eval.preset=think
    python experiments/evaluate.py -m learner=qwen3_1_7b,qwen3_4b,qwen3_8b,qwen3_14b eval.n=64 ...   # a family

Results go to an eval run (journal, MLflow, W&B) tagged kind=eval: analysis/specs/paper/fig2_passk_vs_k.yaml
draws pass@k vs k for every model of a family from them.
"""

import hydra
from omegaconf import DictConfig

from s2lpo.cli.console import console, exit_on_config_error
from s2lpo.eval.driver import evaluate_model


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    exit_on_config_error(evaluate_model)(cfg, log=console.print)


if __name__ == "__main__":
    main()
