"""Rollout rows and their training tensors (verl's layout: left-padded prompt, right-padded response)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


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

    def select(self, idx: torch.Tensor) -> Batch:
        return Batch(self.input_ids[idx], self.attention_mask[idx], self.position_ids[idx], self.responses[idx],
                     self.response_mask[idx], self.guidance_mask[idx], self.behavior_log_prob[idx], self.prompt_width)


def collate(rows: list[Row], pad_id: int, device) -> Batch:
    P = max(len(r.prompt_ids) for r in rows)
    R = max(max(len(r.response_ids) for r in rows), 1)
    B = len(rows)
    ids = torch.full((B, P + R), pad_id, dtype=torch.long)
    att = torch.zeros((B, P + R), dtype=torch.long)
    gmask = torch.zeros((B, R), dtype=torch.bool)
    blp = torch.zeros((B, R), dtype=torch.float32)
    for i, r in enumerate(rows):
        p, n = len(r.prompt_ids), len(r.response_ids)
        ids[i, P - p : P] = torch.tensor(r.prompt_ids)
        att[i, P - p : P + n] = 1
        if n:
            ids[i, P : P + n] = torch.tensor(r.response_ids)
            blp[i, :n] = torch.tensor(r.behavior_logprobs, dtype=torch.float32)
        gmask[i, : r.n_guidance] = True
    pos = (att.cumsum(-1) - 1).clamp(min=0)
    resp_mask = att[:, P:].float()
    return Batch(ids.to(device), att.to(device), pos.to(device), ids[:, P:].to(device), resp_mask.to(device),
                 gmask.to(device), blp.to(device), P)


def response_log_probs(model, batch: Batch, temperature: float = 1.0) -> torch.Tensor:
    """Log-probability of every response token under ``model`` (logits divided by ``temperature``)."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                   position_ids=batch.position_ids).logits
    P = batch.prompt_width
    logits = logits[:, P - 1 : -1].float()
    if temperature != 1.0:
        logits = logits / temperature
    return torch.log_softmax(logits, -1).gather(-1, batch.responses[..., None]).squeeze(-1)
