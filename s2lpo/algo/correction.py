"""Off-policy correction ablations for explorer rows (the paper applies none).

* ``none``: explorer tokens are treated like on-policy ones; old log-probs are the learner's.
* ``truncated_is``: explorer tokens are weighted by ``min(pi_old / pi_explorer, cap)`` (the learner's
  recomputed old probability over the explorer's behaviour probability), through verl's
  ``rollout_is_weights`` argument of the policy loss.
* ``shaping``: LUFFY-style policy shaping: explorer tokens use ``-A * p / (p + gamma)`` with
  ``p = pi_theta(token)`` instead of the clipped ratio, which keeps gradients on low-probability
  tokens; learner tokens keep verl's clipped objective. Both parts share the batch's normaliser.
"""

from __future__ import annotations

import torch

from s2lpo.algo import grpo

CORRECTIONS = ("none", "truncated_is", "shaping")


def truncated_is_weights(
    old_log_prob: torch.Tensor, behavior_log_prob: torch.Tensor, offpolicy_rows: torch.Tensor, cap: float
) -> torch.Tensor:
    """Per-token weights: ``min(exp(old - behavior), cap)`` on off-policy rows, 1 elsewhere (no grad)."""
    w = torch.exp((old_log_prob - behavior_log_prob).clamp(-20, 20)).clamp(max=cap)
    return torch.where(offpolicy_rows[:, None], w, torch.ones_like(w)).detach()


def shaped_policy_loss(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    offpolicy_rows: torch.Tensor,
    config,
    gamma: float = 0.1,
) -> tuple[torch.Tensor, dict[str, float]]:
    """verl's vanilla loss on on-policy rows plus the shaping term on off-policy rows."""
    on = (~offpolicy_rows).float()[:, None].expand_as(log_prob)
    base, metrics = grpo.policy_loss(old_log_prob, log_prob, advantages, response_mask, config, rollout_is_weights=on)
    p = log_prob.exp()
    shaped = -advantages * p / (p + gamma) * offpolicy_rows.float()[:, None]
    return base + grpo.agg(shaped, response_mask, config.loss_agg_mode, **config.global_batch_info), metrics
