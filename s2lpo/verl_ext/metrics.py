"""verl's rollout batches and metrics in s2lpo's metric namespace (the local backend's names).

- ``step_metrics``: a training batch as the manager sees it after generation (rewards streamed by verl's
  reward loop as ``rm_scores``): per-source rollout/compute metrics and the outcome metrics, computed by the
  same functions as the local trainer's.
- ``eval_metrics``: a validation batch: ``eval/<data_source>/pass@<k>`` (unbiased pass@k over each prompt's
  samples, the local trainer's estimator; verl pads a batch to its worker count with copies of its first
  rows, which are dropped).
- ``map_verl``: a dict verl's trainer logged, renamed where the local backend has the same quantity; the
  rest kept under ``verl/…`` (nothing verl measures is lost).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from s2lpo.algo.plan import GUIDED, GroupPlan
from s2lpo.eval.passk import mean_pass_at_k
from s2lpo.eval.runner import power_of_two_ks, size_metrics
from s2lpo.rollout.metrics import outcome_metrics, source_metrics

# verl's name -> ours, for quantities both backends measure the same way
VERL_TO_OURS = {
    "actor/pg_loss": "train/pg_loss",
    "actor/pg_clipfrac": "train/pg_clipfrac",
    "actor/ppo_kl": "train/ppo_kl",
    "actor/kl_loss": "train/kl_loss",
    "actor/grad_norm": "train/grad_norm",
    "actor/lr": "train/lr",
    "response_length/mean": "train/response_length",
    "timing_s/step": "time/step_s",
    "timing_s/gen": "time/generate_s",
}
# computed by s2lpo from the batch instead (verl's versions are kept under verl/…)
OURS_FROM_BATCH = ("train/reward_mean", "train/accuracy")


def scores_of(batch) -> list[float]:
    return batch.batch["rm_scores"].sum(-1).tolist()


def response_lengths(batch) -> list[int]:
    p = batch.batch["prompts"].shape[1]
    return batch.batch["attention_mask"][:, p:].sum(-1).tolist()


def step_metrics(batch, uids: Sequence[str], sources: Sequence[str], plan: GroupPlan, guidance_length: int,
                 learner_params: int, explorer_params: int, cum: dict[str, float]) -> dict[str, float]:
    scores, lengths = scores_of(batch), response_lengths(batch)
    generated = [n - min(guidance_length, n) if s == GUIDED else n for s, n in zip(sources, lengths)]
    trained = int(batch.batch["attention_mask"].sum())
    out = source_metrics(sources, scores, lengths, generated, trained, plan, learner_params, explorer_params, cum)
    out.update(outcome_metrics(scores, list(uids), list(sources)))
    return out


def eval_metrics(batch, uids: Sequence[str], data_sources: Sequence[str], n_samples: int) -> dict[str, float]:
    counts: dict[str, dict[str, list[int]]] = {}  # data source -> uid -> [n, correct]
    for uid, src, s in zip(uids, data_sources, scores_of(batch)):
        nc = counts.setdefault(str(src), {}).setdefault(str(uid), [0, 0])
        if nc[0] < n_samples:  # rows beyond n per prompt are verl's padding copies
            nc[0] += 1
            nc[1] += int(s > 0)
    out: dict[str, float] = {}
    for src, per_uid in counts.items():
        ns, cs = [v[0] for v in per_uid.values()], [v[1] for v in per_uid.values()]
        for k in power_of_two_ks(min(ns)):
            out[f"eval/{src}/pass@{k}"] = mean_pass_at_k(ns, cs, k)
        out.update(size_metrics(str(src), len(per_uid), min(ns)))
    return out


def map_verl(data: dict) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in data.items():
        try:
            v = float(value)
        except (TypeError, ValueError):
            continue
        if not np.isfinite(v):
            continue
        out[f"verl/{key}"] = v
        if key in VERL_TO_OURS:
            out[VERL_TO_OURS[key]] = v
    if "train/pg_loss" in out:
        out["train/loss"] = out["train/pg_loss"] + out.get("verl/actor/kl_coef", 0.0) * out.get("train/kl_loss", 0.0)
    return out
