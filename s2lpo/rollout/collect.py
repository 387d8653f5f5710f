"""The rollout phase of one local training step: explorer rows from the cache (generated on a miss), guided
and learner rows sampled from the learner in one batch, every row scored. Imports algo, models and rollout."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from s2lpo.algo.draw import draw_slots
from s2lpo.algo.plan import EXPLORER, GUIDED, LEARNER, GroupPlan
from s2lpo.algo.seeds import step_seed
from s2lpo.data.toy import Problem
from s2lpo.models.resolve import load_model
from s2lpo.rollout.batch import Row
from s2lpo.rollout.explorer_cache import ExplorerCache, prompt_key
from s2lpo.rollout.sampler import SamplingParams, sample


class Rollout:
    """Groups stay contiguous with explorer rows first; every draw is seeded by (seed, step), so a resumed run
    collects the same rows."""

    def __init__(self, problems: list[Problem], tok, cache: ExplorerCache | None, explorer_path: Path | None,
                 params: SamplingParams, score: Callable[[list[int], str], float], seed: int, batch_size: int,
                 device: torch.device, pool: int = 0):
        self.problems, self.tok, self.cache, self.explorer_path = problems, tok, cache, explorer_path
        self.params, self.score, self.seed, self.batch_size, self.device = params, score, seed, batch_size, device
        self.pool = pool  # cached explorer samples per prompt; a group draws its explorer rows from them
        self.prompt_ids = [tok(p.prompt, add_special_tokens=False)["input_ids"] for p in problems]
        self.ref_ids = [tok(p.solution, add_special_tokens=False)["input_ids"] for p in problems]
        self.explorer = None  # loaded on the first cache miss only

    def explorer_rows(self, step: int, plan: GroupPlan, idx: list[int]) -> tuple[list[Row], int]:
        """Each group's ``plan.n_explorer`` rows drawn from its prompt's cached pool; returns (rows, samples
        generated on a miss)."""
        need = [self.prompt_ids[i] for i in idx]
        misses = 0
        if self.cache.missing(need, self.pool):
            if self.explorer is None:
                self.explorer = load_model(self.explorer_path, self.device).eval()
            misses = self.cache.fill(self.explorer, need, [str(self.problems[i].answer) for i in idx], self.pool,
                                     self.score, self.tok.eos_token_id, self.tok.pad_token_id,
                                     step_seed(self.seed, step, "explorer"), self.batch_size)
        rows = []
        for g, i in enumerate(idx):
            for j in draw_slots(self.seed, step, prompt_key(self.prompt_ids[i]), plan.n_explorer, self.pool):
                s = self.cache.get(self.prompt_ids[i], j)
                rows.append(Row(g, EXPLORER, self.prompt_ids[i], s.tokens, s.logprobs, 0, s.finish_reason))
        return rows, misses

    def learner_rows(self, step: int, plan: GroupPlan, idx: list[int], guidance_length: int, learner) -> list[Row]:
        """Guided rows (the reference solution's first ``guidance_length`` tokens, then the learner) and learner
        rows, sampled in one batch."""
        ctx, meta = [], []
        for g, i in enumerate(idx):
            prefix = self.ref_ids[i][:guidance_length]
            for _ in range(plan.n_guided):
                ctx.append(self.prompt_ids[i] + prefix)
                meta.append((g, i, GUIDED, prefix))
            for _ in range(plan.n_learner):
                ctx.append(self.prompt_ids[i])
                meta.append((g, i, LEARNER, []))
        if not ctx:
            return []
        if learner.training:  # (train_step leaves it in eval mode: a walk over its modules saved, ~0.3 ms)
            learner.eval()
        gen = torch.Generator(device=self.device).manual_seed(step_seed(self.seed, step, "learner"))
        samples = sample(learner, ctx, self.params, self.tok.eos_token_id, self.tok.pad_token_id, gen, self.batch_size)
        return [Row(g, src, self.prompt_ids[i], prefix + s.tokens, [0.0] * len(prefix) + s.logprobs, len(prefix),
                    s.finish_reason) for (g, i, src, prefix), s in zip(meta, samples)]

    def collect(self, step: int, plan: GroupPlan, idx: list[int], guidance_length: int,
                learner) -> tuple[list[Row], int]:
        rows, misses = self.explorer_rows(step, plan, idx) if plan.n_explorer else ([], 0)
        rows += self.learner_rows(step, plan, idx, guidance_length, learner)
        rows.sort(key=lambda r: r.group)  # stable: groups stay contiguous, explorer rows first
        for r in rows:
            r.reward = self.score(r.response_ids, str(self.problems[idx[r.group]].answer))
        return rows, misses
