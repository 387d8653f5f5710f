"""Rollout rows and their training tensors (verl's layout: left-padded prompt, right-padded response)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache

from s2lpo.rollout import train_forward

# compute training log-probs with the lean forward (s2lpo.rollout.train_forward) where it covers the model; the
# benchmark turns it off to show what it saves over the Hugging Face forward
LEAN_FORWARD = True


@dataclass
class Row:
    group: int  # index of the prompt's group in this step
    source: str  # explorer | learner | guided
    prompt_ids: list[int]
    response_ids: list[int]  # guidance prefix (if any) + continuation, eos included when sampled
    behavior_logprobs: list[float]  # log-prob of each response token under the policy that produced it
    n_guidance: int = 0
    finish_reason: str = "stop"
    reward: float = 0.0


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, P + R]
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    responses: torch.Tensor  # [B, R]
    response_mask: torch.Tensor  # [B, R] float
    guidance_mask: torch.Tensor  # [B, R] bool, True on guidance tokens
    behavior_log_prob: torch.Tensor  # [B, R]
    prompt_width: int
    row_prompt: torch.Tensor  # [B] index of each row's prompt among the distinct prompts of the batch

    def select(self, idx: torch.Tensor) -> Batch:
        """The rows ``idx``, padded only as wide as they need (left padding no row of them has, right padding
        past the longest of their responses dropped): the same log-probs for less compute."""
        _, row_prompt = torch.unique(self.row_prompt[idx], return_inverse=True)
        att = self.attention_mask[idx]
        P = self.prompt_width
        lo = int(att[:, :P].any(0).long().argmax()) if P else 0
        R = max(int(self.response_mask[idx].sum(-1).max()), 1)
        cols = slice(lo, P + R)
        return Batch(self.input_ids[idx, cols], att[:, cols], self.position_ids[idx, cols], self.responses[idx, :R],
                     self.response_mask[idx, :R], self.guidance_mask[idx, :R], self.behavior_log_prob[idx, :R],
                     P - lo, row_prompt)


def collate(rows: list[Row], pad_id: int, device) -> Batch:
    """The rows as training tensors: prompts left-padded to the longest, responses right-padded to the longest (at
    least one column). Built from padded lists in one ``torch.tensor`` call each (one per row and field cost ~8 ms
    a step for 64 rows)."""
    P = max(len(r.prompt_ids) for r in rows)
    R = max(max(len(r.response_ids) for r in rows), 1)
    ids = torch.tensor([[pad_id] * (P - len(r.prompt_ids)) + r.prompt_ids + r.response_ids
                        + [pad_id] * (R - len(r.response_ids)) for r in rows], dtype=torch.long)
    blp = torch.tensor([r.behavior_logprobs + [0.0] * (R - len(r.behavior_logprobs)) for r in rows],
                       dtype=torch.float32)
    plen = torch.tensor([len(r.prompt_ids) for r in rows])
    rlen = torch.tensor([len(r.response_ids) for r in rows])
    col = torch.arange(P + R)
    att = ((col >= P - plen[:, None]) & (col < P + rlen[:, None])).long()
    gmask = torch.arange(R) < torch.tensor([r.n_guidance for r in rows])[:, None]
    pos = (att.cumsum(-1) - 1).clamp(min=0)
    resp_mask = att[:, P:].float()
    distinct: dict[tuple[int, ...], int] = {}
    row_prompt = torch.tensor([distinct.setdefault(tuple(r.prompt_ids), len(distinct)) for r in rows])
    return Batch(ids.to(device), att.to(device), pos.to(device), ids[:, P:].to(device), resp_mask.to(device),
                 gmask.to(device), blp.to(device), P, row_prompt.to(device))


def response_log_probs(model, batch: Batch, temperature: float = 1.0, shared_prefix: bool = True) -> torch.Tensor:
    """Log-probability of every response token under ``model`` (logits divided by ``temperature``).

    With ``shared_prefix`` each distinct prompt is run once and its KV cache is shared by the rows of
    its group (all G rows of a GRPO group share the prompt), which saves the prompt's share of the
    forward and backward compute; the result equals the plain full-sequence pass. Qwen3 models run through
    the lean forward of ``s2lpo.rollout.train_forward`` (the same function, fewer passes over memory).
    """
    P = batch.prompt_width
    n_prompts = int(batch.row_prompt.max()) + 1
    if LEAN_FORWARD and train_forward.supports(model):
        rows = batch.row_prompt
        row_prompt = rows if shared_prefix else torch.arange(len(rows), device=rows.device)
        return train_forward.response_log_probs(model, batch.input_ids, batch.attention_mask, batch.position_ids, P,
                                                row_prompt, temperature)
    if shared_prefix and n_prompts < len(batch.row_prompt) and batch.responses.shape[1] > 1:
        logits = _shared_prefix_logits(model, batch, n_prompts)
    else:
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                       position_ids=batch.position_ids).logits[:, P - 1 : -1]
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    return torch.log_softmax(logits, -1).gather(-1, batch.responses[..., None]).squeeze(-1)


def _shared_prefix_logits(model, batch: Batch, n_prompts: int) -> torch.Tensor:
    """Logits predicting each response token: prompts prefilled once, their cache gathered per row."""
    P = batch.prompt_width
    first_row = torch.zeros(n_prompts, dtype=torch.long, device=batch.row_prompt.device)
    first_row.scatter_(0, batch.row_prompt.flip(0), torch.arange(len(batch.row_prompt), device=first_row.device).flip(0))
    p_ids, p_att, p_pos = (x[first_row, :P] for x in (batch.input_ids, batch.attention_mask, batch.position_ids))
    cache = DynamicCache()
    out = model(input_ids=p_ids, attention_mask=p_att, position_ids=p_pos, past_key_values=cache, use_cache=True,
                logits_to_keep=1)
    cache.batch_select_indices(batch.row_prompt)
    rest = model(input_ids=batch.input_ids[:, P:-1], attention_mask=batch.attention_mask[:, :-1],
                 position_ids=batch.position_ids[:, P:-1], past_key_values=cache, use_cache=True).logits
    return torch.cat([out.logits[batch.row_prompt, -1:], rest], dim=1)
