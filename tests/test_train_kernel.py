"""The compiled training ops (``s2lpo.rollout.train_kernel``; ``csrc/train_ops.cpp``, ``csrc/train_attention.cpp``):
every hand-written gradient against finite differences (float64), the attention block against the Python
operations it replaces, and a training pass through them against one through the Python operations (float32)."""

from __future__ import annotations

import os
import shutil

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

import s2lpo.rollout.batch as batch_mod
from s2lpo.rollout import train_forward, train_kernel
from s2lpo.rollout.batch import collate, response_log_probs
from s2lpo.rollout.kernel import kernels

pytestmark = pytest.mark.skipif(shutil.which(os.environ.get("CXX", "c++")) is None, reason="no C++ compiler")
F64 = torch.float64


@pytest.fixture(autouse=True)
def built():
    assert kernels() is not None, "the compiled ops were not built on a machine with a compiler"


def _layout(row_prompt: list[int], P: int, R1: int, prompt_pad: list[int], resp_len: list[int], H: int, KV: int):
    """Rows of ``row_prompt``'s prompts, prompt p left-padded by ``prompt_pad[p]``, row b with ``resp_len[b]`` real
    response positions of ``R1``: the layout and the attention mask train_forward builds from it."""
    rp = torch.tensor(row_prompt)
    att = torch.ones(len(rp), P + R1 + 1, dtype=torch.long)
    for b, p in enumerate(row_prompt):
        att[b, : prompt_pad[p]] = 0
        att[b, P + resp_len[b] :] = 0
    first = torch.tensor([row_prompt.index(p) for p in range(max(row_prompt) + 1)])
    real = att[:, : P + R1].bool().contiguous()
    return (train_kernel.Layout(rp, torch.full((len(rp),), R1), real[first, :P].contiguous(), real, P, H, KV), att,
            first)


def _python_attention(qkv, wq, wk, cos, sin, lay, att, first, eps, scale):
    """train_forward's attention block in tensor operations over the same layout: the reference."""
    hd = qkv.shape[1] // (lay.heads + 2 * lay.kv_heads)
    keep_p, keep_r = train_forward._masks(att, lay.P)
    return train_forward._python_attention(qkv, wq, wk, cos[:, None], sin[:, None], keep_p[first], keep_r, len(first),
                                           lay.P, len(lay.row_prompt), lay.R1, lay.row_prompt,
                                           (lay.heads, lay.kv_heads, hd, eps, scale))


LAYOUTS = {  # row_prompt, P, R1, prompt padding per prompt, real response positions per row, H, KV, head dim
    "shared, ragged, 2 queries per kv head": ([0, 0, 1, 1, 1], 3, 4, [0, 1], [2, 4, 4, 3, 1], 4, 2, 6),
    "a prompt per row, 1 query per kv head": ([0, 1, 2], 4, 3, [2, 0, 1], [3, 1, 2], 2, 2, 8),
    "no response position is an input": ([0, 0, 1], 3, 0, [1, 0], [0, 0, 0], 4, 1, 4),
}


def _inputs(case: str, dtype, seed: int = 0):
    row_prompt, P, R1, pad, lens, H, KV, hd = LAYOUTS[case]
    lay, att, first = _layout(row_prompt, P, R1, pad, lens, H, KV)
    g = torch.Generator().manual_seed(seed)
    N = len(first) * P + len(row_prompt) * R1
    qkv = torch.randn(N, (H + 2 * KV) * hd, dtype=dtype, generator=g, requires_grad=True)
    wq, wk = (torch.randn(hd, dtype=dtype, generator=g).requires_grad_() for _ in range(2))
    cos, sin = torch.randn(N, hd, dtype=dtype, generator=g), torch.randn(N, hd, dtype=dtype, generator=g)
    return (qkv, wq, wk, cos, sin), lay, att, first, hd


@pytest.mark.parametrize("case", list(LAYOUTS))
def test_the_attention_blocks_gradients_are_its_derivatives(case):
    (qkv, wq, wk, cos, sin), lay, *_, hd = _inputs(case, F64)
    assert gradcheck(lambda x, a, b: train_kernel.Attention.apply(x, a, b, cos, sin, lay, 1e-6, hd**-0.5),
                     (qkv, wq, wk))


@pytest.mark.parametrize("case", list(LAYOUTS))
def test_the_attention_block_is_the_python_operations(case):
    """Output and gradients of q/k norm, RoPE and attention over the shared-prompt layout: the compiled block and
    the Python operations agree to float64 rounding, padded queries and single-position rows included."""
    (qkv, wq, wk, cos, sin), lay, att, first, hd = _inputs(case, F64, seed=1)
    ours = train_kernel.Attention.apply(qkv, wq, wk, cos, sin, lay, 1e-6, hd**-0.5)
    ref = _python_attention(qkv, wq, wk, cos, sin, lay, att, first, 1e-6, hd**-0.5)
    assert ours.shape == ref.shape and torch.allclose(ours, ref, rtol=0, atol=1e-12)
    up = torch.randn(ours.shape, dtype=F64, generator=torch.Generator().manual_seed(2))
    for a, b in zip(torch.autograd.grad(ours, (qkv, wq, wk), up), torch.autograd.grad(ref, (qkv, wq, wk), up)):
        assert torch.allclose(a, b, rtol=0, atol=1e-11)


def test_rms_norm_and_silu_gradients_are_their_derivatives():
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(70, 12, dtype=F64, generator=g, requires_grad=True), torch.randn(12, dtype=F64, generator=g)
    w.requires_grad_()  # 70 rows: two blocks of the weight gradient's fixed-order sum
    assert gradcheck(lambda x, w: train_kernel.RMSNorm.apply(x, w, 1e-6), (x, w))
    assert torch.allclose(train_kernel.RMSNorm.apply(x, w, 1e-6), F.rms_norm(x, (12,), w, 1e-6), rtol=0, atol=1e-13)
    gu = torch.randn(9, 2 * 20, dtype=F64, generator=g, requires_grad=True)
    assert gradcheck(train_kernel.SiluMul.apply, (gu,))
    gate, up = gu.chunk(2, -1)
    assert torch.allclose(train_kernel.SiluMul.apply(gu), F.silu(gate) * up, rtol=0, atol=1e-13)


def test_float32_vectorised_paths_match_the_python_operations():
    """Head dim 40 and intermediate 36: the 32-wide, 8-wide and scalar tails of the float32 loops all run."""
    row_prompt, P, R1, pad, lens, H, KV, hd = [0, 0, 1], 5, 9, [1, 0], [9, 4, 7], 4, 2, 40
    lay, att, first = _layout(row_prompt, P, R1, pad, lens, H, KV)
    g = torch.Generator().manual_seed(3)
    N = 2 * P + 3 * R1
    qkv = torch.randn(N, (H + 2 * KV) * hd, generator=g, requires_grad=True)
    wq, wk = (torch.randn(hd, generator=g).requires_grad_() for _ in range(2))
    cos, sin = torch.randn(N, hd, generator=g), torch.randn(N, hd, generator=g)
    ours = train_kernel.Attention.apply(qkv, wq, wk, cos, sin, lay, 1e-6, hd**-0.5)
    ref = _python_attention(qkv, wq, wk, cos, sin, lay, att, first, 1e-6, hd**-0.5)
    assert torch.allclose(ours, ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(torch.autograd.grad(ours.sum(), (qkv, wq, wk)), torch.autograd.grad(ref.sum(), (qkv, wq, wk))):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)
    gu = torch.randn(11, 72, generator=g) * 4
    assert torch.allclose(train_kernel.SiluMul.apply(gu), F.silu(gu[:, :36]) * gu[:, 36:], rtol=1e-6, atol=1e-6)


def _pass(model, batch, compiled: bool, monkeypatch):
    monkeypatch.setattr(train_forward, "COMPILED_OPS", compiled)
    model.zero_grad(set_to_none=True)
    lp = response_log_probs(model, batch)
    (lp * batch.response_mask).sum().backward()
    return lp.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_a_training_pass_through_the_compiled_ops_is_the_python_pass(tiny_family, monkeypatch):
    """toy-s, prompts shared, ragged rows: log-probs within 5e-5 (float32 summation order, as for the decode step)
    and every parameter's gradient within 1e-4 of its norm; under bf16 autocast the Python operations serve."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from s2lpo.rollout.batch import Row

    model = AutoModelForCausalLM.from_pretrained(tiny_family.model_dir("s"), dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(tiny_family.tokenizer_dir)
    g = torch.Generator().manual_seed(0)
    rows = [Row(i // 3, "learner", tok(p.prompt, add_special_tokens=False)["input_ids"],
                torch.randint(3, len(tok), (n,), generator=g).tolist(), [0.0] * n)
            for i, (p, n) in enumerate(zip([q for q in tiny_family.splits().eval[:3] for _ in range(3)],
                                           [5, 9, 2, 14, 1, 7, 3, 11, 6]))]
    batch = collate(rows, tok.pad_token_id, "cpu")
    assert batch_mod.LEAN_FORWARD and train_forward.supports(model)
    calls = []
    monkeypatch.setattr(train_kernel.Attention, "apply", lambda *a, _f=train_kernel.Attention.apply: calls.append(1)
                        or _f(*a))
    lp, grads = _pass(model, batch, True, monkeypatch)
    assert len(calls) == model.config.num_hidden_layers  # the compiled ops served every layer
    ref_lp, ref_g = _pass(model, batch, False, monkeypatch)
    assert len(calls) == model.config.num_hidden_layers
    m = batch.response_mask.bool()
    assert (lp[m] - ref_lp[m]).abs().max() < 5e-5
    for name, gr in grads.items():
        assert torch.linalg.norm(gr - ref_g[name]) <= 1e-4 * torch.linalg.norm(ref_g[name]) + 1e-9, name
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert train_kernel.ops_for(torch.zeros(1)) is None
        _pass(model, batch, True, monkeypatch)
    assert len(calls) == model.config.num_hidden_layers


def test_packed_rows_give_the_padded_passs_log_probs_and_gradients(tiny_family, monkeypatch):
    """toy-s, ragged rows through the compiled ops: each row its own tokens only (``PACK_ROWS``) against every row
    as wide as the longest — the same log-probs (float32 summation order) and gradients; the packed pass runs
    fewer tokens."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from s2lpo.rollout.batch import Row

    model = AutoModelForCausalLM.from_pretrained(tiny_family.model_dir("s"), dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(tiny_family.tokenizer_dir)
    g = torch.Generator().manual_seed(3)
    prompts = [tok(p.prompt, add_special_tokens=False)["input_ids"] for p in tiny_family.splits().eval[:2]]
    rows = [Row(i % 2, "learner", prompts[i % 2], torch.randint(3, len(tok), (n,), generator=g).tolist(), [0.0] * n)
            for i, n in enumerate([1, 9, 2, 14, 6, 3])]
    batch = collate(sorted(rows, key=lambda r: r.group), tok.pad_token_id, "cpu")
    tokens = []
    monkeypatch.setattr(train_kernel.Attention, "apply", lambda *a, _f=train_kernel.Attention.apply: tokens.append(
        a[0].shape[0]) or _f(*a))
    out = {}
    for packed in (True, False):
        monkeypatch.setattr(train_forward, "PACK_ROWS", packed)
        out[packed] = _pass(model, batch, True, monkeypatch)
    n = model.config.num_hidden_layers
    assert tokens[0] == 2 * batch.prompt_width + sum(max(len(r.response_ids) - 1, 0) for r in rows)  # no padding
    assert tokens[n] == 2 * batch.prompt_width + len(rows) * 13 and tokens[0] < tokens[n]
    m = batch.response_mask.bool()
    assert (out[True][0][m] - out[False][0][m]).abs().max() < 1e-5
    assert torch.equal(out[True][0][~m], torch.zeros_like(out[True][0][~m]))  # the right padding: 0
    for name, gr in out[True][1].items():
        assert torch.linalg.norm(gr - out[False][1][name]) <= 1e-5 * torch.linalg.norm(gr) + 1e-9, name


def test_a_row_of_no_prompt_is_refused():
    """Every row must belong to one of the prompts: a row outside them would be in no task, its output unwritten."""
    (qkv, wq, wk, cos, sin), lay, *_, hd = _inputs("shared, ragged, 2 queries per kv head", torch.float32)
    bad = train_kernel.Layout(torch.tensor([0, 0, 1, 1, 2]), lay.row_len, lay.preal, lay.rreal, lay.P, lay.heads,
                              lay.kv_heads)
    with pytest.raises(RuntimeError, match="row 4 has prompt 2 of 2"):
        train_kernel.Attention.apply(qkv, wq, wk, cos, sin, bad, 1e-6, hd**-0.5)
    long = train_kernel.Layout(lay.row_prompt, lay.row_len + 1, lay.preal, lay.rreal, lay.P, lay.heads, lay.kv_heads)
    with pytest.raises(RuntimeError, match="row 0 has 5 tokens of at most 4"):
        train_kernel.Attention.apply(qkv, wq, wk, cos, sin, long, 1e-6, hd**-0.5)


@pytest.mark.parametrize("case", list(LAYOUTS)[:2])
def test_packed_rows_are_the_padded_rows_without_their_padding(case):
    """Rows packed one after the other (``row_len``: each row's real response positions, none of its right
    padding): the outputs and gradients of the padded layout's real tokens, to float64 rounding."""
    (qkv, wq, wk, cos, sin), lay, att, first, hd = _inputs(case, F64, seed=4)
    row_prompt, P, R1, _, lens, *_ = LAYOUTS[case]
    keep = torch.cat([torch.ones(len(first) * P, dtype=torch.bool),
                      (torch.arange(R1)[None] < torch.tensor(lens)[:, None]).reshape(-1)])  # the tokens packed
    assert not keep.all()
    packed = train_kernel.Layout(lay.row_prompt, torch.tensor(lens), lay.preal, lay.rreal, P, lay.heads, lay.kv_heads)
    x = qkv.detach()[keep].requires_grad_()
    ours = train_kernel.Attention.apply(x, wq, wk, cos[keep], sin[keep], packed, 1e-6, hd**-0.5)
    ref = train_kernel.Attention.apply(qkv, wq, wk, cos, sin, lay, 1e-6, hd**-0.5)
    assert torch.allclose(ours, ref[keep], rtol=0, atol=1e-12)
    up = torch.zeros(ref.shape, dtype=F64)
    up[keep] = torch.randn(ours.shape, dtype=F64, generator=torch.Generator().manual_seed(5))
    g_ours, g_ref = torch.autograd.grad(ours, (x, wq, wk), up[keep]), torch.autograd.grad(ref, (qkv, wq, wk), up)
    assert torch.allclose(g_ours[0], g_ref[0][keep], rtol=0, atol=1e-11)
    assert torch.equal(g_ref[0][~keep], torch.zeros_like(g_ref[0][~keep]))  # padding feeds no real token
    for a, b in zip(g_ours[1:], g_ref[1:]):
        assert torch.allclose(a, b, rtol=0, atol=1e-11)
