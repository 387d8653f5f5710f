"""The lean decode path (``s2lpo.rollout.decode``) is the model's function: pinned to the Hugging Face forward."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

import s2lpo.rollout.sampler as sampler
from s2lpo.rollout.decode import FastDecoder

PARAMS = [sampler.SamplingParams(max_new_tokens=40),
          sampler.SamplingParams(temperature=1.3, top_p=0.9, top_k=20, max_new_tokens=40, presence_penalty=0.5)]
# float32 summation order alone moves this model's log-probs by ~1e-5: the Hugging Face forward itself gives
# log-probs 1.1e-5 apart for the same tokens when the batch is padded 3 columns wider, and its incremental
# (sampling) and full-sequence (training) passes 1.6e-5 apart; the fast path's decode attention (two matmuls)
# sums in another order than the fused kernel, 1.0-1.6e-5 from it over four seeds
LOGPROB_TOL = 5e-5


@pytest.fixture(scope="module")
def model_and_contexts(tiny_family):
    model = AutoModelForCausalLM.from_pretrained(tiny_family.model_dir("s"), dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tiny_family.tokenizer_dir)
    prompts = [p.prompt for p in tiny_family.splits().eval[:6]] + ["Q: 7-3*5+2=? 3*5=15,"]  # lengths differ
    contexts = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts for _ in range(6)]
    return model, tok, contexts


@pytest.mark.parametrize("params", PARAMS, ids=["plain", "filtered"])
def test_the_fast_path_samples_what_the_hugging_face_forward_samples(model_and_contexts, params):
    """Same generator seed: the same tokens, log-probs within ``LOGPROB_TOL``, the same finish reasons; rows finish at
    different steps, so rows leave the batch (and its KV cache) while others continue."""
    model, tok, contexts = model_and_contexts
    assert FastDecoder.supports(model)
    for seed in (0, 1):
        ref = sampler.sample_batch_hf(model, contexts, params, tok.eos_token_id, tok.pad_token_id,
                                      torch.Generator().manual_seed(seed))
        fast = sampler.sample(model, contexts, params, tok.eos_token_id, tok.pad_token_id,
                              torch.Generator().manual_seed(seed))
        assert [s.tokens for s in fast] == [s.tokens for s in ref]
        assert [s.finish_reason for s in fast] == [s.finish_reason for s in ref]
        assert max(abs(a - b) for x, y in zip(fast, ref) for a, b in zip(x.logprobs, y.logprobs)) < LOGPROB_TOL
        stops = {len(s.tokens) for s in ref if s.finish_reason == "stop"}
        assert len(stops) >= 3 and sum(s.finish_reason == "stop" for s in ref) >= len(ref) // 2


def test_the_fast_logits_are_the_models(model_and_contexts):
    """A prefill of left-padded contexts, then one token: the logits of ``FastDecoder.forward`` are the model's."""
    model, tok, contexts = model_and_contexts
    ids, att = sampler.left_pad(contexts[::6], tok.pad_token_id, "cpu")
    pos = (att.cumsum(-1) - 1).clamp(min=0)
    dec = FastDecoder(model)
    cache = dec.cache(len(ids), ids.shape[1] + 1)
    keys = torch.ones((len(ids), ids.shape[1] + 1), dtype=torch.bool)
    keys[:, : ids.shape[1]] = att.bool()
    with torch.inference_mode():
        first = dec.forward(ids, pos, cache, 0, keys)
        nxt = first.argmax(-1)
        second = dec.forward(nxt[:, None], pos[:, -1:] + 1, cache, ids.shape[1], keys)
        full = model(input_ids=torch.cat([ids, nxt[:, None]], 1), attention_mask=torch.cat([att, att[:, -1:] * 0 + 1], 1),
                     position_ids=torch.cat([pos, pos[:, -1:] + 1], 1)).logits
    assert torch.allclose(first, full[:, -2], atol=1e-5) and torch.allclose(second, full[:, -1], atol=1e-5)


def test_other_architectures_sample_through_the_hugging_face_forward(model_and_contexts):
    _, tok, contexts = model_and_contexts
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128)).eval()
    assert not FastDecoder.supports(llama) and sampler.fast_decoder(llama) is None
    params = sampler.SamplingParams(max_new_tokens=6)
    out = sampler.sample(llama, contexts[:4], params, tok.eos_token_id, tok.pad_token_id, torch.Generator().manual_seed(0))
    ref = sampler.sample_batch_hf(llama, contexts[:4], params, tok.eos_token_id, tok.pad_token_id,
                                  torch.Generator().manual_seed(0))
    assert [s.tokens for s in out] == [s.tokens for s in ref]


def test_under_bf16_autocast_the_fast_path_samples_from_a_bf16_copy(model_and_contexts):
    model, tok, contexts = model_and_contexts
    with torch.autocast("cpu", dtype=torch.bfloat16):
        dec = sampler.fast_decoder(model)
        out = sampler.sample(model, contexts, PARAMS[0], tok.eos_token_id, tok.pad_token_id,
                             torch.Generator().manual_seed(0))
    assert dec.dtype == torch.bfloat16 and dec.lm_head.dtype == torch.bfloat16
    assert next(model.parameters()).dtype == torch.float32  # the model itself is untouched
    assert all(s.tokens and all(lp <= 0 for lp in s.logprobs) for s in out)


def test_a_selection_of_rows_is_padded_only_as_wide_as_they_need(model_and_contexts):
    """The training pass over the rows with signal: a selection drops the padding none of its rows has, with
    the same log-probs as the full batch's rows."""
    from s2lpo.rollout.batch import Row, collate, response_log_probs

    model, tok, contexts = model_and_contexts
    samples = sampler.sample(model, contexts, PARAMS[0], tok.eos_token_id, tok.pad_token_id,
                             torch.Generator().manual_seed(0))
    rows = [Row(i // 6, "learner", c, s.tokens, s.logprobs) for i, (c, s) in enumerate(zip(contexts, samples))]
    batch = collate(rows, tok.pad_token_id, "cpu")
    short = min(range(len(rows)), key=lambda i: len(rows[i].prompt_ids) + 100 * len(rows[i].response_ids))
    sel = torch.tensor([short, short + 1 if short % 6 < 5 else short - 1])
    part = batch.select(sel)
    assert part.input_ids.shape[1] < batch.input_ids.shape[1]
    assert part.responses.shape[1] == max(len(rows[i].response_ids) for i in sel.tolist())
    with torch.inference_mode():
        full = response_log_probs(model, batch)[sel, : part.responses.shape[1]]
        assert torch.allclose(response_log_probs(model, part), full, atol=1e-5)


def test_rows_collate_to_verls_layout():
    """Prompts left-padded, responses right-padded (an empty response still one column wide), positions counting
    real tokens only, guidance and behaviour log-probs where the rows have them, one index per distinct prompt."""
    from s2lpo.rollout.batch import Row, collate

    rows = [Row(0, "learner", [5, 6], [7, 8, 2], [-0.5, -0.25, -1.0]),
            Row(0, "guided", [5, 6], [9], [-2.0], n_guidance=1),
            Row(1, "explorer", [4], [], [])]
    b = collate(rows, 0, "cpu")
    assert b.prompt_width == 2
    assert b.input_ids.tolist() == [[5, 6, 7, 8, 2], [5, 6, 9, 0, 0], [0, 4, 0, 0, 0]]
    assert b.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [0, 1, 0, 0, 0]]
    assert b.position_ids.tolist() == [[0, 1, 2, 3, 4], [0, 1, 2, 2, 2], [0, 0, 0, 0, 0]]
    assert b.responses.tolist() == [[7, 8, 2], [9, 0, 0], [0, 0, 0]]
    assert b.response_mask.tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]] and b.response_mask.dtype == torch.float32
    assert b.guidance_mask.tolist() == [[False] * 3, [True, False, False], [False] * 3]
    assert b.behavior_log_prob.tolist() == [[-0.5, -0.25, -1.0], [-2.0, 0, 0], [0, 0, 0]]
    assert b.row_prompt.tolist() == [0, 0, 1]
    assert collate([Row(0, "learner", [3], [], [])], 0, "cpu").responses.shape == (1, 1)
