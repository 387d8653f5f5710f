"""What a planned run will cost, from its config alone (no model, no data file is read).

Tokens are upper bounds: every response at ``max_new_tokens``, every prompt at the prompt limit
(``data.max_prompt_length``, else the response limit). FLOPs use the usual dense-transformer rule of
``2 N`` per token forward and ``6 N`` per token forward and backward:

* learner rollouts: ``2 N_learner`` per generated token, for the learner's rows of every step;
* explorer samples: ``2 N_explorer`` per generated token, ``samples_per_prompt`` per prompt drawn at a step
  with explorer rows (generated once, shared by every run with that explorer and sampling, so a sweep's
  total counts them once per explorer-cache job);
* training: ``6 N_learner`` (actor forward and backward) + ``2 N_learner`` (old log-probs, recomputed for
  every row) + ``2 N_learner`` (reference log-probs, with a KL loss) per token of every row.

GPU-hours are the SLURM request (nodes x GPUs per node x time limit), an upper bound of what is used.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from s2lpo.algo.schedule import split_group


@dataclass(frozen=True)
class RunCost:
    learner_rollout_tokens: int
    explorer_tokens: int  # generated into the explorer cache (once per cache group)
    train_tokens: int
    learner_flops: float  # rollouts + training passes of the learner
    explorer_flops: float
    gpus: int
    gpu_hours: float  # the training job's request

    def as_dict(self) -> dict:
        return asdict(self)


def run_cost(c: dict) -> RunCost:
    """``c``: a resolved run config (``OmegaConf.to_container(resolve=True)``)."""
    a, t, d = c["algorithm"], c["trainer"], c["data"]
    G, steps, prompts = int(a["group_size"]), int(t["total_steps"]), int(d["prompts_per_step"])
    t_mix, schedule = int(a["t_mix"]), str(a["schedule"])
    response = int(d["max_new_tokens"])
    prompt = int(d.get("max_prompt_length") or response)
    explorer_rows = sum(split_group(i, G, t_mix, schedule)[0] for i in range(1, steps + 1)) * prompts
    explorer_steps = sum(1 for i in range(1, steps + 1) if split_group(i, G, t_mix, schedule)[0])
    learner_rows = G * steps * prompts - explorer_rows
    n_learner = float(c["learner"].get("params") or 0)
    n_explorer = float((c.get("explorer") or {}).get("params") or 0)
    sampling = (c.get("explorer") or {}).get("sampling") or {}
    pool = int(sampling.get("samples_per_prompt") or 0) if explorer_rows else 0
    explorer_tokens = explorer_steps * prompts * pool * int(sampling.get("max_new_tokens") or response)
    train_tokens = G * steps * prompts * (prompt + response)
    passes = 6 + 2 + (2 if float(a.get("kl_coef") or 0) > 0 else 0)
    res = c["learner"]["resources"]
    gpus = int(res.get("nodes") or 1) * int(res.get("gpus_per_node") or 0)
    return RunCost(learner_rows * response, explorer_tokens, train_tokens,
                   2 * n_learner * learner_rows * response + passes * n_learner * train_tokens,
                   2 * n_explorer * explorer_tokens, gpus, gpus * int(res["timeout_min"]) / 60)
