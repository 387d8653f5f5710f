"""GRPO math, taken from verl's ``core_algos`` (the one source of it), on plain tensors.

Nothing here re-implements verl: these are thin adapters that put our rows into the shapes verl's
functions expect (rewards at the last response token, a numpy group index, an ``ActorConfig``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from verl.workers.config import ActorConfig


@functools.cache
def verl_core_algos():
    """verl's ``core_algos``, imported on first use: importing verl takes ~10 s (tensordict, transformers), which a
    config check, a rejected override or a sweep's status need not wait for. Importing verl also calls
    ``logging.basicConfig`` (a root handler and level): the application configures logging, not a library (with
    it, Hydra's --info and every log line printed twice), so that is undone."""
    root, handlers, level = logging.getLogger(), list(logging.getLogger().handlers), logging.getLogger().level
    from verl.trainer.ppo import core_algos

    for h in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(h)
    root.setLevel(level)
    return core_algos


def actor_config(
    group_size: int,
    clip_ratio: float = 0.2,
    clip_ratio_low: float | None = None,
    clip_ratio_high: float | None = None,
    clip_ratio_c: float = 3.0,
    loss_agg_mode: str = "token-mean",
) -> ActorConfig:
    """The verl ``ActorConfig`` that the policy loss reads its clip ratios from (CPU friendly)."""
    verl_core_algos()  # verl imported (and its logging set-up undone) first
    from verl.workers.config import ActorConfig

    return ActorConfig(
        strategy="fsdp",
        rollout_n=group_size,
        ppo_mini_batch_size=1,
        ppo_micro_batch_size_per_gpu=1,
        clip_ratio=clip_ratio,
        clip_ratio_low=clip_ratio if clip_ratio_low is None else clip_ratio_low,
        clip_ratio_high=clip_ratio if clip_ratio_high is None else clip_ratio_high,
        clip_ratio_c=clip_ratio_c,
        loss_agg_mode=loss_agg_mode,
    )


def token_level_rewards(scores: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Outcome rewards placed on each row's last response token, as verl's reward managers do."""
    rewards = torch.zeros_like(response_mask, dtype=torch.float32)
    lengths = response_mask.sum(-1).long()
    rows = torch.arange(len(scores))
    last = (lengths - 1).clamp(min=0)
    rewards[rows, last] = scores.float() * (lengths > 0).float()
    return rewards


def group_advantages(
    scores: torch.Tensor,
    response_mask: torch.Tensor,
    group_ids: Sequence[int] | np.ndarray,
    norm_by_std: bool = True,
    epsilon: float = 1e-6,
) -> torch.Tensor:
    """Group-relative advantages over each combined group (explorer, guided and learner rows alike)."""
    adv, _ = verl_core_algos().compute_grpo_outcome_advantage(
        token_level_rewards=token_level_rewards(scores, response_mask),
        response_mask=response_mask.float(),
        index=np.asarray(group_ids),
        epsilon=epsilon,
        norm_adv_by_std_in_grpo=norm_by_std,
    )
    return adv


def policy_loss(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    config: ActorConfig,
    loss_name: str = "vanilla",
    rollout_is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """verl's registered policy loss (``vanilla`` = clipped PPO/GRPO objective)."""
    fn = verl_core_algos().get_policy_loss_fn(loss_name)
    return fn(
        old_log_prob=old_log_prob,
        log_prob=log_prob,
        advantages=advantages,
        response_mask=response_mask.float(),
        loss_agg_mode=config.loss_agg_mode,
        config=config,
        rollout_is_weights=rollout_is_weights,
    )


def kl_loss(
    log_prob: torch.Tensor,
    ref_log_prob: torch.Tensor,
    response_mask: torch.Tensor,
    kl_type: str = "low_var_kl",
    loss_agg_mode: str = "token-mean",
) -> torch.Tensor:
    """KL to the reference policy with verl's estimator and aggregation."""
    core_algos = verl_core_algos()
    kld = core_algos.kl_penalty(log_prob, ref_log_prob, kl_penalty=kl_type)
    return core_algos.agg_loss(kld, response_mask.float(), loss_agg_mode)


def agg(loss_mat: torch.Tensor, mask: torch.Tensor, loss_agg_mode: str, **global_batch_info) -> torch.Tensor:
    """verl's ``agg_loss``; ``global_batch_info`` (batch_num_tokens, global_batch_size) sets the normaliser."""
    return verl_core_algos().agg_loss(loss_mat, mask.float(), loss_agg_mode, **global_batch_info)
