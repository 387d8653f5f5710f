"""A lean incremental forward of a Qwen3-architecture causal LM, for sampling.

For the tiny models of the embedded default, Hugging Face's forward spends most of a decode step outside
the matmuls: mask construction, per-layer dispatch, a KV cache grown by concatenation every token. This
module computes the same function with the model's own weights, read once per sampling call: q/k/v and
gate/up fused into one matmul each, a KV cache allocated once for the whole continuation, rows that
finished dropped from the batch, and optionally a bf16 copy of the weights. An fp32 decode step on the CPU
(one new token per row) runs as one compiled call (``s2lpo.rollout.kernel``, ``csrc/decode_step.cpp``) where
that could be built — and so does a prefill — its matmuls against weights laid out once per sampling call
(``PACKED_WEIGHTS``).
``tests/test_decode.py`` pins both to the Hugging Face forward (same tokens for a seed, log-probs within 5e-5:
float32 summation order), ``tests/test_decode_kernel.py`` the compiled step to this module's.

Models of other architectures (or Qwen3 variants it does not cover: attention bias, sliding windows,
scaled RoPE) are sampled through the Hugging Face forward instead (``FastDecoder.supports``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from s2lpo.rollout.kernel import kernels

# decode steps through the compiled step (s2lpo.rollout.kernel) where it covers them; the benchmark turns it off
# to show what it saves
COMPILED_STEP = True


# the matmul weights laid out once per sampling call for the compiled kernels' own small-row matmul
# (csrc/packed_gemm.cpp, where it is vectorised: AVX2 and FMA), which the compiled step (and prefill) uses; off: MKL's
# sgemm (torch.mm), which lays the weight out again on every call (tests/test_decode_kernel.py checks both). Measured
# on 2 AMD EPYC cores, toy-l's five matmul shapes at once: 8 rows 273 µs through torch.mm against 105 µs, 64 rows 875
# against 620; the layout is a plain copy (~0.5 ms for the whole model), where oneDNN's (stops 24-25) cost ~0.3-0.5 ms
# a weight and paid off for gate_up only
PACKED_WEIGHTS = True


# where the matmul weights (qkv, o, gate_up, down) sit among a layer's seven in FastDecoder._flat (decode_step.cpp's
# w[1], w[3], w[5], w[6])
MATMULS = (1, 3, 5, 6)


@dataclass(frozen=True)
class _Layer:
    in_norm: torch.Tensor
    qkv: torch.Tensor  # [(H + 2·KV)·hd, hidden] (or packed for the compiled step: kernels().pack_weights)
    qk_norm: torch.Tensor  # [H + KV, hd]: q_norm's weight for every query head, k_norm's for every kv head
    o: torch.Tensor
    post_norm: torch.Tensor
    gate_up: torch.Tensor  # [2·inter, hidden]
    down: torch.Tensor


def rope_table(inv_freq: torch.Tensor, scale: float, positions: int,
               dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sign-folded sin of every position below ``positions`` ([positions, head_dim]): Hugging Face's
    outer product, exactly; rotate_half's negation is moved onto sin (the same products, bit for bit), so RoPE
    is ``x·cos + x.roll(head_dim / 2, -1)·sin``."""
    freqs = torch.arange(positions, device=inv_freq.device).float()[:, None] * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    half = emb.shape[-1] // 2
    sin = emb.sin() * scale
    sin[:, :half] = -sin[:, :half]
    return (emb.cos() * scale).to(dtype), sin.to(dtype)


_NO_ROWS = torch.empty(0, dtype=torch.long)


class KVCache:
    """Keys and values of every layer for ``rows`` sequences of up to ``length`` positions, allocated once.

    ``rows`` (None: the identity) maps the batch's rows to the cache's: :meth:`drop` under the compiled step
    only narrows it, where the Python step copies the cache without the dropped rows (12 MB a copy for toy-l's
    64 rows, 3 ms)."""

    def __init__(self, layers: int, rows: int, kv_heads: int, length: int, head_dim: int, dtype, device,
                 indirect: bool = False):
        # the compiled step reads only positions it (or the prefill) wrote: its cache is left unwritten, so the pages
        # it never reaches (a shared-prompt row's prompt positions) are never touched (zeroing 72 rows of toy-l's
        # cache cost 7 ms a sampling call)
        alloc = torch.empty if indirect else torch.zeros
        self.k = alloc((layers, rows, kv_heads, length, head_dim), dtype=dtype, device=device)
        self.v = alloc((layers, rows, kv_heads, length, head_dim), dtype=dtype, device=device)
        self.indirect = indirect
        self.rows: torch.Tensor | None = None
        # a shared-prompt cache (share): each row's positions below split are in its prompt's cache row, prefix[row]
        self.prefix: torch.Tensor | None = None
        self.split = 0

    def select(self, rows: torch.Tensor, filled: int | None = None) -> None:
        """Copy the cache to these rows (in this order; a row may repeat). ``filled``: only the positions below it
        hold anything yet (every later one is written by the step at that position before any step reads it):
        only those are copied, into uninitialised memory."""
        if self.prefix is not None:
            raise RuntimeError("KVCache.select: a shared-prompt cache is read through its row indices, not copied")
        if self.rows is not None:
            rows, self.rows = self.rows[rows], None
        if filled is None:
            self.k, self.v = self.k.index_select(1, rows), self.v.index_select(1, rows)
            return
        for name in ("k", "v"):
            old = getattr(self, name)
            new = torch.empty((old.shape[0], len(rows), *old.shape[2:]), dtype=old.dtype, device=old.device)
            new[:, :, :, :filled] = old[:, :, :, :filled].index_select(1, rows)
            setattr(self, name, new)

    def share(self, prompt_rows: torch.Tensor, filled: int) -> None:
        """The compiled step's :meth:`select` without the copy: the first ``k.shape[1] - len(prompt_rows)`` cache rows
        hold the prefilled prompts (positions below ``filled``); batch row i reads those positions from cache row
        ``prompt_rows[i]`` and writes its own from ``filled`` on into a cache row of its own (after the prompts').
        For toy-l's 64 rows of 8 prompts this saves a 7.5 ms copy per sampling call, and the prompts' keys are read
        from one place by all the rows that share them."""
        n = len(prompt_rows)
        if not self.indirect or self.rows is not None or self.k.shape[1] < n + int(prompt_rows.max()) + 1:
            raise RuntimeError("KVCache.share: an indirect cache with a row for each prompt and each batch row")
        self.rows = torch.arange(self.k.shape[1] - n, self.k.shape[1], device=self.k.device)
        self.prefix, self.split = prompt_rows, filled

    def drop(self, keep: torch.Tensor) -> None:
        """Keep only these rows of the batch (increasing)."""
        if not self.indirect:
            return self.select(keep)
        self.rows = keep if self.rows is None else self.rows[keep]
        if self.prefix is not None:
            self.prefix = self.prefix[keep]

    def row_index(self, n: int) -> torch.Tensor:
        return self.rows if self.rows is not None else torch.arange(n, device=self.k.device)

    def step_args(self, n: int) -> tuple:
        """What the compiled step reads of the cache for a batch of ``n`` rows: the keys, the values, each row's
        cache row, each row's prompt row (empty when not shared) and the position below which it is read there."""
        return (self.k, self.v, self.row_index(n), self.prefix if self.prefix is not None else _NO_ROWS, self.split)


class FastDecoder:
    """The function of a ``Qwen3ForCausalLM`` (eval mode), over a preallocated :class:`KVCache`."""

    def __init__(self, model, dtype: torch.dtype | None = None):
        cfg, inner = model.config, model.model
        self.dtype = dtype or model.dtype
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.eps = cfg.rms_norm_eps
        self.scale = self.head_dim**-0.5
        self.kernel = (kernels() if COMPILED_STEP and self.dtype == torch.float32 and model.device.type == "cpu"
                       and self.head_dim <= 512 else None)
        # the compiled step's matmul where it is vectorised: the weights laid out for it (q/k/v and gate/up straight
        # from the model's parts), else dense (concatenated), for torch's; the Python step's are always dense
        pack = self.kernel is not None and PACKED_WEIGHTS and self.kernel.packed_gemm_simd()

        def w(t: torch.Tensor) -> torch.Tensor:
            return t.detach().to(self.dtype)

        def mat(*parts: torch.Tensor) -> torch.Tensor:
            ws = [w(p) for p in parts]
            if pack:
                return self.kernel.pack_weights(ws)
            return torch.cat(ws) if len(ws) > 1 else ws[0]

        self.layers = [
            _Layer(w(lay.input_layernorm.weight),
                   mat(lay.self_attn.q_proj.weight, lay.self_attn.k_proj.weight, lay.self_attn.v_proj.weight),
                   w(torch.cat([lay.self_attn.q_norm.weight.expand(self.heads, -1),
                                lay.self_attn.k_norm.weight.expand(self.kv_heads, -1)])),
                   mat(lay.self_attn.o_proj.weight),
                   w(lay.post_attention_layernorm.weight),
                   mat(lay.mlp.gate_proj.weight, lay.mlp.up_proj.weight), mat(lay.mlp.down_proj.weight))
            for lay in inner.layers
        ]
        self.embed, self.norm, self.lm_head = w(inner.embed_tokens.weight), w(inner.norm.weight), mat(model.lm_head.weight)
        self.inv_freq = inner.rotary_emb.inv_freq.detach().float()
        self.rope_scale = float(inner.rotary_emb.attention_scaling)
        self.device = self.embed.device
        self._flat = [t for lay in self.layers for t in (lay.in_norm, lay.qkv, lay.qk_norm, lay.o, lay.post_norm,
                                                          lay.gate_up, lay.down)]
        # the compiled step's model arguments, after the cos and sin tables (decode_step, sample_loop)
        self._model_args = (self._flat, self.embed, self.norm, self.lm_head, self.heads, self.kv_heads,
                            self.head_dim, self.eps, self.scale)

    def step_matmul_weights(self) -> list[torch.Tensor]:
        """The weights the compiled step multiplies by: each layer's qkv, o, gate_up and down, and lm_head."""
        return [t for i, t in enumerate(self._flat) if i % 7 in MATMULS] + [self.lm_head]

    @staticmethod
    def supports(model) -> bool:
        cfg = model.config
        rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
        return (cfg.model_type == "qwen3" and not getattr(cfg, "attention_bias", False)
                and all(t == "full_attention" for t in getattr(cfg, "layer_types", None) or ["full_attention"])
                and rope.get("rope_type", "default") == "default" and cfg.hidden_act == "silu"
                and not getattr(cfg, "pretraining_tp", 1) > 1)

    def cache(self, rows: int, length: int) -> KVCache:
        return KVCache(len(self.layers), rows, self.kv_heads, length, self.head_dim, self.dtype, self.device,
                       indirect=self.kernel is not None)

    def rope_table(self, positions: int) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`rope_table` of this model, once per sampling call instead of once per layer and token."""
        return rope_table(self.inv_freq, self.rope_scale, positions, self.dtype)

    def sample_loop(self, logits: torch.Tensor, generator: torch.Generator, toks: torch.Tensor, lps: torch.Tensor,
                    lengths: torch.Tensor, done: torch.Tensor, next_pos: torch.Tensor, keys: torch.Tensor,
                    cache: KVCache, width: int, rope: tuple[torch.Tensor, torch.Tensor], eos_id: int,
                    temperature: float) -> int:
        """The compiled sampling loop after a prefill (``csrc/sample_step.cpp``, the plain case of
        ``sampler.sample_batch``): tokens, log-probs, lengths and done rows of every row ([n, T], [n]) written in
        place; ``logits`` [n, vocab] at the prefill's last tokens, ``next_pos`` [n] the rows' first new positions,
        ``keys`` [n, width + T] their real cache positions. Returns the decode steps it ran."""
        return self.kernel.sample_loop(logits.contiguous(), generator, toks, lps, lengths, done, next_pos.contiguous(),
                                       keys, *cache.step_args(logits.shape[0]), width, *rope, *self._model_args, eos_id,
                                       temperature)

    def forward(self, ids: torch.Tensor, pos: torch.Tensor, cache: KVCache, start: int, key_mask: torch.Tensor,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Logits ([rows, vocab], float32) at the last of ``ids`` ([rows, s], written to the cache at positions
        ``start .. start+s-1``); ``pos`` the tokens' RoPE positions, ``key_mask`` ([rows, >= start+s], bool)
        which cached positions are real tokens (left padding is not); ``rope`` a :meth:`rope_table` covering
        ``pos`` (computed here when not given)."""
        n, s = ids.shape
        end = start + s
        cos_t, sin_t = rope if rope is not None else self.rope_table(int(pos.max()) + 1)
        if self.kernel is not None:  # a decode step or a prefill in one compiled call
            return self.kernel.decode_step(ids.reshape(-1), pos.reshape(-1).contiguous(), *cache.step_args(n), start,
                                           key_mask.contiguous(), cos_t, sin_t, *self._model_args)
        if cache.rows is not None:
            cache.select(torch.arange(n, device=ids.device))  # the Python step reads the cache's rows in order
        cos, sin = cos_t[pos][:, :, None], sin_t[pos][:, :, None]  # [n, s, 1, hd]
        mask = key_mask[:, None, :end]
        if s > 1:  # causal within the new tokens; a padded query attends to itself (never an empty row)
            q_at = torch.arange(start, end, device=ids.device)[:, None]
            k_at = torch.arange(end, device=ids.device)[None]
            mask = (mask & (k_at <= q_at)) | (k_at == q_at)
        if s == 1:  # [n, 1, 1, end]: broadcast over kv heads and the queries sharing one
            bias = torch.zeros(mask.shape, dtype=self.dtype, device=ids.device).masked_fill_(~mask, float("-inf"))[:, None]
        h = self.embed[ids]
        H, KV, hd = self.heads, self.kv_heads, self.head_dim
        half = hd // 2
        for i, lay in enumerate(self.layers):
            qkv = F.linear(F.rms_norm(h, (h.shape[-1],), lay.in_norm, self.eps), lay.qkv).view(n, s, H + 2 * KV, hd)
            qk = F.rms_norm(qkv[:, :, : H + KV], (hd,), eps=self.eps) * lay.qk_norm  # q_norm and k_norm at once
            qk = qk * cos + qk.roll(half, -1) * sin  # RoPE: x·cos + rotate_half(x)·sin
            if s == 1:  # one query token: two batched matmuls, the queries grouped by the kv head they share
                cache.k[i, :, :, start] = qk[:, 0, H:]  # (on CPU 1.1x faster a decode step than the fused kernel)
                cache.v[i, :, :, start] = qkv[:, 0, H + KV :]
                q = qk[:, :, :H].reshape(n, KV, H // KV, hd)
                scores = torch.matmul(q, cache.k[i, :, :, :end].transpose(-1, -2)) * self.scale + bias
                att = torch.matmul(scores.softmax(-1), cache.v[i, :, :, :end]).view(n, H, 1, hd)
            else:  # a prefill: the fused kernel, as the Hugging Face forward runs it
                cache.k[i, :, :, start:end] = qk[:, :, H:].transpose(1, 2)
                cache.v[i, :, :, start:end] = qkv[:, :, H + KV :].transpose(1, 2)
                k = cache.k[i, :, :, :end] if start else qk[:, :, H:].transpose(1, 2)
                att = F.scaled_dot_product_attention(qk[:, :, :H].transpose(1, 2), k, cache.v[i, :, :, :end],
                                                     attn_mask=mask[:, None], scale=self.scale, enable_gqa=H != KV)
            h = h + F.linear(att.transpose(1, 2).reshape(n, s, H * hd), lay.o)
            gate, up = F.linear(F.rms_norm(h, (h.shape[-1],), lay.post_norm, self.eps), lay.gate_up).chunk(2, dim=-1)
            h = h + F.linear(F.silu(gate) * up, lay.down)
        return F.linear(F.rms_norm(h[:, -1], (h.shape[-1],), self.norm, self.eps), self.lm_head).float()
