"""Policy-level against token-level diversity on the toy family, measured (the paper's insight): the explorers,
the learner, and the learner at a high sampling temperature, each a logged run (``kind: diversity``, tagged
``policy``) that ``analysis/`` draws as one figure (``analysis/specs/toy/fig6_diversity.yaml``).

Per policy, ``n`` samples of every held-out problem at the policy's temperature give, at each k = 1, 2, 4 … n:

- ``eval/toy/pass@{k}``: the unbiased pass@k;
- ``diversity/toy/paths@{k}``: distinct correct solution paths among the first k samples, per problem (a path
  is the sequence of worked steps; correct = the right answer reached by coherent steps);
- ``diversity/toy/incoherent@{k}``: the share of samples, among the first k, with a step that does not follow
  from the previous one (``s2lpo.data.toy.solution_path``), constant in k up to sampling noise;

and ``diversity/toy/correct_but_incoherent``: the share of rewarded samples whose steps are incoherent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from s2lpo.algo.seeds import step_seed
from s2lpo.data.toy import solution_path
from s2lpo.eval.benchmarks import eval_run_id
from s2lpo.eval.passk import mean_pass_at_k
from s2lpo.eval.runner import power_of_two_ks
from s2lpo.models.family import weights_digest
from s2lpo.models.resolve import load_model, pick_device, toy_family
from s2lpo.models.tokenizer import load_tokenizer
from s2lpo.rewards import get_reward_fn
from s2lpo.rollout.sampler import SamplingParams, sample
from s2lpo.tracking.lifecycle import RunLifecycle, RunResult


@dataclass(frozen=True)
class Policy:
    name: str  # as the figure labels it: "toy-s", "toy-l · T = 1.3"
    size: str  # the family member
    temperature: float


def diversity_metrics(prompts: list[str], texts: list[list[str]], rewards: list[list[float]]) -> dict[str, float]:
    """The metrics above from each problem's completions (``texts[i]``, in sampling order) and rewards."""
    n = min(len(t) for t in texts)
    paths = [[solution_path(p, t) for t in ts[:n]] for p, ts in zip(prompts, texts)]
    out: dict[str, float] = {}
    for k in power_of_two_ks(n):
        out[f"eval/toy/pass@{k}"] = mean_pass_at_k([n] * len(texts), [sum(x > 0 for x in r[:n]) for r in rewards], k)
        out[f"diversity/toy/paths@{k}"] = sum(
            len({p.steps for p, r in zip(ps[:k], rs) if r > 0 and p.coherent}) for ps, rs in zip(paths, rewards)
        ) / len(paths)
        out[f"diversity/toy/incoherent@{k}"] = sum(not p.coherent for ps in paths for p in ps[:k]) / (k * len(paths))
    right = [p for ps, rs in zip(paths, rewards) for p, r in zip(ps, rs) if r > 0]
    out["diversity/toy/correct_but_incoherent"] = sum(not p.coherent for p in right) / len(right) if right else 0.0
    return out


def policies(cfg: DictConfig, explorers: list[str], learner: str, high_temperature: float) -> list[Policy]:
    t = float(cfg.trainer.eval_temperature)
    return ([Policy(f"toy-{s}", s, t) for s in explorers] + [Policy(f"toy-{learner}", learner, t),
            Policy(f"toy-{learner} · T = {high_temperature:g}", learner, high_temperature)])


def _run_id(cfg: DictConfig, pol: Policy, n: int, model_dir: Path) -> str:
    return eval_run_id(pol.name, weights_digest(model_dir), ["toy"], n, "diversity", int(cfg.seed), [pol.temperature])


def policy_run_dir(cfg: DictConfig, pol: Policy, n: int) -> Path:
    """Where ``pol``'s diversity run of ``n`` samples lives (the family must be built)."""
    d = toy_family(cfg, log=lambda *_: None, sizes=[pol.size]).model_dir(pol.size)
    return Path(cfg.paths.runs_dir).expanduser().resolve() / _run_id(cfg, pol, n, d)


def measure_policy(cfg: DictConfig, pol: Policy, n: int = 32, log: Callable[[str], None] = print) -> RunResult:
    """``pol``'s logged run (reused when it already finished), on the family's held-out problems."""
    family = toy_family(cfg, log=log, sizes=[pol.size])
    d = family.model_dir(pol.size)
    rid = _run_id(cfg, pol, n, d)
    config = {**OmegaConf.to_container(cfg, resolve=True), "kind": "diversity", "policy": pol.name,
              "run_name": f"diversity · {pol.name}"}
    run = RunLifecycle(cfg.paths.runs_dir, config, log, rid=rid, final_prefixes=("eval/", "diversity/"))
    if run.done is not None:
        return run.done
    tok = load_tokenizer(family.tokenizer_dir)
    problems = family.splits().eval
    reward = get_reward_fn(cfg.data.reward)
    with run.running() as tracker:
        model = load_model(d, pick_device(cfg.trainer.device)).eval()
        g = torch.Generator(device=model.device).manual_seed(step_seed(cfg.seed, 0, f"diversity-{pol.name}"))
        ctx = [tok(p.prompt, add_special_tokens=False)["input_ids"] for p in problems for _ in range(n)]
        params = SamplingParams(pol.temperature, 1.0, 0, int(cfg.data.max_new_tokens))
        samples = sample(model, ctx, params, tok.eos_token_id, tok.pad_token_id, g, int(cfg.trainer.gen_batch_size))
        flat = tok.batch_decode([s.tokens for s in samples], skip_special_tokens=True)
        texts = [flat[i * n : (i + 1) * n] for i in range(len(problems))]
        rewards = [[reward(t, str(p.answer)) for t in ts] for p, ts in zip(problems, texts)]
        tracker.log(0, diversity_metrics([p.prompt for p in problems], texts, rewards))
    return run.result


def measure_diversity(cfg: DictConfig, pols: list[Policy], n: int = 32,
                      log: Callable[[str], None] = print) -> list[RunResult]:
    """One logged run per policy (:func:`measure_policy`)."""
    return [measure_policy(cfg, pol, n, log) for pol in pols]


def policy_task(container: dict, pol: dict, n: int, threads: int) -> tuple[str, str]:
    """:func:`measure_policy` in a study's worker process (``s2lpo.study.parallel.Task``)."""
    res = measure_policy(OmegaConf.create(container), Policy(**pol), n, log=lambda *_: None)
    return str(res.run_dir), res.status
