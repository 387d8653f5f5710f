import pytest
import torch
from transformers import AutoModelForCausalLM

from s2lpo.models.family import weights_digest
from s2lpo.models.tokenizer import load_tokenizer
from s2lpo.rewards import get_reward_fn
from s2lpo.rollout.explorer_cache import ExplorerCache
from s2lpo.rollout.sampler import SamplingParams


def test_generated_once_and_reused_from_disk(tmp_path, tiny_family):
    tok = load_tokenizer(tiny_family.tokenizer_dir)
    path = tiny_family.model_dir("s")
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    probs = tiny_family.splits().rl[:5]
    prompts = [tok(p.prompt, add_special_tokens=False)["input_ids"] for p in probs]
    truths = [str(p.answer) for p in probs]
    rf = get_reward_fn("toy_arith")

    def score(t, gt):
        return rf(tok.decode(t, skip_special_tokens=True), gt)

    params = SamplingParams(max_new_tokens=24)
    cache = ExplorerCache(tmp_path, weights_digest(path), params)
    assert cache.fill(model, prompts, truths, 3, score, tok.eos_token_id, tok.pad_token_id, seed=0) == 15
    assert cache.fill(model, prompts, truths, 3, score, tok.eos_token_id, tok.pad_token_id, seed=0) == 0
    assert cache.fill(model, prompts, truths, 4, score, tok.eos_token_id, tok.pad_token_id, seed=0) == 5
    again = ExplorerCache(tmp_path, weights_digest(path), params)  # a new process sees the same samples
    assert len(again) == 20
    for p, gt in zip(prompts, truths):
        for j in range(4):
            a, b = cache.get(p, j), again.get(p, j)
            assert a.tokens == b.tokens and a.logprobs == pytest.approx(b.logprobs)
            assert a.reward == score(a.tokens, gt)
            assert a.finish_reason in ("stop", "length")
            # the stored log-probs are the explorer's own
            ids = torch.tensor([p + a.tokens])
            with torch.no_grad():
                lp = torch.log_softmax(model(ids).logits[0, len(p) - 1 : -1], -1)
            assert lp.gather(-1, torch.tensor(a.tokens)[:, None]).squeeze(-1).tolist() == pytest.approx(
                a.logprobs, abs=1e-4)
    # other sampling parameters are another cache
    assert len(ExplorerCache(tmp_path, weights_digest(path), SamplingParams(temperature=0.7))) == 0
    assert cache.get(prompts[0], 99) is None


def test_a_group_draws_its_explorer_rows_from_the_cached_pool():
    """``draw_slots``: G_w distinct samples of the pool, a pure function of (seed, step, prompt), fresh per step."""
    from s2lpo.algo.draw import draw_slots

    a = draw_slots(0, 1, "p", 16, 32)
    assert len(set(a)) == 16 and all(0 <= i < 32 for i in a) and a == draw_slots(0, 1, "p", 16, 32)
    assert draw_slots(0, 1, "p", 8, 32) == a[:8]  # fewer explorer rows later in the annealing: a prefix
    others = [draw_slots(0, 2, "p", 16, 32), draw_slots(1, 1, "p", 16, 32), draw_slots(0, 1, "q", 16, 32)]
    assert all(o != a for o in others)
    assert sorted(draw_slots(3, 5, "p", 32, 32)) == list(range(32)) and draw_slots(0, 1, "p", 0, 32) == []
    with pytest.raises(ValueError, match="raise explorer.sampling.samples_per_prompt"):
        draw_slots(0, 1, "p", 17, 16)


def test_shared_prompt_prefill_changes_no_sample(tiny_family, monkeypatch):
    """A group's rows prefill their prompt once (shared KV cache); without the sharing (the benchmark's row)
    the same seed gives the same tokens and log-probs."""
    import torch
    from transformers import AutoModelForCausalLM

    import s2lpo.rollout.sampler as sampler

    model = AutoModelForCausalLM.from_pretrained(tiny_family.model_dir("s"), dtype=torch.float32).eval()
    contexts = [[5, 6, 7, 8]] * 4 + [[9, 10, 11]] * 4
    out = {}
    for share in (True, False):
        monkeypatch.setattr(sampler, "SHARE_PREFILL", share)
        out[share] = sampler.sample(model, contexts, sampler.SamplingParams(max_new_tokens=12), 1, 0,
                                    torch.Generator().manual_seed(3))
    assert [s.tokens for s in out[True]] == [s.tokens for s in out[False]]
    assert max(abs(a - b) for x, y in zip(out[True], out[False]) for a, b in zip(x.logprobs, y.logprobs)) < 1e-5
