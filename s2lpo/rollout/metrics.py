"""Per-step rollout, outcome and compute metrics: one namespace for every backend (the local trainer
computes them from its rows, the verl extension from verl's rollout batch)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from s2lpo.algo.plan import EXPLORER, SOURCES, GroupPlan


def source_metrics(sources: Sequence[str], rewards: Sequence[float], lengths: Sequence[int],
                   generated: Sequence[int], trained_tokens: int, plan: GroupPlan, learner_params: int,
                   explorer_params: int, cum: dict[str, float]) -> dict[str, float]:
    """``rollout/<source>/{count,reward_mean,response_length}``, ``compute/<source>/{tokens,flops}`` for this
    step and cumulative (``cum`` is updated in place), FLOPs estimated as 2 * params * generated tokens
    (a guided row's reference prefix is not generated) and 6 * learner params * trained tokens."""
    out: dict[str, float] = {"train/n_explorer": plan.n_explorer, "train/n_guided": plan.n_guided,
                             "train/n_learner": plan.n_learner}
    for src in SOURCES:
        mine = [i for i, s in enumerate(sources) if s == src]
        gen = float(sum(generated[i] for i in mine))
        flops = 2.0 * (explorer_params if src == EXPLORER else learner_params) * gen
        out[f"rollout/{src}/count"] = len(mine)
        if mine:
            out[f"rollout/{src}/reward_mean"] = sum(rewards[i] for i in mine) / len(mine)
            out[f"rollout/{src}/response_length"] = sum(lengths[i] for i in mine) / len(mine)
        cum[f"{src}/tokens"] = cum.get(f"{src}/tokens", 0.0) + gen
        cum[f"{src}/flops"] = cum.get(f"{src}/flops", 0.0) + flops
        out[f"compute/{src}/tokens"] = gen
        out[f"compute/{src}/flops"] = flops
        out[f"compute/{src}/tokens_cum"] = cum[f"{src}/tokens"]
        out[f"compute/{src}/flops_cum"] = cum[f"{src}/flops"]
    cum["train/flops"] = cum.get("train/flops", 0.0) + 6.0 * learner_params * trained_tokens
    out["compute/train/flops_cum"] = cum["train/flops"]
    out["compute/rollout_flops_cum"] = sum(cum[f"{s}/flops"] for s in SOURCES)
    out["compute/total_flops_cum"] = out["compute/rollout_flops_cum"] + cum["train/flops"]  # rollout + training
    return out


def outcome_metrics(scores: Sequence[float], groups: Sequence[Hashable],
                    sources: Sequence[str] | None = None) -> dict[str, float]:
    """Reward and accuracy of a step over all rows, the share of groups all/none solved, and the share of
    rows with a learning signal (a reward different from its group's mean, i.e. a non-zero GRPO advantage).

    With each row's source: ``train/groups_with_signal`` (share of groups whose rewards differ) and
    ``train/signal_from_explorer_only``, the share of those groups whose signal only the explorer's rows
    created: the learner's own rows all got one reward and an explorer row did better (or there were no own
    rows) — S2L-PO's stated mechanism, explorer rows giving signal in groups where the learner's rows all fail."""
    per_group: dict[Hashable, list[float]] = {}
    own: dict[Hashable, set[float]] = {}
    for i, (g, s) in enumerate(zip(groups, scores)):
        per_group.setdefault(g, []).append(float(s))
        if sources is not None and sources[i] != EXPLORER:
            own.setdefault(g, set()).add(float(s))
    means = {g: sum(v) / len(v) for g, v in per_group.items()}
    n, n_groups = len(scores), len(per_group)
    out = {"train/reward_mean": sum(scores) / n,
           "train/accuracy": sum(s > 0 for s in scores) / n,
           "train/groups_all_solved": sum(min(v) > 0 for v in per_group.values()) / n_groups,
           "train/groups_none_solved": sum(max(v) <= 0 for v in per_group.values()) / n_groups,
           "train/rows_with_signal": sum(abs(s - means[g]) > 1e-6 for g, s in zip(groups, scores)) / n}
    if sources is not None:
        signal = [g for g, v in per_group.items() if max(v) - min(v) > 1e-6]
        out["train/groups_with_signal"] = len(signal) / n_groups
        only = [g for g in signal if not own.get(g) or (len(own[g]) == 1 and max(own[g]) < max(per_group[g]))]
        out["train/signal_from_explorer_only"] = len(only) / len(signal) if signal else 0.0
    return out
