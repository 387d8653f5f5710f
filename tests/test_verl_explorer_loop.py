"""The explorer agent loop inside verl's real agent-loop classes (no Ray): it builds prompt ids with verl's
own Continuous Token builder, replays the explorer cache, and returns the single-turn loop's schema."""

import asyncio

import pytest
import torch
from omegaconf import open_dict
from verl.experimental.agent_loop.agent_loop import DictConfigWrap
from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop
from verl.workers.rollout.replica import TokenOutput

from s2lpo.algo.draw import draw_slots
from s2lpo.models.family import weights_digest
from s2lpo.models.resolve import load_model
from s2lpo.models.tokenizer import load_tokenizer
from s2lpo.rewards import token_scorer
from s2lpo.rollout.explorer_cache import ExplorerCache, prompt_key
from s2lpo.rollout.sampler import SamplingParams
from s2lpo.verl_ext.config import verl_config
from s2lpo.verl_ext.explorer_loop import ExplorerAgentLoop
from s2lpo_testing import QUICK, make_cfg

PARAMS = SamplingParams(1.0, 1.0, 0, 12)


class StandInServer:
    """verl's server interface answered by a fixed continuation (vLLM's place on a GPU machine)."""

    def __init__(self, logprobs: bool):
        self.logprobs = logprobs

    async def generate(self, request_id, prompt_ids, sampling_params, **kw):
        return TokenOutput(token_ids=[5, 6, 7], log_probs=[-0.1, -0.2, -0.3] if self.logprobs else None)


@pytest.mark.parametrize("calculate_log_probs", [False, True])
def test_explorer_rows_have_the_single_turn_schema(tmp_path, tiny_family, calculate_log_probs):
    cfg = make_cfg(tmp_path, *QUICK, "trainer=verl")
    tok = load_tokenizer(tiny_family.tokenizer_dir)
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"  # a base model's plain prompt
    explorer_dir = tiny_family.model_dir("s")
    v = verl_config(cfg)  # verl's tree as its own root: its absolute interpolations resolve
    with open_dict(v):
        v.actor_rollout_ref.rollout.calculate_log_probs = calculate_log_probs
        v.s2lpo = {"explorer_cache_dir": str(tmp_path / "xc"), "explorer_digest": weights_digest(explorer_dir),
                   "explorer_sampling": PARAMS.as_dict(), "explorer_samples": 3, "seed": 7, "group_size": 2,
                   "t_mix": 2, "schedule": "linear"}
    messages = [{"role": "user", "content": tiny_family.splits().rl[0].prompt}]
    prompt_ids = tok(messages[0]["content"], add_special_tokens=False)["input_ids"]
    cache = ExplorerCache(tmp_path / "xc", weights_digest(explorer_dir), PARAMS)
    explorer = load_model(explorer_dir, torch.device("cpu")).eval()
    cache.fill(explorer, [prompt_ids], [str(tiny_family.splits().rl[0].answer)], 3, token_scorer(tok, "toy_arith"),
               tok.eos_token_id, tok.pad_token_id, seed=0)

    async def run():
        kw = {"trainer_config": DictConfigWrap(v), "tokenizer": tok, "processor": None, "dataset_cls": None,
              "data_config": DictConfigWrap(v.data)}
        ours = ExplorerAgentLoop(server_manager=None, **kw)
        theirs = SingleTurnAgentLoop(server_manager=StandInServer(calculate_log_probs), **kw)
        return ([await ours.run({}, raw_prompt=messages, s2lpo_slot=j, s2lpo_step=1) for j in range(2)],
                await theirs.run({"temperature": 1.0}, raw_prompt=messages))

    (slot0, slot1), learner_row = asyncio.run(run())
    assert slot0.prompt_ids == learner_row.prompt_ids == prompt_ids  # verl's builder = the cache's prompt ids
    drawn = draw_slots(7, 1, prompt_key(prompt_ids), 2, 3)  # step 1: the whole group of 2, drawn from 3 samples
    assert len(set(drawn)) == 2
    for j, row in enumerate((slot0, slot1)):
        cached = cache.get(prompt_ids, drawn[j])
        assert row.response_ids == cached.tokens and row.response_mask == [1] * len(cached.tokens)
        assert row.response_logprobs == (cached.logprobs if calculate_log_probs else None)
        assert set(row.as_dict()) == set(learner_row.as_dict())  # the batch concat needs the same fields
        assert set(row.extra_fields) >= set(learner_row.extra_fields)
    with pytest.raises(KeyError, match=r"has no sample \d for a prompt of this batch"):  # a prompt never cached
        asyncio.run(_missing(v, tok, [{"role": "user", "content": tiny_family.splits().rl[1].prompt}]))


async def _missing(v, tok, messages):
    loop = ExplorerAgentLoop(trainer_config=DictConfigWrap(v), server_manager=None, tokenizer=tok, processor=None,
                             dataset_cls=None, data_config=DictConfigWrap(v.data))
    await loop.run({}, raw_prompt=messages, s2lpo_slot=1, s2lpo_step=1)
