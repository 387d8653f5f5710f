"""Registry of reward functions ``fn(completion_text, ground_truth) -> float`` (verl-style decorator)."""

from __future__ import annotations

from collections.abc import Callable

from s2lpo.algo.registry import Registry
from s2lpo.data.toy import parse_answer

RewardFn = Callable[[str, str], float]
REWARDS: Registry[RewardFn] = Registry("reward")
register_reward = REWARDS.register
get_reward_fn = REWARDS.get_fn


def token_scorer(tok, name: str) -> Callable[[list[int], str], float]:
    """``score(token_ids, ground_truth)``: decode a completion (special tokens dropped) and reward it."""
    fn = get_reward_fn(name)
    return lambda tokens, truth: fn(tok.decode(tokens, skip_special_tokens=True), truth)


@register_reward("toy_arith")
def toy_arith(completion: str, ground_truth: str) -> float:
    """1.0 when the integer after ``####`` equals the ground truth, else 0.0."""
    ans = parse_answer(completion)
    return float(ans is not None and ans == int(ground_truth))
