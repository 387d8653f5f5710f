"""Per-source rollout and compute metrics (one namespace for every backend)."""

from __future__ import annotations

from s2lpo.algo.plan import EXPLORER, SOURCES, GroupPlan
from s2lpo.trainer.batch import Row


def source_metrics(rows: list[Row], plan: GroupPlan, learner_params: int, explorer_params: int,
                   cum: dict[str, float]) -> dict[str, float]:
    """``rollout/<source>/{count,reward_mean,response_length}``, ``compute/<source>/{tokens,flops}`` for this
    step and cumulative (``cum`` is updated in place), FLOPs estimated as 2 * params * generated tokens."""
    out: dict[str, float] = {"train/n_explorer": plan.n_explorer, "train/n_guided": plan.n_guided,
                             "train/n_learner": plan.n_learner}
    for src in SOURCES:
        mine = [r for r in rows if r.source == src]
        generated = sum(len(r.response_ids) - r.n_guidance for r in mine)
        flops = 2.0 * (explorer_params if src == EXPLORER else learner_params) * generated
        out[f"rollout/{src}/count"] = len(mine)
        if mine:
            out[f"rollout/{src}/reward_mean"] = sum(r.reward for r in mine) / len(mine)
            out[f"rollout/{src}/response_length"] = sum(len(r.response_ids) for r in mine) / len(mine)
        cum[f"{src}/tokens"] = cum.get(f"{src}/tokens", 0.0) + generated
        cum[f"{src}/flops"] = cum.get(f"{src}/flops", 0.0) + flops
        out[f"compute/{src}/tokens"] = generated
        out[f"compute/{src}/flops"] = flops
        out[f"compute/{src}/tokens_cum"] = cum[f"{src}/tokens"]
        out[f"compute/{src}/flops_cum"] = cum[f"{src}/flops"]
    trained = sum(len(r.prompt_ids) + len(r.response_ids) for r in rows)
    cum["train/flops"] = cum.get("train/flops", 0.0) + 6.0 * learner_params * trained
    out["compute/train/flops_cum"] = cum["train/flops"]
    out["compute/rollout_flops_cum"] = sum(cum[f"{s}/flops"] for s in SOURCES)
    return out
