"""Reward functions, one registry for both backends (``toy_arith``, ``math``, ``mcq``, ``dapo``, ``released_*``).
Imports ``data`` and ``algo`` at most."""

from s2lpo.rewards import dapo as _dapo  # noqa: F401 - registers dapo (verl's DAPO scorer)
from s2lpo.rewards import math as _math  # noqa: F401 - registers math and mcq
from s2lpo.rewards import released as _released  # noqa: F401 - registers released_math and released_mcq
from s2lpo.rewards.registry import get_reward_fn, register_reward, token_scorer

__all__ = ["get_reward_fn", "register_reward", "token_scorer"]
