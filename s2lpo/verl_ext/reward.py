"""verl's ``custom_reward_function``: our reward registry, chosen by the row's ``data_source`` (the same
functions score local and verl runs)."""

from __future__ import annotations

from s2lpo.data.prepare import DATASETS
from s2lpo.rewards import get_reward_fn


def compute_score(data_source: str, solution_str: str, ground_truth: str, extra_info=None, **kwargs) -> float:
    ds = DATASETS.get(str(data_source))
    return get_reward_fn(ds.reward if ds else "math")(solution_str, str(ground_truth))
