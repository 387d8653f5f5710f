"""verl's ``custom_reward_function``: our reward registry, chosen by the row's ``data_source`` (the same
functions score local and verl runs): ``math_dapo`` rows (DAPO-Math-17k) by ``dapo`` (verl's DAPO scorer),
AIME/MATH-500 by ``math``, CommonsenseQA by ``mcq``. ``train_reward`` (the run's ``data.reward``, passed by
``to_verl`` as a reward kwarg) overrides the reward of the training set's rows."""

from __future__ import annotations

from s2lpo.data.prepare import reward_for_source
from s2lpo.rewards import get_reward_fn


def compute_score(data_source: str, solution_str: str, ground_truth: str, extra_info=None,
                  train_reward: str | None = None, **kwargs) -> float:
    name = reward_for_source(data_source)
    if train_reward and (extra_info or {}).get("split") == "train":
        name = train_reward
    return get_reward_fn(name)(solution_str, str(ground_truth))
