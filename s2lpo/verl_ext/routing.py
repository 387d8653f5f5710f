"""Which rows of a verl rollout batch the explorer produces (pure; no verl import).

verl repeats each prompt ``rollout.n`` times with ``interleave=True``, so rows ``g*G .. g*G+G-1`` are
group ``g``. At step ``i`` the first ``n_explorer`` rows of every group go to the explorer agent loop
(slot = position in the group, the explorer cache's sample index) and the rest to the default agent
loop; validation batches are never routed.
"""

from __future__ import annotations

from dataclasses import dataclass

from s2lpo.algo.plan import EXPLORER, LEARNER
from s2lpo.algo.schedule import split_group

EXPLORER_AGENT = "s2lpo_explorer"


@dataclass(frozen=True)
class Route:
    agent: list[str]  # agent_name per row
    slot: list[int]  # sample index within the group (explorer rows: the cache's sample index)
    source: list[str]  # explorer | learner


def route(step: int, n_rows: int, group_size: int, t_mix: int, schedule: str, default_agent: str,
          validate: bool = False) -> Route:
    if n_rows % group_size:
        raise ValueError(f"{n_rows} rows are not whole groups of {group_size} (rollout.n)")
    n_explorer = 0 if validate or step < 1 else split_group(step, group_size, t_mix, schedule)[0]
    slots = [r % group_size for r in range(n_rows)]
    src = [EXPLORER if s < n_explorer else LEARNER for s in slots]
    return Route([EXPLORER_AGENT if s == EXPLORER else default_agent for s in src], slots, src)
