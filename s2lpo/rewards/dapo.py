"""``dapo``: the training signal of verl's DAPO scorer (``verl.utils.reward_score.math_dapo``), which verl's
default reward routing applies to ``data_source=math_dapo`` rows (DAPO-Math-17k, the paper's training set).

verl's function is called as is (no copy of it here): it reads the last 300 characters of the completion,
takes the last ``Answer:`` line (Minerva-style normalization of units, ``\\text``, ``$``, commas…), else the
last ``\\boxed{}``, and compares normalized strings. It returns ``score`` = +1 / -1 and ``acc``; our
registry's rewards are in [0, 1] (accuracy, pass@k), so ``dapo`` returns ``acc`` as 1.0 / 0.0. verl's
score is ``2 * acc - 1``: with GRPO's advantages normalized by the group's std (the paper's setting) the
two give the same advantages, ``(x - mean) / (std + eps)``, up to the ``eps`` (1e-6).
"""

from __future__ import annotations

from s2lpo.rewards.registry import register_reward


def dapo_score(completion: str, ground_truth: str) -> dict:
    """verl's DAPO scorer's own result: ``{"score": ±1.0, "acc": bool, "pred": str}``."""
    from verl.utils.reward_score.math_dapo import compute_score

    return compute_score(completion, ground_truth)


@register_reward("dapo")
def dapo_reward(completion: str, ground_truth: str) -> float:
    """1.0 when verl's DAPO scorer accepts the completion's ``Answer:`` (or last boxed) answer, else 0.0."""
    return float(bool(dapo_score(completion, str(ground_truth))["acc"]))
