"""Batched sampling from a Hugging Face causal LM with a KV cache (CPU or CUDA).

A lean loop around the model's forward rather than ``generate``: for tiny models the per-token
overhead of ``generate`` (logits processors, stopping criteria, cache bookkeeping) dominates the
cost, and an explicit ``torch.Generator`` makes every sample a pure function of its seed, which is
what makes a killed-and-resumed run reproduce an uninterrupted one exactly.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from transformers import DynamicCache

from s2lpo.rollout.decode import FastDecoder

# a GRPO group repeats its prompt G times: prefill each distinct context once and share its KV cache (the same
# samples either way; benchmarks/bench_trainer_vs_trl.py turns it off to show what it saves)
SHARE_PREFILL = True
# sample through the lean decode path (s2lpo.rollout.decode) where it covers the model; the benchmark turns it off
# to show what it saves over the Hugging Face forward
FAST_DECODE = True
# the loop after the prefill in one compiled call where the compiled step samples, no filter or penalty applies and
# the compiled Exp(1) draws are torch's own (exp_draws_match): csrc/sample_step.cpp's sample_loop; off: the Python
# loop around the compiled step with the tensor operations (_python_step), the same tokens
COMPILED_LOOP = True


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 48
    presence_penalty: float = 0.0  # subtracted from the logits of tokens already generated (vLLM's semantics)

    def as_dict(self) -> dict:
        d = asdict(self)
        if not d["presence_penalty"]:  # keeps the explorer caches' keys of runs without a penalty
            del d["presence_penalty"]
        return d


@dataclass
class Sample:
    tokens: list[int]
    logprobs: list[float]  # log-prob of each token under the sampling distribution (behaviour policy)
    finish_reason: str  # "stop" (eos sampled) or "length"


def left_pad(contexts: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(c) for c in contexts)
    ids = torch.full((len(contexts), width), pad_id, dtype=torch.long)
    att = torch.zeros((len(contexts), width), dtype=torch.long)
    for i, c in enumerate(contexts):
        ids[i, width - len(c) :] = torch.tensor(c, dtype=torch.long)
        att[i, width - len(c) :] = 1
    return ids.to(device), att.to(device)


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1, None]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) > top_p  # keep the smallest prefix reaching top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.empty_like(logits).scatter_(-1, order, sorted_logits)
    return logits


def _draw(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``torch.multinomial(probs, 1)`` spelled out (what it computes for one sample: ``argmax(p / q)`` with
    ``q ~ Exp(1)`` drawn for every entry of ``probs``), so that a caller can draw for all rows and keep only
    some: the generator advances the same way whichever rows are kept."""
    return torch.argmax(probs / exp_draws(probs, generator), dim=-1)


def exp_draws(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The Exp(1) draws of one sampling step, one for every entry of ``probs`` (torch.multinomial's)."""
    return torch.empty_like(probs).exponential_(1, generator=generator)


@functools.cache
def exp_draws_match(kernel) -> bool:
    """Whether the compiled ``exp_draws`` is torch's own ``exponential_`` on this machine (the same floats, the
    generator left in the same state): once per process, on a probe. Where torch draws otherwise the sampler keeps
    torch's draws."""
    ref_gen, our_gen = torch.Generator().manual_seed(20261202), torch.Generator().manual_seed(20261202)
    ref = torch.empty(5, 67).exponential_(1, generator=ref_gen)
    ours = kernel.exp_draws(our_gen, 5, 67, torch.arange(5))
    return torch.equal(ref, ours) and torch.equal(ref_gen.get_state(), our_gen.get_state())


def _distinct_prefill(contexts: list[list[int]], pad_id: int, device):
    """Each distinct context once (left-padded ids, mask, positions) and each row's index among them."""
    keys = [tuple(c) if SHARE_PREFILL else (i, *c) for i, c in enumerate(contexts)]
    distinct: dict[tuple[int, ...], int] = {}
    row_ctx = torch.tensor([distinct.setdefault(k, len(distinct)) for k in keys], device=device)
    uids, uatt = left_pad([list(k) if SHARE_PREFILL else list(k[1:]) for k in distinct], pad_id, device)
    return uids, uatt, (uatt.cumsum(-1) - 1).clamp(min=0), row_ctx


def _python_step(logits, probs, live, done, toks, lps, lengths, seen, t, params, eos_id, pad_id, generator):
    """One sampling step's bookkeeping in tensor operations (any filter or penalty): the live rows' tokens and how
    many live rows are done now."""
    if seen is not None:
        logits = logits - params.presence_penalty * seen[live]
    logp = torch.log_softmax(filter_logits(logits / params.temperature, params.top_k, params.top_p), -1)
    probs[live] = logp.exp()
    tok = _draw(probs, generator)[live]
    tok = torch.where(done[live], pad_id, tok)
    toks[live, t] = tok
    if seen is not None:
        seen[live, tok] = True
    lps[live, t] = torch.where(done[live], 0.0, logp.gather(-1, tok[:, None]).squeeze(-1))
    hit = (tok == eos_id) & ~done[live]
    lengths[live[hit]] = t + 1
    done[live[hit]] = True
    return tok, int(done[live].sum())


def _samples(toks: torch.Tensor, lps: torch.Tensor, lengths: torch.Tensor, done: torch.Tensor) -> list[Sample]:
    toks_l, lps_l, len_l, done_l = toks.tolist(), lps.tolist(), lengths.tolist(), done.tolist()
    return [Sample(toks_l[i][: len_l[i]], lps_l[i][: len_l[i]], "stop" if done_l[i] else "length")
            for i in range(len(toks_l))]


@torch.inference_mode()
def sample_batch_hf(
    model,
    contexts: list[list[int]],
    params: SamplingParams,
    eos_id: int,
    pad_id: int,
    generator: torch.Generator,
) -> list[Sample]:
    """Sample one continuation per context through the model's own (Hugging Face) forward: any architecture,
    and the reference the fast path (``sample_batch``) is pinned to."""
    device = next(model.parameters()).device
    n = len(contexts)
    uids, uatt, upos, row_ctx = _distinct_prefill(contexts, pad_id, device)
    cache = DynamicCache()
    out = model(input_ids=uids, attention_mask=uatt, position_ids=upos, past_key_values=cache, use_cache=True,
                logits_to_keep=1)
    if len(uids) < n:
        cache.batch_select_indices(row_ctx)
    logits = out.logits[row_ctx, -1].float()
    att, pos = uatt[row_ctx], upos[row_ctx]
    next_pos = pos[:, -1:] + 1
    toks = torch.full((n, params.max_new_tokens), pad_id, dtype=torch.long, device=device)
    lps = torch.zeros((n, params.max_new_tokens), dtype=torch.float32, device=device)
    done = torch.zeros(n, dtype=torch.bool, device=device)
    lengths = torch.full((n,), params.max_new_tokens, dtype=torch.long, device=device)
    seen = torch.zeros_like(logits, dtype=torch.bool) if params.presence_penalty else None
    for t in range(params.max_new_tokens):
        if seen is not None:
            logits = logits - params.presence_penalty * seen
        logp = torch.log_softmax(filter_logits(logits / params.temperature, params.top_k, params.top_p), -1)
        tok = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(-1)
        tok = torch.where(done, torch.full_like(tok, pad_id), tok)
        toks[:, t] = tok
        if seen is not None:
            seen[torch.arange(n, device=device), tok] = True
        lps[:, t] = torch.where(done, 0.0, logp.gather(-1, tok[:, None]).squeeze(-1))
        hit = (tok == eos_id) & ~done
        lengths = torch.where(hit, t + 1, lengths)
        done |= hit
        if bool(done.all()) or t == params.max_new_tokens - 1:
            break
        att = torch.cat([att, torch.ones((n, 1), dtype=att.dtype, device=device)], dim=-1)
        out = model(input_ids=tok[:, None], attention_mask=att, position_ids=next_pos, past_key_values=cache,
                    use_cache=True)
        logits = out.logits[:, -1].float()
        next_pos = next_pos + 1
    return _samples(toks, lps, lengths, done)


@torch.inference_mode()
def sample_batch(
    dec: FastDecoder,
    contexts: list[list[int]],
    params: SamplingParams,
    eos_id: int,
    pad_id: int,
    generator: torch.Generator,
) -> list[Sample]:
    """Sample one continuation per context (contexts may differ in length) with the lean forward of
    ``s2lpo.rollout.decode``: the same samples as ``sample_batch_hf`` for the same generator.

    Rows that sampled eos leave the batch (and the KV cache: at once under the compiled step, else once they are a
    quarter of it); the random draws are still made for every row, so each row's draws do not depend on when the
    others finished.
    """
    device = dec.device
    n, T = len(contexts), params.max_new_tokens
    uids, uatt, upos, row_ctx = _distinct_prefill(contexts, pad_id, device)
    width, u = uids.shape[1], len(uids)
    # rows sharing a prompt: the compiled step reads its keys from the prompt's cache row (KVCache.share), the Python
    # step from a copy per row (KVCache.select)
    shared = u < n and dec.kernel is not None
    cache, rope = dec.cache(u + n if shared else u, width + T), dec.rope_table(width + T)
    logits = dec.forward(uids, upos, cache, 0, uatt.bool(), rope)[row_ctx]
    if shared:
        cache.share(row_ctx, width)
    elif u < n:
        cache.select(row_ctx, filled=width)
    keys = torch.ones((n, width + T), dtype=torch.bool, device=device)
    keys[:, :width] = uatt.bool()[row_ctx]
    next_pos = upos[row_ctx, -1:] + 1
    toks = torch.full((n, T), pad_id, dtype=torch.long, device=device)
    lps = torch.zeros((n, T), dtype=torch.float32, device=device)
    done = torch.zeros(n, dtype=torch.bool, device=device)
    lengths = torch.full((n,), T, dtype=torch.long, device=device)
    seen = torch.zeros((n, logits.shape[-1]), dtype=torch.bool, device=device) if params.presence_penalty else None
    if (dec.kernel is not None and COMPILED_LOOP and not params.top_k and params.top_p >= 1.0
            and not params.presence_penalty and exp_draws_match(dec.kernel)):
        dec.sample_loop(logits, generator, toks, lps, lengths, done, next_pos.view(-1), keys, cache, width, rope,
                        eos_id, params.temperature)
        return _samples(toks, lps, lengths, done)
    live = torch.arange(n, device=device)  # the rows in the batch (and the cache), in order
    probs = torch.zeros((n, logits.shape[-1]), dtype=torch.float32, device=device)
    for t in range(T):
        tok, n_gone = _python_step(logits, probs, live, done, toks, lps, lengths, seen, t, params, eos_id, pad_id,
                                   generator)
        if n_gone == len(live) or t == T - 1:  # the rows that left the batch were done
            break
        # drop the finished rows from the batch (and the cache): at once where that is an index (the compiled
        # step), else once they are a quarter of the batch (the cache is copied without them)
        if n_gone and (cache.indirect or 4 * n_gone >= len(live)):
            keep = torch.nonzero(~done[live]).squeeze(-1)
            live, tok = live[keep], tok[keep]
            cache.drop(keep)
        logits = dec.forward(tok[:, None], next_pos[live], cache, width + t, keys[live], rope)
        next_pos = next_pos + 1
    return _samples(toks, lps, lengths, done)


def fast_decoder(model) -> FastDecoder | None:
    """The lean forward of ``model`` when it covers its architecture (a bf16 copy of the weights under bf16
    autocast), else None."""
    if not FastDecoder.supports(model):
        return None
    device = next(model.parameters()).device
    amp = torch.is_autocast_enabled(device.type)
    return FastDecoder(model, torch.get_autocast_dtype(device.type) if amp else None)


def sample(
    model,
    contexts: list[list[int]],
    params: SamplingParams,
    eos_id: int,
    pad_id: int,
    generator: torch.Generator,
    batch_size: int = 256,
    progress: Callable[[int], None] | None = None,
) -> list[Sample]:
    """Sample one continuation per context, ``batch_size`` contexts at a time (``progress(done)`` after each)."""
    out: list[Sample] = []
    dec = fast_decoder(model) if FAST_DECODE else None
    device = next(model.parameters()).device
    # the fast path holds its own (bf16 under autocast) copy of the weights: autocast would re-cast them per call
    with torch.autocast(device.type, enabled=False) if dec is not None else contextlib.nullcontext():
        for b in range(0, len(contexts), batch_size):
            chunk = contexts[b : b + batch_size]
            out += (sample_batch(dec, chunk, params, eos_id, pad_id, generator) if dec is not None
                    else sample_batch_hf(model, chunk, params, eos_id, pad_id, generator))
            if progress:
                progress(len(out))
    return out
