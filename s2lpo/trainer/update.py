"""One policy update of the local trainer: advantages over each combined group, then
``ppo_epochs`` x ``mini_batches`` optimizer steps with verl's policy loss."""

from __future__ import annotations

import torch

from s2lpo.algo import correction, grpo
from s2lpo.algo.plan import EXPLORER
from s2lpo.trainer.batch import Row, collate, response_log_probs
from s2lpo.trainer.metrics import outcome_metrics


def zero_grads(model) -> None:
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)


def train_step(learner, ref, opt, rows: list[Row], pad_id: int, device, aconf, a, train_T: float, t,
               skip_zero_advantage: bool = True) -> dict:
    """Update ``learner`` on ``rows`` and return the step's training metrics.

    Rows whose advantage is zero everywhere (groups where every row got the same reward) contribute
    exactly nothing to the policy-gradient loss; with ``skip_zero_advantage`` (and no KL term) they are
    left out of the forward and backward passes while the loss keeps the whole mini-batch's normaliser
    (verl's ``global_batch_info``), so the gradient is the same as with them, for less compute.
    Old log-probs are the learner's own: with one epoch and one mini-batch they are this forward's,
    detached (the same weights), otherwise a separate no-grad pass before the first update.
    """
    batch = collate(rows, pad_id, device)
    scores = torch.tensor([r.reward for r in rows], device=device)
    groups = [r.group for r in rows]
    adv = grpo.group_advantages(scores, batch.response_mask, groups, a.norm_adv_by_std)
    loss_mask = batch.response_mask * (~batch.guidance_mask).float() if a.guidance.mask_guidance else batch.response_mask
    offpolicy = torch.tensor([r.source == EXPLORER for r in rows], device=device)
    has_signal = adv.abs().sum(-1) > 0
    skip = skip_zero_advantage and ref is None
    fused = t.ppo_epochs == 1 and t.mini_batches == 1
    learner.train()
    old_logp = ref_logp = None
    if not fused:
        with torch.no_grad():
            old_logp = response_log_probs(learner, batch, train_T)
    if ref is not None:
        with torch.no_grad():
            ref_logp = response_log_probs(ref, batch, train_T)
    out: dict[str, float] = {}
    for _ in range(t.ppo_epochs):
        for mb in range(t.mini_batches):
            in_mb = torch.tensor([g % t.mini_batches == mb for g in groups], device=device)
            full = loss_mask[in_mb]
            aconf.global_batch_info.clear()
            aconf.global_batch_info.update(batch_num_tokens=full.sum(), global_batch_size=(full.sum(-1) > 0).sum())
            sel = torch.nonzero(in_mb & has_signal if skip else in_mb).squeeze(-1)
            opt.zero_grad(set_to_none=True)
            if len(sel) == 0:  # no learning signal: the same optimizer step a zero gradient gives
                zero_grads(learner)
                pg = loss = torch.zeros((), device=device)
                pm = {"actor/pg_clipfrac": 0.0, "actor/ppo_kl": 0.0}
            else:
                b = batch.select(sel)
                logp = response_log_probs(learner, b, train_T)
                old = logp.detach() if fused else old_logp[sel]
                mask, madv, off = loss_mask[sel], adv[sel], offpolicy[sel]
                if a.offpolicy_correction == "shaping":
                    pg, pm = correction.shaped_policy_loss(old, logp, madv, mask, off, aconf, a.shaping_gamma)
                else:
                    w = (correction.truncated_is_weights(old, b.behavior_log_prob, off, a.is_cap)
                         if a.offpolicy_correction == "truncated_is" else None)
                    pg, pm = grpo.policy_loss(old, logp, madv, mask, aconf, rollout_is_weights=w)
                loss = pg
                if ref_logp is not None:
                    kl = grpo.kl_loss(logp, ref_logp[sel], mask, a.kl_type, a.loss_agg_mode)
                    loss = loss + a.kl_coef * kl
                    out["train/kl_loss"] = kl.item()
                loss.backward()
            gn = torch.nn.utils.clip_grad_norm_(learner.parameters(), t.grad_clip)
            opt.step()
            out.update({"train/pg_loss": pg.item(), "train/loss": loss.item(), "train/grad_norm": gn.item(),
                        "train/pg_clipfrac": pm["actor/pg_clipfrac"], "train/ppo_kl": pm["actor/ppo_kl"]})
    aconf.global_batch_info.clear()
    learner.eval()
    out.update(outcome_metrics(scores.tolist(), groups))
    out["train/response_length"] = float(batch.response_mask.sum(-1).mean())
    return out
