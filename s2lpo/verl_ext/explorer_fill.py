"""The explorer-cache job of the verl backend: every explorer sample a verl run will replay, generated once.

Which prompts: verl's own dataset class and sampler (``create_rl_dataset``/``create_rl_sampler`` with the
run's ``data`` config and seed) are iterated the way verl's trainer iterates them (batches of
``train_batch_size``, ``drop_last``, a new pass per epoch), for the steps ``<= t_mix``; each prompt drawn
at a step with explorer rows gets the explorer's ``samples_per_prompt`` samples (its offline sampling, the
published 32), from which each step draws its ``G_w`` (``s2lpo.algo.draw``). Prompt ids: verl's Continuous Token builder for the
explorer's model type with the data config's chat-template arguments, capped to ``rollout.prompt_length``
as the agent loop caps them, so the explorer agent loop finds them (it checks the ids on every replay).
Generation: vLLM where it is installed and a GPU is visible (``n`` samples per prompt, seeded, log-probs of
the sampled tokens), otherwise the package's HF sampler (CPU). Rewards: the run's reward function on the
decoded text, as verl's reward loop computes them.
"""

from __future__ import annotations

import time

from omegaconf import DictConfig

from s2lpo.algo.schedule import split_group
from s2lpo.rollout.explorer_cache import ExplorerCache
from s2lpo.rollout.sampler import Sample, SamplingParams


def explorer_plan(v: DictConfig, dataset) -> dict[int, int]:
    """dataset index -> explorer samples to cache (``explorer.sampling.samples_per_prompt`` for every prompt
    drawn at a step with explorer rows), replaying verl's sampler over steps ``1..t_mix``."""
    from verl.trainer.ppo.utils import create_rl_sampler

    s2 = v.s2lpo
    bs = int(v.data.get("gen_batch_size") or v.data.train_batch_size)
    sampler = create_rl_sampler(v.data, dataset)
    last = min(int(s2.t_mix), int(s2.total_steps))
    need: dict[int, int] = {}
    step = 0
    while step < last:
        order = list(iter(sampler))
        for b in range(len(order) // bs):  # drop_last, as verl's dataloader
            step += 1
            if step > last:
                break
            if split_group(step, int(s2.group_size), int(s2.t_mix), str(s2.schedule))[0]:
                for i in order[b * bs:(b + 1) * bs]:
                    need[int(i)] = int(s2.explorer_samples)  # the pool a group draws from (s2lpo.algo.draw)
        if len(order) < bs:
            raise ValueError(f"{len(order)} training prompts are fewer than one batch of {bs}")
    return need


def hf_generate(model_path: str, params: SamplingParams, batch_size: int):
    import torch
    from transformers import AutoTokenizer

    from s2lpo.models.resolve import load_model
    from s2lpo.rollout.sampler import sample

    model = load_model(model_path, torch.device("cuda" if torch.cuda.is_available() else "cpu")).eval()
    tok = AutoTokenizer.from_pretrained(model_path)

    def generate(todo, seed: int) -> list[Sample]:
        g = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
        return sample(model, [p for p, _ in todo], params, tok.eos_token_id, tok.pad_token_id, g, batch_size)

    return generate


def vllm_generate(model_path: str, params: SamplingParams):
    from vllm import LLM
    from vllm import SamplingParams as VParams

    llm = LLM(model=model_path, seed=0, enable_prefix_caching=True)

    def generate(todo, seed: int) -> list[Sample]:
        sp = [VParams(n=1, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k or -1,
                      max_tokens=params.max_new_tokens, logprobs=0, seed=(seed + 7919 * k) % (2**31))
              for k in range(len(todo))]
        outs = llm.generate([{"prompt_token_ids": list(p)} for p, _ in todo], sp)
        res = []
        for o in outs:
            c = o.outputs[0]
            lps = [d[t].logprob for t, d in zip(c.token_ids, c.logprobs)]
            res.append(Sample(list(c.token_ids), lps, "stop" if c.finish_reason == "stop" else "length"))
        return res

    return generate


def pick_generator(model_path: str, params: SamplingParams, batch_size: int, log=print):
    import torch

    try:
        import vllm  # noqa: F401
    except ImportError:
        vllm = None
    if vllm is not None and torch.cuda.is_available():
        log("explorer cache: generating with vLLM")
        return vllm_generate(model_path, params)
    log("explorer cache: generating with the HF sampler (vLLM or a GPU is missing)")
    return hf_generate(model_path, params, batch_size)


def fill_verl_explorer_cache(cfg: DictConfig, log=print, generate=None) -> int:
    """The explorer-cache job: validate, map the run config onto verl's, fill (see ``fill_mapped``)."""
    from s2lpo.config.paths import abspath
    from s2lpo.config.validate import validate
    from s2lpo.models.family import weights_digest
    from s2lpo.verl_ext.config import to_verl
    from s2lpo.verl_ext.toy import with_toy_files

    if cfg.algorithm.t_mix == 0:
        return 0
    validate(cfg)
    cfg = with_toy_files(cfg, log=log)
    v = to_verl(cfg, abspath(cfg.paths.runs_dir), "explorer-cache", weights_digest(abspath(cfg.explorer.path)))
    return fill_mapped(cfg, v, log, generate)


def fill_mapped(cfg: DictConfig, v: DictConfig, log=print, generate=None) -> int:
    """Generate the explorer samples verl will replay for ``cfg`` (toy files already filled in) as ``v`` (its
    verl config, explorer digest included) describes them; returns how many were generated."""
    from transformers import AutoConfig, AutoTokenizer
    from verl.trainer.ppo.utils import create_rl_dataset
    from verl.utils.tokenizer.continuous_token_wiring import create_continuous_token_builder

    from s2lpo.config.paths import abspath
    from s2lpo.verl_ext.reward import compute_score

    if cfg.algorithm.t_mix == 0:
        return 0
    path = str(abspath(cfg.explorer.path))
    tok = AutoTokenizer.from_pretrained(path)
    dataset = create_rl_dataset(v.data.train_files, v.data, tok, None, is_train=True)
    need = explorer_plan(v, dataset)
    builder = create_continuous_token_builder(tok, hf_model_type=AutoConfig.from_pretrained(path).model_type,
                                              chat_template_kwargs=dict(v.data.get("apply_chat_template_kwargs") or {}))
    cap = int(v.actor_rollout_ref.rollout.prompt_length)
    s2 = v.s2lpo
    params = SamplingParams(**dict(s2.explorer_sampling))
    cache = ExplorerCache(s2.explorer_cache_dir, s2.explorer_digest, params)
    by_n: dict[int, list[tuple[list[int], str, str]]] = {}
    for i, n in sorted(need.items()):
        row = dataset[i]
        ids = list(builder.build_initial_tokens(list(row["raw_prompt"])))[-cap:]
        by_n.setdefault(n, []).append((ids, str(row["reward_model"]["ground_truth"]), str(row["data_source"])))
    missing = sum(len(cache.missing([p for p, _, _ in rows], n)) for n, rows in by_n.items())
    if not missing:
        log(f"explorer cache {cfg.explorer.name}: all {sum(need.values())} samples already cached")
        return 0
    generate = generate or pick_generator(path, params, int(cfg.trainer.gen_batch_size), log)
    t0, made = time.time(), 0
    for n, rows in sorted(by_n.items()):
        def score(tokens: list[int], k: str, rows=rows) -> float:  # k: the row's position, passed as its "truth"
            _, truth, source = rows[int(k)]
            return compute_score(source, tok.decode(tokens, skip_special_tokens=True), truth)

        made += cache.fill_with(generate, [p for p, _, _ in rows], [str(k) for k in range(len(rows))], n, score,
                                seed=int(cfg.seed))
    log(f"explorer cache {cfg.explorer.name}: generated {made} samples in {time.time() - t0:.1f}s -> {cache.dir}")
    return made
