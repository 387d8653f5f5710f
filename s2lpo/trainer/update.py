"""One policy update of the local trainer: advantages over each combined group, then ``ppo_epochs`` x
``mini_batches`` optimizer steps with verl's policy loss through the off-policy correction registry
(``s2lpo.algo.correction``). Imports algo and rollout only."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from s2lpo.algo import grpo
from s2lpo.algo.correction import CorrectionParams, get_correction
from s2lpo.algo.plan import EXPLORER
from s2lpo.rollout.batch import Batch, Row, collate, response_log_probs
from s2lpo.rollout.metrics import outcome_metrics


@dataclass(frozen=True)
class UpdateConfig:
    """What one update needs from the run's config, typed (``from_config`` reads ``algorithm``/``trainer``)."""

    ppo_epochs: int = 1
    mini_batches: int = 1
    grad_clip: float = 1.0
    temperature: float = 1.0  # log-probs are computed at this temperature (token_temp's tempered mode)
    norm_adv_by_std: bool = True
    mask_guidance: bool = False  # G²RPO-A: the reference prefix of guided rows is not trained on
    correction: str = "none"
    correction_params: CorrectionParams = CorrectionParams()
    kl_coef: float = 0.0
    kl_type: str = "low_var_kl"
    loss_agg_mode: str = "token-mean"

    @classmethod
    def from_config(cls, cfg: DictConfig) -> UpdateConfig:
        a, t = cfg.algorithm, cfg.trainer
        return cls(int(t.ppo_epochs), int(t.mini_batches), float(t.grad_clip),
                   float(a.temperature) if a.temperature_mode == "tempered" else 1.0, bool(a.norm_adv_by_std),
                   bool(a.guidance.mask_guidance), str(a.offpolicy_correction),
                   CorrectionParams(float(a.is_cap), float(a.shaping_gamma)), float(a.kl_coef), str(a.kl_type),
                   str(a.loss_agg_mode))


def zero_grads(model) -> None:
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)


def train_step(learner, ref, opt, rows: list[Row], pad_id: int, device, actor, u: UpdateConfig,
               skip_zero_advantage: bool = True) -> dict[str, float]:
    """Update ``learner`` on ``rows`` (``actor``: verl's actor config, ``grpo.actor_config``) and return the
    step's training metrics.

    Rows whose advantage is zero everywhere (groups where every row got the same reward) contribute
    exactly nothing to the policy-gradient loss; with ``skip_zero_advantage`` (and no KL term) they are
    left out of the forward and backward passes while the loss keeps the whole mini-batch's normaliser
    (verl's ``global_batch_info``), so the gradient is the same as with them, for less compute.
    Old log-probs are the learner's own: with one epoch and one mini-batch they are this forward's,
    detached (the same weights), otherwise a separate no-grad pass before the first update.
    """
    policy_loss = get_correction(u.correction)
    batch = collate(rows, pad_id, device)
    scores = torch.tensor([r.reward for r in rows], device=device)
    groups = [r.group for r in rows]
    adv = grpo.group_advantages(scores, batch.response_mask, groups, u.norm_adv_by_std)
    loss_mask = batch.response_mask * (~batch.guidance_mask).float() if u.mask_guidance else batch.response_mask
    offpolicy = torch.tensor([r.source == EXPLORER for r in rows], device=device)
    has_signal = adv.abs().sum(-1) > 0
    skip = skip_zero_advantage and ref is None
    fused = u.ppo_epochs == 1 and u.mini_batches == 1
    learner.train()
    old_logp = ref_logp = None
    if not fused:
        with torch.no_grad():
            old_logp = response_log_probs(learner, batch, u.temperature)
    if ref is not None:
        with torch.no_grad():
            ref_logp = response_log_probs(ref, batch, u.temperature)
    out: dict[str, float] = {}
    for _ in range(u.ppo_epochs):
        for mb in range(u.mini_batches):
            in_mb = torch.tensor([g % u.mini_batches == mb for g in groups], device=device)
            full = loss_mask[in_mb]
            actor.global_batch_info.clear()
            actor.global_batch_info.update(batch_num_tokens=full.sum(), global_batch_size=(full.sum(-1) > 0).sum())
            sel = torch.nonzero(in_mb & has_signal if skip else in_mb).squeeze(-1)
            opt.zero_grad(set_to_none=True)
            if len(sel) == 0:  # no learning signal: the same optimizer step a zero gradient gives
                zero_grads(learner)
                pg = loss = torch.zeros((), device=device)
                pm = {"actor/pg_clipfrac": 0.0, "actor/ppo_kl": 0.0}
            else:
                b = batch.select(sel)  # as wide as these rows need

                def cut(x: torch.Tensor, b: Batch = b, sel: torch.Tensor = sel) -> torch.Tensor:
                    return x[sel, : b.responses.shape[1]]

                logp = response_log_probs(learner, b, u.temperature)
                old = logp.detach() if fused else cut(old_logp)
                mask = cut(loss_mask)
                pg, pm = policy_loss(old, logp, cut(adv), mask, offpolicy[sel], b.behavior_log_prob, actor,
                                     u.correction_params)
                loss = pg
                if ref_logp is not None:
                    kl = grpo.kl_loss(logp, cut(ref_logp), mask, u.kl_type, u.loss_agg_mode)
                    loss = loss + u.kl_coef * kl
                    out["train/kl_loss"] = kl.item()
                loss.backward()
            gn = torch.nn.utils.clip_grad_norm_(learner.parameters(), u.grad_clip)
            opt.step()
            out.update({"train/pg_loss": pg.item(), "train/loss": loss.item(), "train/grad_norm": gn.item(),
                        "train/pg_clipfrac": pm["actor/pg_clipfrac"], "train/ppo_kl": pm["actor/ppo_kl"]})
    actor.global_batch_info.clear()
    learner.eval()
    out.update(outcome_metrics(scores.tolist(), groups, [r.source for r in rows]))
    out["train/response_length"] = float(batch.response_mask.sum(-1).mean())
    return out
