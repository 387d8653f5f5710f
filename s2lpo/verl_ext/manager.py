"""S2L-PO inside verl's agent-loop machinery, without a fork (work in progress, issue 7).

``S2LPOAgentLoopManager`` (enabled with
``actor_rollout_ref.rollout.agent.agent_loop_manager_class=s2lpo.verl_ext.manager.S2LPOAgentLoopManager``)
reads the step from ``meta_info["global_steps"]``, routes the first ``n_explorer`` rows of every group
to the ``s2lpo_explorer`` agent loop (``s2lpo.verl_ext.explorer_loop``) and the rest to the default
one, leaves validation batches alone, and tags each row with its source and slot. The learner's old
log-probs are recomputed by verl for every row as usual.

Settings come from an ``s2lpo`` block in verl's config: ``t_mix``, ``schedule``, ``group_size``,
``explorer_cache_dir``, ``explorer_digest`` and the explorer's sampling parameters.
"""

from __future__ import annotations

import numpy as np
from verl.experimental.agent_loop import AgentLoopManager

from s2lpo.verl_ext.routing import route


class S2LPOAgentLoopManager(AgentLoopManager):
    async def generate_sequences(self, prompts):
        s2 = self.config.get("s2lpo") or {}
        validate = bool(prompts.meta_info.get("validate", False))
        step = int(prompts.meta_info.get("global_steps", -1))
        default_agent = self.config.actor_rollout_ref.rollout.agent.get("default_agent_loop", "single_turn_agent")
        if s2 and int(s2.get("t_mix", 0)) > 0:
            r = route(step, len(prompts), int(s2["group_size"]), int(s2["t_mix"]), str(s2["schedule"]),
                      default_agent, validate)
            prompts.non_tensor_batch["agent_name"] = np.array(r.agent, dtype=object)
            prompts.non_tensor_batch["s2lpo_slot"] = np.array(r.slot, dtype=np.int64)
            prompts.non_tensor_batch["s2lpo_source"] = np.array(r.source, dtype=object)
        return await super().generate_sequences(prompts)
