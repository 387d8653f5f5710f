"""Which rows of a verl rollout batch each agent loop produces (pure; no verl import).

verl repeats each prompt ``rollout.n`` times with ``interleave=True``, so rows ``g*G .. g*G+G-1`` are
group ``g``. At step ``i`` every group follows ``s2lpo.algo.plan.plan_group``: the first ``n_explorer``
rows go to the explorer agent loop (slot = position in the group, the explorer cache's sample index),
the next ``n_guided`` to the guided loop (G²RPO-A: the completion starts from a reference-solution
prefix), the rest to the learner's loop (verl's default single-turn loop, or ours when the learner
samples at a temperature the training loss does not use). Validation batches are never routed.
"""

from __future__ import annotations

from dataclasses import dataclass

from s2lpo.algo.plan import EXPLORER, GUIDED, LEARNER, GroupPlan, plan_group

EXPLORER_AGENT = "s2lpo_explorer"
GUIDED_AGENT = "s2lpo_guided"
LEARNER_AGENT = "s2lpo_learner"  # verl's single-turn loop with sample-only temperature


@dataclass(frozen=True)
class Route:
    plan: GroupPlan
    agent: list[str]  # agent_name per row
    slot: list[int]  # position within the group (explorer rows: the cache's sample index)
    source: list[str]  # explorer | guided | learner


def route(step: int, n_rows: int, group_size: int, t_mix: int, schedule: str, default_agent: str,
          validate: bool = False, n_guided: int = 0, guidance_length: int = 0,
          learner_agent: str | None = None) -> Route:
    if n_rows % group_size:
        raise ValueError(f"{n_rows} rows are not whole groups of {group_size} (rollout.n)")
    if validate or step < 1:
        plan = GroupPlan(0, 0, group_size)
    else:
        plan = plan_group(step, group_size, t_mix, schedule, n_guided, guidance_length)
    agents = {EXPLORER: EXPLORER_AGENT, GUIDED: GUIDED_AGENT, LEARNER: learner_agent or default_agent}
    if validate:
        agents[LEARNER] = default_agent
    src = [plan.sources[r % group_size] for r in range(n_rows)]
    return Route(plan, [agents[s] for s in src], [r % group_size for r in range(n_rows)], src)
