"""The explorer agent loop: replays cached explorer samples inside verl's agent-loop workers.

Prompt ids are built exactly as verl's default single-turn loop builds them (its Continuous Token
builder), then looked up in the explorer cache by (prompt ids, the sample the row's slot draws:
``s2lpo.algo.draw``); a miss is an error naming the
command that fills the cache (and the usual cause: prompt ids built another way). The output has the
single-turn loop's schema *and the generation server's* ``extra_fields`` keys (``response_logprobs``
when ``rollout.calculate_log_probs`` is on; vLLM's ``global_steps``/``num_cached_tokens``): verl
concatenates the workers' chunks by the keys of the first one, so a chunk of only explorer rows must
carry the same keys as a chunk of vLLM rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopOutput

from s2lpo.algo.draw import draw_slots
from s2lpo.algo.schedule import split_group
from s2lpo.rollout.explorer_cache import ExplorerCache, prompt_key
from s2lpo.rollout.sampler import SamplingParams
from s2lpo.verl_ext.cpu import ROLLOUT

# extra_fields each generation server puts on its TokenOutput (verl 0.9.1), as the explorer loop fills them
SERVER_EXTRA_FIELDS: dict[str, tuple[str, ...]] = {name: ("global_steps", "num_cached_tokens")
                                                   for name in ("vllm", ROLLOUT)}  # ROLLOUT: the CPU stand-in


def server_extra_fields(rollout_name: str, step: int) -> dict[str, Any]:
    if rollout_name not in SERVER_EXTRA_FIELDS:
        raise ValueError(f"actor_rollout_ref.rollout.name={rollout_name!r}: the explorer loop knows the row "
                         f"schema of {sorted(SERVER_EXTRA_FIELDS)} only; use rollout.name=vllm")
    return {k: (step if k == "global_steps" else 0) for k in SERVER_EXTRA_FIELDS[rollout_name]}


_CACHES: dict[tuple, ExplorerCache] = {}


def worker_cache(cache_dir: str, digest: str, params: SamplingParams) -> ExplorerCache:
    """One cache per agent-loop worker process: verl instantiates an agent loop per row, and loading the
    cache's shards per row would read the whole cache for every explorer row."""
    key = (str(cache_dir), str(digest), tuple(sorted(params.as_dict().items())))
    if key not in _CACHES:
        _CACHES[key] = ExplorerCache(Path(cache_dir), str(digest), params)
    return _CACHES[key]


class ExplorerAgentLoop(AgentLoopBase):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        s2 = self.config.s2lpo
        self.cache = worker_cache(s2.explorer_cache_dir, s2.explorer_digest, SamplingParams(**dict(s2.explorer_sampling)))
        self.response_length = self.rollout_config.response_length

    async def run(self, sampling_params: dict[str, Any], **kwargs) -> AgentLoopOutput:
        messages = list(kwargs["raw_prompt"])
        prompt_ids = list(await self.ct_build_initial_tokens(messages))
        step = int(kwargs["s2lpo_step"])
        s2 = self.config.s2lpo
        n = split_group(step, int(s2.group_size), int(s2.t_mix), str(s2.schedule))[0]
        slot = draw_slots(int(s2.seed), step, prompt_key(prompt_ids), n, int(s2.explorer_samples))[int(kwargs["s2lpo_slot"])]
        sample = self.cache.get(prompt_ids, slot)
        if sample is None:
            self.cache.reload()  # a cache job may have added shards since this worker started
            sample = self.cache.get(prompt_ids, slot)
        if sample is None:
            raise KeyError(f"explorer cache {self.cache.dir} has no sample {slot} for a prompt of this batch "
                           f"({len(prompt_ids)} prompt ids); fill it first (experiments/generate_explorer.py, or "
                           "the sweep's explorer-cache job), with the prompt ids built by verl's chat template")
        tokens = sample.tokens[: self.response_length]
        logprobs = sample.logprobs[: self.response_length] if self.rollout_config.calculate_log_probs else None
        # the fields verl's single-turn loop sets explicitly (text-only values), so as_dict() has the same keys
        out = AgentLoopOutput(prompt_ids=prompt_ids, response_ids=tokens, response_mask=[1] * len(tokens),
                              response_logprobs=logprobs, routed_experts=None,
                              multi_modal_data=await self.process_multi_modal_info(messages),
                              mm_processor_kwargs=self._get_mm_processor_kwargs(None), mm_processor_output=None,
                              num_turns=2, metrics={"generate_sequences": 0.0, "num_preempted": -1},
                              extra_fields=server_extra_fields(self.rollout_config.name,
                                                               int(kwargs.get("s2lpo_step", -1))))
        out.extra_fields.update({"turn_scores": [], "tool_rewards": []})
        return out
