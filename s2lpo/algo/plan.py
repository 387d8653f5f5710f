"""Rollout plan of one training step: which source produces each row of each group.

Rows are laid out group by group (``G`` consecutive rows per prompt); inside a group the explorer
rows come first, then the guided rows, then the learner's own rows. Every row carries its source so
metrics can be split by it.
"""

from __future__ import annotations

from dataclasses import dataclass

from s2lpo.algo.schedule import split_group

EXPLORER, LEARNER, GUIDED = "explorer", "learner", "guided"
SOURCES = (EXPLORER, LEARNER, GUIDED)


@dataclass(frozen=True)
class GroupPlan:
    n_explorer: int
    n_guided: int
    n_learner: int

    @property
    def sources(self) -> list[str]:
        return [EXPLORER] * self.n_explorer + [GUIDED] * self.n_guided + [LEARNER] * self.n_learner


def plan_group(
    step: int,
    group_size: int,
    t_mix: int,
    schedule: str = "linear",
    n_guided: int = 0,
    guidance_length: int = 0,
) -> GroupPlan:
    """Split one group: ``n_explorer`` from the schedule; ``n_guided`` of the learner's rows start from a
    reference-solution prefix (only when ``guidance_length > 0`` and the learner has rows left)."""
    if n_guided < 0 or n_guided > group_size:
        raise ValueError(f"n_guided={n_guided} must be in [0, group_size={group_size}]")
    n_explorer, n_learner = split_group(step, group_size, t_mix, schedule)
    guided = min(n_guided, n_learner) if guidance_length > 0 else 0
    return GroupPlan(n_explorer, guided, n_learner - guided)
