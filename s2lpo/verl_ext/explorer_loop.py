"""The explorer agent loop (work in progress, issue 7): replays cached explorer samples.

Prompt ids are built exactly as verl's default single-turn loop builds them (its Continuous Token
builder), then looked up in the explorer cache by (prompt ids, slot); a miss is an error naming the
command that fills the cache. The output mirrors the single-turn loop's schema (``response_logprobs``
when ``rollout.calculate_log_probs`` is on, the same ``extra_fields`` keys) so that a worker's chunk of
only explorer rows concatenates with vLLM rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopOutput, register

from s2lpo.rollout.explorer_cache import ExplorerCache
from s2lpo.rollout.sampler import SamplingParams
from s2lpo.verl_ext.routing import EXPLORER_AGENT


@register(EXPLORER_AGENT)
class ExplorerAgentLoop(AgentLoopBase):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        s2 = self.config.s2lpo
        params = SamplingParams(**dict(s2.explorer_sampling))
        self.cache = ExplorerCache(Path(s2.explorer_cache_dir), str(s2.explorer_digest), params)
        self.response_length = self.rollout_config.response_length

    async def run(self, sampling_params: dict[str, Any], **kwargs) -> AgentLoopOutput:
        messages = list(kwargs["raw_prompt"])
        prompt_ids = await self.ct_build_initial_tokens(messages)
        slot = int(kwargs["s2lpo_slot"])
        sample = self.cache.get(list(prompt_ids), slot)
        if sample is None:
            raise KeyError(f"explorer cache {self.cache.dir} has no sample {slot} for a prompt of this batch; fill "
                           "it first (experiments/generate_explorer.py, or the sweep's explorer-cache job)")
        tokens = sample.tokens[: self.response_length]
        logprobs = sample.logprobs[: self.response_length] if self.rollout_config.calculate_log_probs else None
        # the fields verl's single-turn loop sets explicitly (text-only values), so as_dict() has the same keys
        out = AgentLoopOutput(prompt_ids=list(prompt_ids), response_ids=tokens, response_mask=[1] * len(tokens),
                              response_logprobs=logprobs, routed_experts=None,
                              multi_modal_data=await self.process_multi_modal_info(messages),
                              mm_processor_kwargs=self._get_mm_processor_kwargs(None), mm_processor_output=None,
                              num_turns=2, metrics={"generate_sequences": 0.0, "num_preempted": -1}, extra_fields={})
        out.extra_fields.update({"turn_scores": [], "tool_rewards": [], "s2lpo_source": "explorer"})
        return out
