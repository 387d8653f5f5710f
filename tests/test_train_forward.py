"""The lean training forward (``s2lpo.rollout.train_forward``) is the model's function: log-probs and gradients
pinned to the Hugging Face forward, with prompts shared or not, ragged prompts and responses."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

import s2lpo.rollout.batch as batch_mod
from s2lpo.rollout import train_forward
from s2lpo.rollout.batch import Row, collate, response_log_probs


@pytest.fixture(scope="module")
def model_and_rows(tiny_family):
    model = AutoModelForCausalLM.from_pretrained(tiny_family.model_dir("s"), dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(tiny_family.tokenizer_dir)
    prompts = [p.prompt for p in tiny_family.splits().eval[:3]] + ["Q: 7-3*5+2=? 3*5=15,"]  # lengths differ
    g = torch.Generator().manual_seed(0)
    rows = []
    for group, p in enumerate(prompts):
        ids = tok(p, add_special_tokens=False)["input_ids"]
        for n in (1, 3, 7, 12):  # ragged responses, one of a single token (right padding everywhere else)
            resp = torch.randint(3, len(tok), (n,), generator=g).tolist()
            rows.append(Row(group, "learner", ids, resp, [0.0] * n))
    return model, tok, rows


def _log_probs_and_grads(model, batch, lean: bool, shared: bool = True, weights=None):
    old = batch_mod.LEAN_FORWARD
    batch_mod.LEAN_FORWARD = lean
    try:
        model.zero_grad(set_to_none=True)
        lp = response_log_probs(model, batch, shared_prefix=shared)
        w = weights if weights is not None else torch.ones_like(lp)
        (lp * w * batch.response_mask).sum().backward()
        return lp.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}
    finally:
        batch_mod.LEAN_FORWARD = old


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled-ops", "python-ops"])
@pytest.mark.parametrize("shared", [True, False], ids=["prompts-shared", "per-row"])
def test_the_lean_forward_gives_the_hugging_face_log_probs_and_gradients(model_and_rows, shared, compiled, monkeypatch):
    """Through the compiled element-wise ops (s2lpo.rollout.train_kernel, where built) and through the Python ones."""
    monkeypatch.setattr(train_forward, "COMPILED_OPS", compiled)
    model, tok, rows = model_and_rows
    assert train_forward.supports(model)
    batch = collate(rows, tok.pad_token_id, "cpu")
    assert int(batch.row_prompt.max()) + 1 == 4 and batch.prompt_width > min(len(r.prompt_ids) for r in rows)
    weights = torch.randn(batch.responses.shape, generator=torch.Generator().manual_seed(1))
    ref_lp, ref_g = _log_probs_and_grads(model, batch, lean=False, shared=False, weights=weights)  # full sequences
    lp, grads = _log_probs_and_grads(model, batch, lean=True, shared=shared, weights=weights)
    mask = batch.response_mask.bool()
    assert (lp[mask] - ref_lp[mask]).abs().max() < 1e-5
    assert set(grads) == set(ref_g)
    for name, g in grads.items():  # every parameter gets its gradient, in direction and size
        assert torch.linalg.norm(g - ref_g[name]) <= 1e-4 * torch.linalg.norm(ref_g[name]) + 1e-9, name
    assert torch.linalg.norm(ref_g["model.layers.0.self_attn.k_norm.weight"]) > 0


def test_single_token_responses_and_a_selection(model_and_rows):
    """Responses of one token (no response position is an input) and a selection of rows (as the training pass
    takes the rows with signal) give the Hugging Face log-probs."""
    model, tok, rows = model_and_rows
    ones = [r for r in rows if len(r.response_ids) == 1]
    for b in (collate(ones, tok.pad_token_id, "cpu"), collate(rows, tok.pad_token_id, "cpu").select(torch.tensor([1, 5, 6]))):
        ref, _ = _log_probs_and_grads(model, b, lean=False, shared=False)
        lp, _ = _log_probs_and_grads(model, b, lean=True)
        m = b.response_mask.bool()
        assert (lp[m] - ref[m]).abs().max() < 1e-5


def test_other_architectures_keep_the_hugging_face_forward(model_and_rows):
    _, tok, rows = model_and_rows
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128)
    llama = LlamaForCausalLM(cfg)
    assert not train_forward.supports(llama)
    batch = collate(rows[:4], tok.pad_token_id, "cpu")
    lp, grads = _log_probs_and_grads(llama, batch, lean=True)
    ref, _ = _log_probs_and_grads(llama, batch, lean=False)
    assert torch.equal(lp, ref) and all(g is not None for g in grads.values())
