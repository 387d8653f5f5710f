"""The toy family's supervised warm-up: worked solutions, packed.

A batch's examples (prompt + solution + eos, the loss on the completion) are packed first-fit-decreasing into rows
of twice the longest example's length, each example with its own positions from 0 and attending only to itself
(Hugging Face's packed-sequence masks: ``position_ids`` that restart, no attention mask, no KV cache). The loss is
the same function as on one right-padded row per example — the same tokens, positions and attention — for ~20 %
fewer padded positions (the drills are half as long as the problems).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from s2lpo.data.toy import Problem


def encode_sft(tok, problems: list[Problem]) -> tuple[list[list[int]], list[list[bool]]]:
    """Each problem's ``prompt + solution + eos`` ids and its loss mask (the completion's tokens)."""
    seqs, masks = [], []
    for p in problems:
        pi = tok(p.prompt, add_special_tokens=False)["input_ids"]
        ci = tok(p.solution, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        seqs.append(pi + ci)
        masks.append([False] * len(pi) + [True] * len(ci))
    return seqs, masks


def pack(seqs: list[list[int]], masks: list[list[bool]], cap: int, pad_id: int
         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``seqs`` packed first-fit-decreasing into rows of at most ``cap`` tokens: ids, loss mask and positions
    (restarting at 0 for each sequence; a row's padding is a sequence of its own, never in the loss)."""
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    rows: list[list[int]] = []
    room: list[int] = []
    for i in order:
        r = next((r for r in range(len(rows)) if room[r] >= len(seqs[i])), None)
        if r is None:
            rows.append([])
            room.append(cap)
            r = len(rows) - 1
        rows[r].append(i)
        room[r] -= len(seqs[i])
    width = cap - min(room)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    lm = torch.zeros((len(rows), width), dtype=torch.bool)
    pos = torch.zeros((len(rows), width), dtype=torch.long)
    for r, items in enumerate(rows):
        at = 0
        for i in items:
            n = len(seqs[i])
            ids[r, at : at + n] = torch.tensor(seqs[i])
            lm[r, at : at + n] = torch.tensor(masks[i])
            pos[r, at : at + n] = torch.arange(n)
            at += n
        pos[r, at:] = torch.arange(width - at)
    return ids, lm, pos


def sft_loss(model, ids: torch.Tensor, lm: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the masked tokens of a packed batch."""
    logits = model(input_ids=ids, position_ids=pos, use_cache=False).logits[:, :-1]
    target = lm[:, 1:]
    return torch.nn.functional.cross_entropy(logits[target], ids[:, 1:][target])


def sft_steps(n_problems: int, epochs: int, batch_size: int) -> int:
    return epochs * math.ceil(n_problems / batch_size)


def sft_warmup(model, tok, problems: list[Problem], epochs: int, batch_size: int, lr: float, seed: int,
               tick: Callable[[], None] | None = None) -> float:
    """Supervised warm-up on worked solutions; returns the last epoch's mean loss (``tick()`` per step)."""
    seqs, masks = encode_sft(tok, problems)
    cap = 2 * max(len(q) for q in seqs)
    g = torch.Generator().manual_seed(seed)
    steps = sft_steps(len(problems), epochs, batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 20) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    model.train()
    last = 0.0
    for _ in range(epochs):
        perm = torch.randperm(len(problems), generator=g).tolist()
        tot, n = 0.0, 0
        for b in range(0, len(problems), batch_size):
            idx = perm[b : b + batch_size]
            loss = sft_loss(model, *pack([seqs[i] for i in idx], [masks[i] for i in idx], cap, tok.pad_token_id))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            tot, n = tot + loss.item(), n + 1
            if tick:
                tick()
        last = tot / n
    model.eval()
    return last
