"""The compiled decode step (``s2lpo.rollout.kernel``, ``csrc/decode_step.cpp``) is the Python step's function,
and a machine where it cannot be built, or a build that was killed, still samples."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

import s2lpo.rollout.decode as decode
import s2lpo.rollout.sampler as sampler
from s2lpo.rollout import kernel

# float32 summation order: the compiled step sums its norms and attention in another order than ATen's kernels, so
# logits of magnitude ~10 come out a few ulps apart (up to 1.4e-5 measured) and log-probs up to ~1.5e-5; the same
# noise as between the Python step and the Hugging Face forward (test_decode.py's LOGPROB_TOL, whose note measures it)
LOGPROB_TOL = 5e-5
needs_compiler = pytest.mark.skipif(shutil.which(os.environ.get("CXX", "c++")) is None, reason="no C++ compiler")


@pytest.fixture(scope="module")
def family(tiny_family):
    tok = AutoTokenizer.from_pretrained(tiny_family.tokenizer_dir)
    prompts = [p.prompt for p in tiny_family.splits().eval[:5]] + ["Q: 7-3*5+2=? 3*5=15,"]  # lengths differ
    contexts = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts for _ in range(6)]
    return tiny_family, tok, contexts


def _models(tiny_family):
    """The family's small model (4 heads, 2 kv heads, head dim 16) and random ones: 4 queries per kv head, head dim
    24 and tied embeddings; 3 queries per kv head (one query of each kv head attends alone); head dim 40 (the
    attention's plain loops: the vectorised attention covers head dims 16, 24 and 32)."""
    yield "s", AutoModelForCausalLM.from_pretrained(tiny_family.model_dir("s"), dtype=torch.float32).eval()
    for name, heads, kv, hd in (("random", 8, 2, 24), ("odd group", 6, 2, 16), ("head dim 40", 4, 2, 40)):
        torch.manual_seed(0)
        cfg = Qwen3Config(vocab_size=272, hidden_size=96, num_hidden_layers=2, num_attention_heads=heads,
                          num_key_value_heads=kv, head_dim=hd, intermediate_size=160, max_position_embeddings=128,
                          tie_word_embeddings=True)
        yield name, Qwen3ForCausalLM(cfg).eval()


@needs_compiler
@pytest.mark.parametrize("packed", [True, False], ids=["weights laid out once", "weights as they are (MKL)"])
def test_the_compiled_step_computes_the_python_steps_logits_and_cache(family, packed, monkeypatch):
    """Left-padded contexts of different lengths prefilled, then 12 decode steps with rows leaving the batch: the
    compiled prefill's and at every step the compiled step's logits are the Python forward's (within 1e-5) and they
    write the same keys and values; with the matmul weights laid out once for the kernels' own matmul (the default
    where it is vectorised) and as they are."""
    tiny_family, tok, contexts = family
    monkeypatch.setattr(decode, "PACKED_WEIGHTS", packed)
    for name, model in _models(tiny_family):
        compiled = decode.FastDecoder(model)
        assert compiled.kernel is not None, "the compiled decode step was not built on a machine with a compiler"
        laid_out = packed and compiled.kernel.packed_gemm_simd()
        assert all((w.dim() == 3) == laid_out for w in compiled.step_matmul_weights())
        with monkeypatch.context() as m:
            m.setattr(decode, "COMPILED_STEP", False)
            python = decode.FastDecoder(model)  # the Python step, its weights dense
        assert python.kernel is None and all(w.dim() == 2 for w in python.step_matmul_weights())
        ids, att = sampler.left_pad(contexts[::6], tok.pad_token_id, "cpu")
        pos = (att.cumsum(-1) - 1).clamp(min=0)
        width, steps = ids.shape[1], 12
        keys = torch.ones((len(ids), width + steps), dtype=torch.bool)
        keys[:, :width] = att.bool()
        rope = python.rope_table(width + steps)
        caches = [python.cache(len(ids), width + steps), compiled.cache(len(ids), width + steps)]
        with torch.inference_mode():
            logits = [d.forward(ids, pos, c, 0, keys, rope) for d, c in zip((python, compiled), caches)]
            # the prefill: one compiled call against the Python forward
            assert torch.allclose(logits[0], logits[1], rtol=1e-5, atol=1e-5)
            live, nxt = torch.arange(len(ids)), pos[:, -1:] + 1
            for t in range(steps):
                tok_ids = logits[0].argmax(-1)[:, None]
                if t == 5:  # two rows leave the batch and the cache
                    keep = torch.tensor([0, 2, 3, 5][: len(live)])
                    live, tok_ids = live[keep], tok_ids[keep]
                    for c in caches:
                        c.drop(keep)  # the Python step's cache copies, the compiled step's narrows its row index
                logits = [d.forward(tok_ids, nxt[live], c, width + t, keys[live], rope)
                          for d, c in zip((python, compiled), caches)]
                assert torch.allclose(logits[0], logits[1], rtol=1e-5, atol=1e-5), (name, t)
                diff = (logits[0].log_softmax(-1) - logits[1].log_softmax(-1)).abs().max()
                assert diff < LOGPROB_TOL, (name, t, diff)
                nxt = nxt + 1
        assert caches[0].rows is None and caches[1].rows.tolist() == [0, 2, 3, 5]
        caches[1].select(torch.arange(len(live)))  # the kept rows, in order
        for a, b in ((caches[0].k, caches[1].k), (caches[0].v, caches[1].v)):
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-5), (name, (a - b).abs().max())


@needs_compiler
@pytest.mark.parametrize("params", [sampler.SamplingParams(max_new_tokens=40),
                                    sampler.SamplingParams(temperature=1.3, top_p=0.9, top_k=20, max_new_tokens=40,
                                                           presence_penalty=0.5)], ids=["plain", "filtered"])
def test_sampling_through_the_compiled_step_draws_the_same_samples(family, params, monkeypatch):
    tiny_family, tok, contexts = family
    for _, model in _models(tiny_family):
        out = {}
        for on in (True, False):
            monkeypatch.setattr(decode, "COMPILED_STEP", on)
            assert (sampler.fast_decoder(model).kernel is not None) == on
            out[on] = sampler.sample(model, contexts, params, tok.eos_token_id, tok.pad_token_id,
                                     torch.Generator().manual_seed(3))
        assert [s.tokens for s in out[True]] == [s.tokens for s in out[False]]
        assert max(abs(a - b) for x, y in zip(out[True], out[False]) for a, b in zip(x.logprobs, y.logprobs)) < LOGPROB_TOL


def test_where_it_cannot_be_built_sampling_takes_the_python_step(family, tmp_path, monkeypatch, caplog):
    """A machine whose compiler fails: the build says why (the compiler's output, the folder), the process
    warns once and samples through the Python step; ``S2LPO_KERNELS=0`` turns the step off."""
    tiny_family, tok, contexts = family
    broken = tmp_path / "cxx"
    broken.write_text("#!/bin/sh\n[ \"$1\" = --version ] && exec c++ --version\n"
                      "echo 'cc1plus: fatal error: no space left on device' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setenv("CXX", str(broken))
    # a name of its own: torch numbers a second build of one name in one process as a new version, which would
    # make this process's later loads of the real one build it again
    monkeypatch.setattr(kernel, "build_name", lambda: "s2lpo_decode_step_broken")
    b = kernel.build(tmp_path / "ext")
    assert b.module is None and b.directory.parent == tmp_path / "ext"
    assert "no space left on device" in b.error and str(b.directory) in b.reason()

    model = next(_models(tiny_family))[1]
    monkeypatch.setattr(kernel, "extensions_root", lambda: tmp_path / "ext")
    kernel.kernels.cache_clear()
    try:
        with caplog.at_level("WARNING", logger="s2lpo.rollout.kernel"):
            assert sampler.fast_decoder(model).kernel is None and sampler.fast_decoder(model).kernel is None
        assert [r.getMessage() for r in caplog.records if "could not be built" in r.getMessage()] != []
        assert len([r for r in caplog.records if r.name == kernel.__name__]) == 1  # once per process
        params = sampler.SamplingParams(max_new_tokens=12)
        out = sampler.sample(model, contexts[:6], params, tok.eos_token_id, tok.pad_token_id, torch.Generator().manual_seed(0))
        ref = sampler.sample_batch_hf(model, contexts[:6], params, tok.eos_token_id, tok.pad_token_id,
                                      torch.Generator().manual_seed(0))
        assert [s.tokens for s in out] == [s.tokens for s in ref]
        kernel.kernels.cache_clear()
        monkeypatch.setenv("S2LPO_KERNELS", "0")
        monkeypatch.delenv("CXX")
        assert kernel.kernels() is None
    finally:
        kernel.kernels.cache_clear()


@needs_compiler
def test_a_build_killed_midway_does_not_hold_up_the_next_run(tmp_path):
    """torch's build lock is a file: a build killed while holding it (a preempted job) left every later load
    waiting for good. The loader clears it under a lock the OS releases with its holder."""
    built = kernel.build()
    assert built.module is not None, built.error
    (built.directory / "lock").write_text("")
    code = textwrap.dedent("""
        from s2lpo.rollout import kernel
        b = kernel.build()
        print("built" if b.module is not None else b.error)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)
    assert out.returncode == 0 and out.stdout.strip() == "built", out.stderr[-2000:]
    assert not (built.directory / "lock").exists()


@needs_compiler
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_the_compiled_sampling_loop_keeps_every_token_and_log_prob(family, temperature, monkeypatch):
    """The plain case's loop through ``sample_loop`` (csrc/sample_step.cpp: draws, log-softmax, the draw that skips
    most log1p's, rows leaving, the decode steps) against the Python loop with the tensor operations around the
    same compiled decode step: the same tokens, log-probs, lengths and finish reasons, bit for bit, and the
    generator left in the same state."""
    tiny_family, tok, contexts = family
    params = sampler.SamplingParams(temperature=temperature, max_new_tokens=20)  # some rows stop, some run out
    if not sampler.exp_draws_match(kernel.kernels()):
        pytest.skip("torch's CPU exponential_ is not its default kernel on this machine: the loop is not used")
    loops = []
    monkeypatch.setattr(decode.FastDecoder, "sample_loop",
                        lambda *a, _f=decode.FastDecoder.sample_loop: loops.append(_f(*a)) or loops[-1])
    for name, model in _models(tiny_family):
        out, states = {}, {}
        for on in (True, False):
            monkeypatch.setattr(sampler, "COMPILED_LOOP", on)
            g = torch.Generator().manual_seed(11)
            out[on] = sampler.sample(model, contexts, params, tok.eos_token_id, tok.pad_token_id, g)
            states[on] = g.get_state()
        assert [(s.tokens, s.logprobs, s.finish_reason) for s in out[True]] == [
            (s.tokens, s.logprobs, s.finish_reason) for s in out[False]]
        assert torch.equal(states[True], states[False])
        assert {s.finish_reason for s in out[True]} == {"stop", "length"}, name  # rows left the batch, others ran out
    assert len(loops) == len(list(_models(tiny_family))) and all(n == 19 for n in loops)  # only when on: 19 steps


@needs_compiler
def test_rows_sharing_a_prompt_read_its_keys_from_the_prompts_cache_row(family):
    """KVCache.share: the compiled step reads a row's prompt positions from its prompt's cache row instead of a copy
    per row (KVCache.select): the same logits bit for bit — prefill, decode steps, rows leaving the batch."""
    tiny_family, tok, contexts = family
    model = next(_models(tiny_family))[1]
    dec = decode.FastDecoder(model)
    assert dec.kernel is not None
    distinct = [contexts[0], contexts[12], contexts[30]]  # different lengths: left padding in the shared rows
    row_ctx = torch.tensor([0, 0, 1, 2, 2, 2])
    ids, att = sampler.left_pad(distinct, tok.pad_token_id, "cpu")
    pos = (att.cumsum(-1) - 1).clamp(min=0)
    width, steps, n = ids.shape[1], 8, len(row_ctx)
    rope = dec.rope_table(width + steps)
    shared, copied = dec.cache(len(distinct) + n, width + steps), dec.cache(len(distinct), width + steps)
    keys = torch.ones((n, width + steps), dtype=torch.bool)
    keys[:, :width] = att.bool()[row_ctx]
    with torch.inference_mode():
        first = [dec.forward(ids, pos, c, 0, att.bool(), rope) for c in (shared, copied)]
        assert torch.equal(first[0], first[1])
        shared.share(row_ctx, width)
        copied.select(row_ctx, filled=width)
        with pytest.raises(RuntimeError, match="shared-prompt cache"):
            shared.select(row_ctx)
        live, nxt, tok_ids = torch.arange(n), pos[row_ctx, -1:] + 1, first[0][row_ctx].argmax(-1)[:, None]
        for t in range(steps):
            if t == 3:  # rows 1 and 4 leave the batch
                keep = torch.tensor([0, 2, 3, 5])
                live, tok_ids = live[keep], tok_ids[keep]
                for c in (shared, copied):
                    c.drop(keep)
            logits = [dec.forward(tok_ids, nxt[live], c, width + t, keys[live], rope) for c in (shared, copied)]
            assert torch.equal(logits[0], logits[1]), t
            tok_ids = logits[0].argmax(-1)[:, None]
            nxt = nxt + 1
    assert shared.prefix.tolist() == [0, 1, 2, 2]
    python = decode.KVCache(1, 4, 1, 8, 2, torch.float32, "cpu")  # the Python step's: copied, never shared
    with pytest.raises(RuntimeError, match="indirect cache"):
        python.share(torch.tensor([0, 0]), 3)


@needs_compiler
def test_the_compiled_exp_draws_are_torchs_for_the_live_rows(family, monkeypatch):
    """``exp_draws``: torch's exponential_(1) for the rows asked for, bit for bit, the generator advanced as by all
    of them; where the once-per-process probe finds torch drawing otherwise, sampling keeps torch's draws."""
    k = kernel.kernels()
    if not sampler.exp_draws_match(k):
        pytest.skip("torch's CPU exponential_ is not its default kernel on this machine: the sampler keeps torch's")
    ref_gen, our_gen = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for _ in range(3):  # consecutive steps of one generator
        ref = torch.empty(9, 31).exponential_(1, generator=ref_gen)
        live = torch.tensor([0, 3, 4, 8])
        ours = k.exp_draws(our_gen, 9, 31, live)
        assert torch.equal(ours[live], ref[live]) and torch.equal(our_gen.get_state(), ref_gen.get_state())

    tiny_family, tok, contexts = family
    model = next(_models(tiny_family))[1]
    params = sampler.SamplingParams(max_new_tokens=12)
    draws = {}
    for on in (True, False):
        with monkeypatch.context() as m:
            if not on:
                m.setattr(sampler, "exp_draws_match", lambda _k: False)
                m.setattr(k, "sample_loop", lambda *a: pytest.fail("the compiled draws were used"))
            draws[on] = sampler.sample(model, contexts[:12], params, tok.eos_token_id, tok.pad_token_id,
                                       torch.Generator().manual_seed(2))
    assert [(s.tokens, s.logprobs) for s in draws[True]] == [(s.tokens, s.logprobs) for s in draws[False]]
