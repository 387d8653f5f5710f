"""Evaluation runner: n samples per problem, pass@k for k <= n, mean@n (= the paper's Pass@1)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from s2lpo.eval.passk import mean_pass_at_k
from s2lpo.rollout.sampler import SamplingParams, sample


@dataclass
class EvalResult:
    n: int
    correct: list[int]  # correct samples per problem
    tokens: int  # generated tokens

    def pass_at(self, k: int) -> float:
        return mean_pass_at_k([self.n] * len(self.correct), self.correct, k)

    def curve(self, ks: list[int]) -> dict[int, float]:
        return {k: self.pass_at(k) for k in ks if k <= self.n}

    def size(self, bench: str) -> dict[str, float]:
        """``eval/<bench>/n_problems`` and ``n_samples``: what a table's caption says a number is over."""
        return size_metrics(bench, len(self.correct), self.n)


def size_metrics(bench: str, problems: int, samples: int) -> dict[str, float]:
    return {f"eval/{bench}/n_problems": float(problems), f"eval/{bench}/n_samples": float(samples)}


def evaluate(model, tok, problems, reward_fn, n: int, params: SamplingParams, seed: int,
             batch_size: int = 512) -> EvalResult:
    """Sample ``n`` completions for every problem and count the rewarded ones."""
    g = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    ctx = [tok(p.prompt, add_special_tokens=False)["input_ids"] for p in problems]
    flat = [c for c in ctx for _ in range(n)]
    samples = sample(model, flat, params, tok.eos_token_id, tok.pad_token_id, g, batch_size)
    texts = tok.batch_decode([s.tokens for s in samples], skip_special_tokens=True)
    correct = [0] * len(problems)
    for i, t in enumerate(texts):
        correct[i // n] += int(reward_fn(t, str(problems[i // n].answer)) > 0)
    return EvalResult(n, correct, sum(len(s.tokens) for s in samples))


def power_of_two_ks(n: int) -> list[int]:
    ks, k = [], 1
    while k <= n:
        ks.append(k)
        k *= 2
    return ks
