"""Fill the explorer cache ahead of training, for every prompt a run can draw."""

from __future__ import annotations

import time

from omegaconf import DictConfig

from s2lpo.algo.schedule import explorer_slots_needed
from s2lpo.models.tokenizer import load_tokenizer
from s2lpo.rewards import get_reward_fn
from s2lpo.trainer.local import explorer_cache_for, load_model
from s2lpo.trainer.setup import resolve, step_seed


def fill_explorer_cache(cfg: DictConfig, log=print) -> int:
    """Generate the explorer samples a run of ``cfg`` needs (all training prompts x the most explorer
    rows any step asks for); returns how many were generated (0 when all were cached)."""
    a = cfg.algorithm
    if a.t_mix == 0:
        return 0
    res = resolve(cfg, log=log)
    tok = load_tokenizer(res.tokenizer_path)
    reward_fn = get_reward_fn(cfg.data.reward)
    cache = explorer_cache_for(cfg, res.explorer_path)
    prompts = [tok(p.prompt, add_special_tokens=False)["input_ids"] for p in res.train]
    n = explorer_slots_needed(a.group_size, a.t_mix, a.schedule)
    if not cache.missing(prompts, n):
        log(f"explorer cache {cfg.explorer.name}: {len(prompts)} prompts x {n} samples already cached")
        return 0
    t0 = time.time()
    model = load_model(res.explorer_path, res.device).eval()
    made = cache.fill(model, prompts, [str(p.answer) for p in res.train], n,
                      lambda t, gt: reward_fn(tok.decode(t, skip_special_tokens=True), gt),
                      tok.eos_token_id, tok.pad_token_id, step_seed(cfg.seed, 0, "explorer-fill"),
                      cfg.trainer.gen_batch_size)
    log(f"explorer cache {cfg.explorer.name}: generated {made} samples in {time.time() - t0:.1f}s -> {cache.dir}")
    return made
