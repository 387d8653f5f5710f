"""A lean incremental forward of a Qwen3-architecture causal LM, for sampling.

For the tiny models of the embedded default, Hugging Face's forward spends most of a decode step outside
the matmuls: mask construction, per-layer dispatch, a KV cache grown by concatenation every token. This
module computes the same function with the model's own weights, read once per sampling call: q/k/v and
gate/up fused into one matmul each, a KV cache allocated once for the whole continuation, rows that
finished dropped from the batch, and optionally a bf16 copy of the weights. ``tests/test_sampler.py`` pins
it to the Hugging Face forward (same tokens for a seed, log-probs within 1e-5).

Models of other architectures (or Qwen3 variants it does not cover: attention bias, sliding windows,
scaled RoPE) are sampled through the Hugging Face forward instead (``FastDecoder.supports``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class _Layer:
    in_norm: torch.Tensor
    qkv: torch.Tensor  # [(H + 2·KV)·hd, hidden]
    q_norm: torch.Tensor
    k_norm: torch.Tensor
    o: torch.Tensor
    post_norm: torch.Tensor
    gate_up: torch.Tensor  # [2·inter, hidden]
    down: torch.Tensor


class KVCache:
    """Keys and values of every layer for ``rows`` sequences of up to ``length`` positions, allocated once."""

    def __init__(self, layers: int, rows: int, kv_heads: int, length: int, head_dim: int, dtype, device):
        self.kv = torch.zeros((layers, 2, rows, kv_heads, length, head_dim), dtype=dtype, device=device)

    def select(self, rows: torch.Tensor) -> None:
        self.kv = self.kv.index_select(2, rows)


class FastDecoder:
    """The function of a ``Qwen3ForCausalLM`` (eval mode), over a preallocated :class:`KVCache`."""

    def __init__(self, model, dtype: torch.dtype | None = None):
        cfg, inner = model.config, model.model
        self.dtype = dtype or model.dtype
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.eps = cfg.rms_norm_eps
        self.scale = self.head_dim**-0.5

        def w(t: torch.Tensor) -> torch.Tensor:
            return t.detach().to(self.dtype)

        self.layers = [
            _Layer(w(lay.input_layernorm.weight),
                   w(torch.cat([lay.self_attn.q_proj.weight, lay.self_attn.k_proj.weight, lay.self_attn.v_proj.weight])),
                   w(lay.self_attn.q_norm.weight), w(lay.self_attn.k_norm.weight), w(lay.self_attn.o_proj.weight),
                   w(lay.post_attention_layernorm.weight),
                   w(torch.cat([lay.mlp.gate_proj.weight, lay.mlp.up_proj.weight])), w(lay.mlp.down_proj.weight))
            for lay in inner.layers
        ]
        self.embed, self.norm, self.lm_head = w(inner.embed_tokens.weight), w(inner.norm.weight), w(model.lm_head.weight)
        self.inv_freq = inner.rotary_emb.inv_freq.detach().float()
        self.rope_scale = float(inner.rotary_emb.attention_scaling)
        self.device = self.embed.device

    @staticmethod
    def supports(model) -> bool:
        cfg = model.config
        rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
        return (cfg.model_type == "qwen3" and not getattr(cfg, "attention_bias", False)
                and all(t == "full_attention" for t in getattr(cfg, "layer_types", None) or ["full_attention"])
                and rope.get("rope_type", "default") == "default" and cfg.hidden_act == "silu"
                and not getattr(cfg, "pretraining_tp", 1) > 1)

    def cache(self, rows: int, length: int) -> KVCache:
        return KVCache(len(self.layers), rows, self.kv_heads, length, self.head_dim, self.dtype, self.device)

    def _rms(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)

    def _rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin

    def forward(self, ids: torch.Tensor, pos: torch.Tensor, cache: KVCache, start: int,
                key_mask: torch.Tensor) -> torch.Tensor:
        """Logits ([rows, vocab], float32) at the last of ``ids`` ([rows, s], written to the cache at positions
        ``start .. start+s-1``); ``pos`` the tokens' RoPE positions, ``key_mask`` ([rows, >= start+s], bool)
        which cached positions are real tokens (left padding is not)."""
        n, s = ids.shape
        end = start + s
        freqs = pos.float()[..., None] * self.inv_freq  # [n, s, hd/2]: HF's outer product, exactly
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = (emb.cos() * self.rope_scale).to(self.dtype)[:, None]
        sin = (emb.sin() * self.rope_scale).to(self.dtype)[:, None]
        mask = key_mask[:, None, None, :end]
        if s > 1:  # causal within the new tokens; a padded query attends to itself (never an empty row)
            q_at = torch.arange(start, end, device=ids.device)[:, None]
            k_at = torch.arange(end, device=ids.device)[None]
            mask = (mask & (k_at <= q_at)) | (k_at == q_at)
        h = self.embed[ids]
        H, KV, hd = self.heads, self.kv_heads, self.head_dim
        for i, lay in enumerate(self.layers):
            x = self._rms(h, lay.in_norm)
            qkv = F.linear(x, lay.qkv).view(n, s, H + 2 * KV, hd)
            q = self._rms(qkv[:, :, :H], lay.q_norm).transpose(1, 2)
            k = self._rms(qkv[:, :, H : H + KV], lay.k_norm).transpose(1, 2)
            v = qkv[:, :, H + KV :].transpose(1, 2)
            cache.kv[i, 0, :, :, start:end] = self._rope(k, cos, sin)
            cache.kv[i, 1, :, :, start:end] = v
            att = F.scaled_dot_product_attention(self._rope(q, cos, sin), cache.kv[i, 0, :, :, :end],
                                                 cache.kv[i, 1, :, :, :end], attn_mask=mask, scale=self.scale,
                                                 enable_gqa=H != KV)
            h = h + F.linear(att.transpose(1, 2).reshape(n, s, H * hd), lay.o)
            gate, up = F.linear(self._rms(h, lay.post_norm), lay.gate_up).chunk(2, dim=-1)
            h = h + F.linear(F.silu(gate) * up, lay.down)
        return F.linear(self._rms(h[:, -1], self.norm), self.lm_head).float()
