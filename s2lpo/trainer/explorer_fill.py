"""Fill the explorer cache ahead of training, for every prompt a run can draw (either backend: the verl one
through ``s2lpo.verl_ext.explorer_fill``, which numbers prompts as verl does)."""

from __future__ import annotations

import time
from collections.abc import Callable

from omegaconf import DictConfig

from s2lpo.algo.schedule import split_group
from s2lpo.algo.seeds import batch_indices, step_seed
from s2lpo.models.resolve import load_model
from s2lpo.models.tokenizer import load_tokenizer
from s2lpo.rewards import token_scorer
from s2lpo.rollout.explorer_cache import explorer_cache_for, explorer_sampling
from s2lpo.trainer.setup import resolve
from s2lpo.verl_ext.explorer_fill import fill_verl_explorer_cache


def fill_explorer_cache(cfg: DictConfig, log=print, progress: Callable[[int, int], None] | None = None) -> int:
    """Generate the explorer samples a run of ``cfg`` can draw from: ``explorer.sampling.samples_per_prompt``
    for every prompt a step ``<= t_mix`` draws (a group takes its explorer rows from them, ``s2lpo.algo.draw``);
    returns how many were generated (``progress(done, total)`` as they are)."""
    a = cfg.algorithm
    if a.t_mix == 0:
        return 0
    if cfg.trainer.backend == "verl":  # prompt ids and prompt order as verl builds them
        return fill_verl_explorer_cache(cfg, log=log)
    res = resolve(cfg, log=log)
    tok = load_tokenizer(res.tokenizer_path)
    cache = explorer_cache_for(cfg, res.explorer_path)
    pool = explorer_sampling(cfg)[1]
    slots: dict[int, int] = {}  # prompt index -> samples to cache
    for step in range(1, min(a.t_mix, cfg.trainer.total_steps) + 1):
        if split_group(step, a.group_size, a.t_mix, a.schedule)[0]:
            for i in batch_indices(len(res.train), cfg.data.prompts_per_step, step, cfg.seed):
                slots[i] = pool
    prompts = {i: tok(res.train[i].prompt, add_special_tokens=False)["input_ids"] for i in slots}
    by_n: dict[int, list[int]] = {}
    for i, n in slots.items():
        if cache.missing([prompts[i]], n):
            by_n.setdefault(n, []).append(i)
    if not by_n:
        log(f"explorer cache {cfg.explorer.name}: all {sum(slots.values())} samples already cached")
        return 0
    t0 = time.time()
    model = load_model(res.explorer_path, res.device).eval()
    made, total = 0, sum(len(cache.missing([prompts[i]], n)) for n, idx in by_n.items() for i in idx)
    for n, idx in sorted(by_n.items()):
        made += cache.fill(model, [prompts[i] for i in idx], [str(res.train[i].answer) for i in idx], n,
                           token_scorer(tok, cfg.data.reward),
                           tok.eos_token_id, tok.pad_token_id, step_seed(cfg.seed, n, "explorer-fill"),
                           cfg.trainer.gen_batch_size,
                           (lambda done, base=made: progress(base + done, total)) if progress else None)
    log(f"explorer cache {cfg.explorer.name}: generated {made} samples in {time.time() - t0:.1f}s -> {cache.dir}")
    return made
