"""Seeds and prompt order as pure functions of (run seed, step): a resumed run replays the same
randomness and draws the same prompts. Pure: imports nothing of ours."""

from __future__ import annotations

import zlib

import torch


def step_seed(seed: int, step: int, salt: str) -> int:
    """A seed that is a pure function of (run seed, step, purpose): resumes replay the same randomness."""
    return zlib.crc32(f"{seed}:{step}:{salt}".encode()) & 0x7FFFFFFF


def batch_indices(n_items: int, per_step: int, step: int, seed: int) -> list[int]:
    """Prompt indices of 1-based ``step``: epochs of seeded permutations, consumed ``per_step`` at a time."""
    out: list[int] = []
    pos = (step - 1) * per_step
    while len(out) < per_step:
        epoch, off = divmod(pos, n_items)
        perm = torch.randperm(n_items, generator=torch.Generator().manual_seed(step_seed(seed, epoch, "epoch")))
        take = perm[off : off + per_step - len(out)].tolist()
        out += take
        pos += len(take)
    return out
