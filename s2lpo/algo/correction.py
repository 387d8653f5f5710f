"""Off-policy corrections for explorer rows (the paper applies none), as a registry in the style of verl's
``register_policy_loss``: every correction is a policy loss ``fn(old_log_prob, log_prob, advantages,
response_mask, offpolicy_rows, behavior_log_prob, config, params) -> (loss, metrics)``.

* ``none``: explorer tokens are treated like on-policy ones; old log-probs are the learner's.
* ``truncated_is``: explorer tokens are weighted by ``min(pi_old / pi_explorer, cap)`` (the learner's
  recomputed old probability over the explorer's behaviour probability), through verl's
  ``rollout_is_weights`` argument of the policy loss.
* ``shaping``: LUFFY-style policy shaping: explorer tokens use ``-A * p / (p + gamma)`` with
  ``p = pi_theta(token)`` instead of the clipped ratio, which keeps gradients on low-probability
  tokens; learner tokens keep verl's clipped objective. Both parts share the batch's normaliser.

Pure: imports ``algo`` only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from s2lpo.algo import grpo
from s2lpo.algo.registry import Registry


@dataclass(frozen=True)
class CorrectionParams:
    is_cap: float = 2.0  # truncated_is: the weights' upper bound
    shaping_gamma: float = 0.1  # shaping: p / (p + gamma)


CorrectionFn = Callable[..., tuple[torch.Tensor, dict[str, float]]]
CORRECTIONS: Registry[CorrectionFn] = Registry("off-policy correction")
register_correction = CORRECTIONS.register
get_correction = CORRECTIONS.get_fn


def truncated_is_weights(
    old_log_prob: torch.Tensor, behavior_log_prob: torch.Tensor, offpolicy_rows: torch.Tensor, cap: float
) -> torch.Tensor:
    """Per-token weights: ``min(exp(old - behavior), cap)`` on off-policy rows, 1 elsewhere (no grad)."""
    w = torch.exp((old_log_prob - behavior_log_prob).clamp(-20, 20)).clamp(max=cap)
    return torch.where(offpolicy_rows[:, None], w, torch.ones_like(w)).detach()


@register_correction("none")
def no_correction(old_log_prob, log_prob, advantages, response_mask, offpolicy_rows, behavior_log_prob, config,
                  params: CorrectionParams):
    """verl's policy loss on every row alike."""
    return grpo.policy_loss(old_log_prob, log_prob, advantages, response_mask, config)


@register_correction("truncated_is")
def truncated_is_loss(old_log_prob, log_prob, advantages, response_mask, offpolicy_rows, behavior_log_prob, config,
                      params: CorrectionParams):
    """verl's policy loss with the explorer tokens' truncated importance weights."""
    w = truncated_is_weights(old_log_prob, behavior_log_prob, offpolicy_rows, params.is_cap)
    return grpo.policy_loss(old_log_prob, log_prob, advantages, response_mask, config, rollout_is_weights=w)


@register_correction("shaping")
def shaped_policy_loss(old_log_prob, log_prob, advantages, response_mask, offpolicy_rows, behavior_log_prob, config,
                       params: CorrectionParams):
    """verl's vanilla loss on on-policy rows plus the shaping term on off-policy rows."""
    on = (~offpolicy_rows).float()[:, None].expand_as(log_prob)
    base, metrics = grpo.policy_loss(old_log_prob, log_prob, advantages, response_mask, config, rollout_is_weights=on)
    p = log_prob.exp()
    shaped = -advantages * p / (p + params.shaping_gamma) * offpolicy_rows.float()[:, None]
    return base + grpo.agg(shaped, response_mask, config.loss_agg_mode, **config.global_batch_info), metrics
