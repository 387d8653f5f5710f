"""Reward functions, one registry for both backends."""

from s2lpo.rewards.registry import get_reward_fn, register_reward, token_scorer

__all__ = ["get_reward_fn", "register_reward", "token_scorer"]
