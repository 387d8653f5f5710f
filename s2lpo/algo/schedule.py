"""Explorer/learner split of a GRPO group over training (S2L-PO's annealing schedule).

Pure functions, exact rational arithmetic: ``n_explorer = ceil(alpha_i * G)`` is computed with
:class:`fractions.Fraction`, because in floats ``(1 - 7/10) * 10 == 3.0000000000000004`` whose ceiling
is 4, while the right count is 3.

Schedules (step ``i`` is 1-based, ``T = t_mix``; every schedule gives ``alpha_i = 0`` for ``i > T``,
and ``t_mix = 0`` means no explorer at all, i.e. plain on-policy GRPO):

* ``linear`` (the paper's Algorithm 1): ``alpha_i = 1 - (i - 1) / (T - 1)``. Needs ``T >= 2``.
* ``cosine``: ``alpha_i = (1 + cos(pi * (i - 1) / (T - 1))) / 2``. Needs ``T >= 2``. The cosine is
  rounded to a rational with denominator ``10**12`` before the ceiling so the result does not depend
  on the last float bit.
* ``step``: ``alpha_i = 1`` for ``i <= T`` (all explorer rows), then 0: a hard switch.
* ``constant``: ``alpha_i = 1/2`` for ``i <= T``, then 0: a fixed half/half mix.
"""

from __future__ import annotations

import math
from fractions import Fraction

SCHEDULES = ("linear", "cosine", "step", "constant")


def alpha(step: int, t_mix: int, schedule: str = "linear") -> Fraction:
    """Explorer share ``alpha_i`` of the group at 1-based ``step`` as an exact fraction."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule={schedule!r} is unknown; choose one of {', '.join(SCHEDULES)}")
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise ValueError(f"step={step!r} must be an integer >= 1 (steps are 1-based)")
    if isinstance(t_mix, bool) or not isinstance(t_mix, int) or t_mix < 0:
        raise ValueError(f"t_mix={t_mix!r} must be an integer >= 0 (0 disables the explorer)")
    if t_mix == 0 or step > t_mix:
        return Fraction(0)
    if schedule in ("linear", "cosine") and t_mix == 1:
        raise ValueError(
            f"t_mix=1 is not allowed with schedule={schedule!r}: alpha_i = 1 - (i-1)/(T_mix-1) divides by "
            "T_mix-1 = 0. Use t_mix=0 for plain GRPO or t_mix>=2 for an annealed mix."
        )
    if schedule == "linear":
        return 1 - Fraction(step - 1, t_mix - 1)
    if schedule == "cosine":
        c = math.cos(math.pi * (step - 1) / (t_mix - 1))
        return (1 + Fraction(round(c * 10**12), 10**12)) / 2
    if schedule == "step":
        return Fraction(1)
    return Fraction(1, 2)


def split_group(step: int, group_size: int, t_mix: int, schedule: str = "linear") -> tuple[int, int]:
    """Return ``(n_explorer, n_learner)`` for one group of ``group_size`` rollouts at 1-based ``step``.

    ``n_explorer = ceil(alpha_i * G)`` and ``n_learner = G - n_explorer``.
    """
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size={group_size!r} must be an integer >= 1")
    a = alpha(step, t_mix, schedule)
    n_explorer = math.ceil(a * group_size)
    return n_explorer, group_size - n_explorer
