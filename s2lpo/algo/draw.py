"""Which cached explorer samples fill a group's explorer rows.

The explorer's samples are generated once per prompt, ``pool = explorer.sampling.samples_per_prompt`` of
them (the published setting: 32), before training. At step ``i`` a group needs ``n = G_w`` of them: they
are the first ``n`` of a permutation of ``0 .. pool-1`` drawn by a generator seeded with
``sha256(seed, step, prompt key)``. So the draw is

* without replacement within a group (no sample twice in one group),
* fresh at every step (a prompt seen again at another step gets another subset),
* reproducible: the same run seed, step and prompt give the same samples, on any backend, on resume.
"""

from __future__ import annotations

import hashlib
import random


def draw_slots(seed: int, step: int, prompt_key: str, n: int, pool: int) -> list[int]:
    """Indices of the ``n`` cached samples (of ``pool``) used for this prompt's group at ``step``."""
    if not 0 <= n <= pool:
        raise ValueError(f"{n} explorer rows needed but {pool} samples per prompt are cached; raise "
                         "explorer.sampling.samples_per_prompt to at least the group size")
    if n == 0:
        return []
    digest = hashlib.sha256(f"{int(seed)}:{int(step)}:{prompt_key}".encode()).digest()
    order = list(range(pool))
    random.Random(int.from_bytes(digest[:8], "little")).shuffle(order)
    return order[:n]
