"""The learner's agent loops for S2L-PO's baselines on verl.

- ``s2lpo_learner``: verl's single-turn loop with the row's sampling settings from the manager: a temperature
  (``s2lpo_temperature``) the loss does not use (``rollout.temperature`` stays 1.0): token-level
  high-temperature GRPO with ``temperature_mode=sample_only`` (verl's ``rollout.temperature`` divides the
  logits in the actor too, which is ``tempered``); and a per-row seed (``s2lpo_seed``, vLLM's per-request
  ``seed``) so that a resumed run samples the same rows.
- ``s2lpo_guided``: G²RPO-A. The completion starts with the first ``s2lpo_guidance_length`` tokens of the
  row's ``reference_solution`` (a dataset column, which verl hands to agent loops as a keyword); the server
  continues from there. The prefix is part of the response; with ``s2lpo.mask_guidance`` it is masked out of
  the loss (``response_mask`` 0), as in the local trainer.
"""

from __future__ import annotations

from typing import Any
from uuid import uuid4

from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopOutput
from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop
from verl.utils.profiler import simple_timer


def learner_sampling(sampling_params: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """The row's sampling parameters: the manager's per-row temperature and seed where set (>= 0)."""
    out = dict(sampling_params)
    t, seed = float(row.get("s2lpo_temperature", -1.0)), int(row.get("s2lpo_seed", -1))
    if t >= 0:
        out["temperature"] = t
    if seed >= 0:
        out["seed"] = seed
    return out


class LearnerAgentLoop(SingleTurnAgentLoop):
    async def run(self, sampling_params: dict[str, Any], **kwargs) -> AgentLoopOutput:
        return await super().run(learner_sampling(sampling_params, kwargs), **kwargs)


class GuidedAgentLoop(AgentLoopBase):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.response_length = self.rollout_config.response_length
        self.mask_guidance = bool(self.config.s2lpo.get("mask_guidance", True))

    async def run(self, sampling_params: dict[str, Any], **kwargs) -> AgentLoopOutput:
        messages = list(kwargs["raw_prompt"])
        solution = kwargs.get("reference_solution")
        if solution is None:
            raise KeyError("G²RPO-A needs the dataset's reference_solution column (experiments/prepare_data.py "
                           "writes it where the source has solutions); this row has none")
        prompt_ids = list(await self.ct_build_initial_tokens(messages))
        length = int(kwargs.get("s2lpo_guidance_length", 0))
        prefix = self.tokenizer(str(solution), add_special_tokens=False)["input_ids"][:length]
        prefix = prefix[: self.response_length]
        metrics: dict[str, Any] = {}
        with simple_timer("generate_sequences", metrics):
            output = await self.server_manager.generate(request_id=uuid4().hex, prompt_ids=prompt_ids + prefix,
                                                        sampling_params=learner_sampling(sampling_params, kwargs))
        metrics["num_preempted"] = output.num_preempted if output.num_preempted is not None else -1
        cont = list(output.token_ids)
        response = (prefix + cont)[: self.response_length]
        mask = ([0 if self.mask_guidance else 1] * len(prefix) + [1] * len(cont))[: self.response_length]
        logprobs = None
        if output.log_probs:
            logprobs = ([0.0] * len(prefix) + list(output.log_probs))[: self.response_length]
        out = AgentLoopOutput(prompt_ids=prompt_ids, response_ids=response, response_mask=mask,
                              response_logprobs=logprobs, routed_experts=None,
                              multi_modal_data=await self.process_multi_modal_info(messages),
                              mm_processor_kwargs=self._get_mm_processor_kwargs(None), mm_processor_output=None,
                              num_turns=2, metrics=metrics, extra_fields=output.extra_fields)
        out.extra_fields.update({"turn_scores": [], "tool_rewards": []})
        return out
