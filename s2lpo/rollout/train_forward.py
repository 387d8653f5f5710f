"""A lean training forward of a Qwen3-architecture causal LM: the logits that predict a batch's response tokens,
differentiable with respect to the model's own parameters.

The Hugging Face forward spends more than half of a training pass on the tiny models outside the matmuls (a
norm is six element-wise passes forward and more backward, the shared-prompt pass is two forwards with their
own masks and cache bookkeeping). This computes the same function in one pass over a flat token matrix — the
distinct prompts' tokens once, then every row's response tokens — with fused ``rms_norm``, q/k/v and gate/up
each one matmul (the weights concatenated per call, so gradients reach the model's own parameters), RoPE from
one table, and attention per stream: the prompts causally among themselves, each row's response over its
prompt's keys and its own. In fp32 on the CPU the element-wise parts between a layer's matmuls are compiled ops
(:mod:`s2lpo.rollout.train_kernel`), elsewhere tensor operations (``_python_layer``, also their reference).
``tests/test_train_forward.py`` pins both to the Hugging Face forward (log-probs and gradients). Models it does
not cover (``FastDecoder.supports``) keep the Hugging Face forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from s2lpo.rollout import train_kernel
from s2lpo.rollout.decode import FastDecoder, rope_table

COMPILED_OPS = True  # the compiled element-wise ops where they serve (fp32, CPU, built); off: the Python ops
# through the compiled ops, each row runs its own response tokens only (no padding to the longest); off: every row
# as wide as the longest (the Python ops' layout), to show what it saves
PACK_ROWS = True


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
    """``q`` [n, s, H, hd] over ``k``/``v`` [n, t, KV, hd] where ``keep`` ([n, s, t] bool) allows; [n, s, H·hd].
    Two batched matmuls, the queries grouped by the kv head they share: for these short sequences faster on CPU
    than the fused kernel in fp32, and 2x under bf16 autocast (whose fused kernel is slow there)."""
    n, s, H, hd = q.shape
    KV = k.shape[2]
    qg = q.view(n, s, KV, H // KV, hd).permute(0, 2, 3, 1, 4).reshape(n, KV, (H // KV) * s, hd)
    bias = torch.zeros(keep.shape, dtype=q.dtype, device=q.device).masked_fill_(~keep, float("-inf"))
    scores = torch.matmul(qg, k.permute(0, 2, 3, 1)).view(n, KV, H // KV, s, -1) * scale + bias[:, None, None]
    att = torch.matmul(scores.softmax(-1).view(n, KV, (H // KV) * s, -1), v.transpose(1, 2))
    return att.view(n, KV, H // KV, s, hd).permute(0, 3, 1, 2, 4).reshape(n, s, H * hd)


def _masks(att_mask: torch.Tensor, P: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Which keys each query may see: in the prompts ([rows, P, P], causal among real tokens; a padded query sees
    itself, never an empty row) and in the responses ([rows, R-1, P+R-1], the row's real keys up to itself)."""
    L = att_mask.shape[1] - 1  # the last token predicts nothing
    real = att_mask[:, :L].bool()
    at = torch.arange(L, device=att_mask.device)
    causal = at[None, :] <= at[:, None]  # [query, key]
    keep = (real[:, None, :] & causal[None]) | torch.eye(L, dtype=torch.bool, device=att_mask.device)[None]
    return keep[:, :P, :P], keep[:, P:, :]


def _python_attention(qkv, wq, wk, cos, sin, keep_p, keep_r, n_prompts, P, B, R1, row_prompt, dims):
    """A layer's attention block in tensor operations, from the qkv matmul's output to the o matmul's input: q/k
    RMSNorm, RoPE and attention per stream (the reference for ``train_kernel.Attention``)."""
    H, KV, hd, eps, scale = dims
    Np, half = n_prompts * P, hd // 2
    q = F.rms_norm(qkv[:, : H * hd].view(-1, H, hd), (hd,), wq, eps)
    k = F.rms_norm(qkv[:, H * hd : (H + KV) * hd].view(-1, KV, hd), (hd,), wk, eps)
    v = qkv[:, (H + KV) * hd :].view(-1, KV, hd)
    q = q * cos + q.roll(half, -1) * sin
    k = k * cos + k.roll(half, -1) * sin
    qp, kp, vp = (t[:Np].view(n_prompts, P, -1, hd) for t in (q, k, v))
    out_p = _attend(qp, kp, vp, keep_p, scale)
    if not R1:
        return out_p.reshape(Np, -1)
    qr, kr, vr = (t[Np:].view(B, R1, -1, hd) for t in (q, k, v))
    out_r = _attend(qr, torch.cat([kp[row_prompt], kr], 1), torch.cat([vp[row_prompt], vr], 1), keep_r, scale)
    return torch.cat([out_p.reshape(Np, -1), out_r.reshape(B * R1, -1)])


def _python_layer(lay, h, cos, sin, keep_p, keep_r, n_prompts, P, B, R1, row_prompt, dims):
    """One layer in tensor operations (the reference for the compiled ops; bf16 and other devices take it)."""
    eps = dims[3]
    a = lay.self_attn
    x = F.rms_norm(h, (h.shape[-1],), lay.input_layernorm.weight, eps)
    qkv = F.linear(x, torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]))
    out = _python_attention(qkv, a.q_norm.weight, a.k_norm.weight, cos, sin, keep_p, keep_r, n_prompts, P, B, R1,
                            row_prompt, dims)
    h = h + F.linear(out, a.o_proj.weight)
    m = lay.mlp
    gate, up = F.linear(F.rms_norm(h, (h.shape[-1],), lay.post_attention_layernorm.weight, eps),
                        torch.cat([m.gate_proj.weight, m.up_proj.weight])).chunk(2, dim=-1)
    h = h + F.linear(F.silu(gate) * up, m.down_proj.weight)
    return h


def _compiled_layer(lay, h, cos, sin, layout, eps, scale):
    """One layer: the matmuls through autograd, everything between them one compiled call each way
    (:mod:`s2lpo.rollout.train_kernel`)."""
    a, m = lay.self_attn, lay.mlp
    x = train_kernel.RMSNorm.apply(h, lay.input_layernorm.weight, eps)
    qkv = F.linear(x, torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]))
    out = train_kernel.Attention.apply(qkv, a.q_norm.weight, a.k_norm.weight, cos, sin, layout, eps, scale)
    h = torch.addmm(h, out, a.o_proj.weight.t())  # the residual added by the matmul: one pass less
    x = train_kernel.RMSNorm.apply(h, lay.post_attention_layernorm.weight, eps)
    gu = F.linear(x, torch.cat([m.gate_proj.weight, m.up_proj.weight]))
    return torch.addmm(h, train_kernel.SiluMul.apply(gu), m.down_proj.weight.t())


def response_log_probs(model, input_ids: torch.Tensor, att_mask: torch.Tensor, pos: torch.Tensor, P: int,
                       row_prompt: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Log-probability ([rows, R], 0 on the right padding) of each of the ``R`` response tokens of left-padded
    prompt (width ``P``) plus right-padded response rows, under the logits divided by ``temperature``; rows with
    the same ``row_prompt`` index share their prompt (computed once, from the first such row).

    The tokens run as one flat matrix: the distinct prompts (each ``P`` wide), then each row's response tokens
    that predict another. Through the compiled ops the rows are packed — a row's own tokens only, no padding to the
    longest (on toy-l's steps ~10 % of the padded pass's tokens were padding) — and the head and log-softmax run on the
    real response positions only; the Python ops keep every row ``R - 1`` wide (their attention is per padded row).
    """
    cfg, inner = model.config, model.model
    H, KV = cfg.num_attention_heads, cfg.num_key_value_heads
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // H
    eps, scale = cfg.rms_norm_eps, hd**-0.5
    n_prompts = int(row_prompt.max()) + 1
    first = torch.zeros(n_prompts, dtype=torch.long, device=row_prompt.device)
    first.scatter_(0, row_prompt.flip(0), torch.arange(len(row_prompt), device=first.device).flip(0))
    B, L = input_ids.shape[0], input_ids.shape[1] - 1
    R1 = L - P  # response positions that are inputs (all but the last)
    resp = att_mask[:, P:].bool()  # [B, R1 + 1] the real response tokens (right padding after them)
    compiled = COMPILED_OPS and train_kernel.ops_for(inner.embed_tokens.weight) is not None
    # the response tokens that are inputs: each row's but its last (all R1 of every row where not packed)
    inp = resp[:, 1:] if compiled and PACK_ROWS else torch.ones((B, R1), dtype=torch.bool, device=resp.device)
    row_len = inp.sum(-1)
    ids = torch.cat([input_ids[first, :P].reshape(-1), input_ids[:, P:L][inp]])
    where = torch.cat([pos[first, :P].reshape(-1), pos[:, P:L][inp]])
    Np = n_prompts * P
    cos, sin = rope_table(inner.rotary_emb.inv_freq, float(inner.rotary_emb.attention_scaling), int(where.max()) + 1)
    cos, sin = cos[where], sin[where]  # [tokens, hd]
    h = inner.embed_tokens(ids)  # [Np + sum(row_len), d]
    if compiled:
        real = att_mask[:, :L].bool().contiguous()
        lay = train_kernel.Layout(row_prompt.contiguous(), row_len, real[first, :P].contiguous(), real, P, H, KV)
        for lay_ in inner.layers:
            h = _compiled_layer(lay_, h, cos, sin, lay, eps, scale)
    else:
        keep_p, keep_r = _masks(att_mask, P)
        keep_p = keep_p[first]
        for lay_ in inner.layers:
            h = _python_layer(lay_, h, cos[:, None], sin[:, None], keep_p, keep_r, n_prompts, P, B, R1, row_prompt,
                              (H, KV, hd, eps, scale))
    # the token predicting response token j of row b: its prompt's last for j = 0, else its own token j - 1
    b, j = resp.nonzero(as_tuple=True)
    start = torch.cumsum(row_len, 0) - row_len
    src = torch.where(j == 0, row_prompt[b] * P + P - 1, Np + start[b] + j - 1)
    logits = model.lm_head(F.rms_norm(h[src], (h.shape[-1],), inner.norm.weight, eps)).float()
    if temperature != 1.0:
        logits = logits / temperature
    lp = torch.log_softmax(logits, -1).gather(-1, input_ids[:, P:][resp][:, None]).squeeze(-1)
    return torch.zeros(resp.shape, dtype=lp.dtype, device=lp.device).index_put((b, j), lp)


def supports(model) -> bool:
    """Plain Qwen3 (what the lean decode path covers), with untied or tied heads alike."""
    return FastDecoder.supports(model)
