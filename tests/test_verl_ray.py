"""S2L-PO inside verl's real agent-loop machinery on CPU: verl's ``AgentLoopManager``/``AgentLoopWorker`` and
reward-loop Ray actors, our manager subclass and agent loops, and a tiny HF model behind verl's server
interface in vLLM's place (vLLM needs a GPU). One configuration exercises all three row kinds: G=4, T_mix=3,
one guided row per group (G²RPO-A), the learner sampling at a temperature the loss does not use."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
import torch

from s2lpo.algo.draw import draw_slots
from s2lpo.algo.plan import plan_group
from s2lpo.models.resolve import load_model
from s2lpo.models.tokenizer import load_tokenizer
from s2lpo.rewards import token_scorer
from s2lpo.rollout.explorer_cache import ExplorerCache, prompt_key
from s2lpo.rollout.sampler import SamplingParams
from s2lpo.tracking.journal import read_history
from s2lpo.verl_ext.toy import verl_view
from s2lpo_testing import QUICK, assert_passk_is_an_estimate, make_cfg

pytestmark = pytest.mark.slow
G, PROMPTS, T_MIX, GLEN = 4, 2, 3, 6
ALGO = ["algorithm=s2lpo", f"algorithm.group_size={G}", f"algorithm.t_mix={T_MIX}", "algorithm.guidance.enabled=true",
        "algorithm.guidance.k=1",
        f"algorithm.guidance.max_length={GLEN}", "algorithm.guidance.mask_guidance=true",
        "algorithm.temperature_mode=sample_only", "algorithm.temperature=0.8", f"data.prompts_per_step={PROMPTS}"]


@pytest.fixture(scope="module")
def verl_rollout(tmp_path_factory, tiny_family):
    ray = pytest.importorskip("ray")
    from s2lpo.verl_ext.cpu_rollout import cpu_rollout

    tmp = tmp_path_factory.mktemp("verl")
    learner, explorer = verl_view(tiny_family.model_dir("l"), tmp / "l"), verl_view(tiny_family.model_dir("s"), tmp / "s")
    cfg = make_cfg(tmp, *QUICK, *ALGO, "trainer=verl", f"learner.path={learner}", f"explorer.path={explorer}",
                   f"paths.explorer_cache_dir={tmp / 'xc'}")
    run_dir = tmp / "runs" / "rid"
    problems = tiny_family.splits().rl[:PROMPTS]
    tok = load_tokenizer(tiny_family.tokenizer_dir)
    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}})
    try:
        # 4 agent-loop workers: chunks of 2 rows, some all-explorer, some all-learner
        v, mgr, server = cpu_rollout(cfg, run_dir, str(tiny_family.model_dir("l")), learner_params=1000,
                                     explorer_params=100)
        s2 = v.s2lpo
        cache = ExplorerCache(s2.explorer_cache_dir, s2.explorer_digest, SamplingParams(**s2.explorer_sampling))
        prompt_ids = [tok(p.prompt, add_special_tokens=False)["input_ids"] for p in problems]
        cache.fill(load_model(tiny_family.model_dir("s"), torch.device("cpu")).eval(), prompt_ids,
                   [str(p.answer) for p in problems], G, token_scorer(tok, "toy_arith"), tok.eos_token_id,
                   tok.pad_token_id, seed=0)
        yield {"v": v, "mgr": mgr, "server": server, "problems": problems, "prompt_ids": prompt_ids, "cache": cache,
               "tok": tok, "run_dir": run_dir, "ray": ray}
    finally:
        ray.shutdown()


def prompt_batch(problems, step: int, validate: bool = False, n: int = G):
    from verl import DataProto

    b = DataProto.from_single_dict({
        "raw_prompt": np.array([[{"role": "user", "content": p.prompt}] for p in problems], dtype=object),
        "uid": np.array([str(uuid.uuid4()) for _ in problems], dtype=object),
        "data_source": np.array(["toy"] * len(problems), dtype=object),
        "reward_model": np.array([{"style": "rule", "ground_truth": str(p.answer)} for p in problems], dtype=object),
        "reference_solution": np.array([p.solution for p in problems], dtype=object),
    }, meta_info={"global_steps": step, "validate": validate})
    return b.repeat(n, interleave=True)  # as verl's trainer does: rows g*G .. g*G+G-1 are group g


def test_rows_follow_the_schedule_and_concatenate(verl_rollout):
    from verl.trainer.ppo.core_algos import AdvantageEstimator
    from verl.trainer.ppo.ray_trainer import compute_advantage, compute_response_mask

    mgr, cache, tok = verl_rollout["mgr"], verl_rollout["cache"], verl_rollout["tok"]
    problems, prompt_ids = verl_rollout["problems"], verl_rollout["prompt_ids"]
    for step in (1, 2, 3, 4):
        batch = prompt_batch(problems, step)
        out = mgr.generate_sequences(batch)
        plan = plan_group(step, G, T_MIX, "linear", 1, GLEN)
        assert list(out.non_tensor_batch["s2lpo_source"]) == plan.sources * PROMPTS
        P = out.batch["prompts"].shape[1]
        att, pos = out.batch["attention_mask"], out.batch["position_ids"]
        assert torch.equal(pos, (att.cumsum(-1) - 1).clamp(min=0))  # every row, cached or generated
        for g in range(PROMPTS):
            rows = range(g * G, (g + 1) * G)
            # explorer, guided and learner rows of a group carry the same prompt, built by verl's builder
            assert all(torch.equal(out.batch["prompts"][i], out.batch["prompts"][g * G]) for i in rows)
            assert att[g * G, :P].sum() == len(prompt_ids[g])
            for i in rows:
                resp_len = int(att[i, P:].sum())
                src = out.non_tensor_batch["s2lpo_source"][i]
                if src == "explorer":
                    s2 = verl_rollout["v"].s2lpo  # the cached sample this row's slot draws (s2lpo.algo.draw)
                    slot = draw_slots(s2.seed, step, prompt_key(prompt_ids[g]), plan.n_explorer, s2.explorer_samples)
                    cached = cache.get(prompt_ids[g], slot[i - g * G])
                    assert out.batch["responses"][i, :resp_len].tolist() == cached.tokens
                    assert float(out.batch["rm_scores"][i].sum()) == pytest.approx(cached.reward)
                mask = out.batch["response_mask"][i]
                if src == "guided":  # the reference prefix is masked out of the loss (mask_guidance)
                    side = read_history(verl_rollout["run_dir"] / "verl" / "s2lpo")  # this step's adapted length
                    glen = int(side["train/guidance_length"][step])
                    prefix = tok(problems[g].solution, add_special_tokens=False)["input_ids"][:glen]
                    assert out.batch["responses"][i, : len(prefix)].tolist() == prefix
                    assert mask[: len(prefix)].sum() == 0 and mask[len(prefix):resp_len].all()
                else:
                    assert torch.equal(mask, att[i, P:])
        # verl's trainer joins the rollout to its repeated batch (uid per prompt), then GRPO advantages by uid
        joined = out
        joined.non_tensor_batch["uid"] = batch.non_tensor_batch["uid"]
        joined.batch["response_mask"] = compute_response_mask(joined)
        joined.batch["token_level_rewards"] = joined.batch["rm_scores"]
        adv = compute_advantage(joined, AdvantageEstimator.GRPO, num_repeat=G).batch["advantages"]
        scores = out.batch["rm_scores"].sum(-1).view(PROMPTS, G)
        for g in range(PROMPTS):  # one group = the explorer, guided and learner rows of a prompt together
            s = scores[g]
            want = (s - s.mean()) / (s.std() + 1e-6)
            for j in range(G):
                i = g * G + j
                m = joined.batch["response_mask"][i].bool()
                assert torch.allclose(adv[i][m], want[j].expand(int(m.sum())), atol=1e-5)
    # learner rows sample at algorithm.temperature (sample_only); verl's rollout.temperature (the loss's) is 1
    temps = {round(t, 3) for _, t in verl_rollout["ray"].get(verl_rollout["server"].history.remote())}
    assert temps == {0.8} and verl_rollout["v"].actor_rollout_ref.rollout.temperature == 1.0


def test_validation_and_metric_names_equal_the_local_backends(verl_rollout, tmp_path):
    from verl.trainer.ppo.metric_utils import compute_data_metrics, compute_timing_metrics
    from verl.trainer.ppo.ray_trainer import compute_response_mask
    from verl.utils.py_functional import rename_dict

    from s2lpo.algo import grpo
    from s2lpo.trainer.local import train
    from s2lpo.verl_ext.metrics import map_verl

    mgr, problems = verl_rollout["mgr"], verl_rollout["problems"]
    out = mgr.generate_sequences(prompt_batch(problems, 5, validate=True, n=4))
    assert set(out.non_tensor_batch) >= {"num_cached_tokens", "global_steps"}  # verl's rows, untouched
    side = read_history(verl_rollout["run_dir"] / "verl" / "s2lpo")
    assert {"eval/toy/pass@1", "eval/toy/pass@2", "eval/toy/pass@4"} <= set(side)
    assert_passk_is_an_estimate({k: side[f"eval/toy/pass@{k}"][5] for k in (1, 2, 4)}, n=4, problems=len(problems))
    assert side["train/n_explorer"] == {1: 4, 2: 2, 3: 0, 4: 0} and side["train/n_guided"][2] == 1
    assert side["compute/explorer/tokens_cum"][4] == side["compute/explorer/tokens_cum"][2] > 0
    # what verl's trainer would log for a step, from verl's own metric functions on a real batch
    batch = prompt_batch(problems, 6)
    b = mgr.generate_sequences(batch)
    b.non_tensor_batch["uid"] = batch.non_tensor_batch["uid"]
    b.batch["response_mask"] = compute_response_mask(b)
    b.batch["token_level_rewards"] = b.batch["token_level_scores"] = b.batch["rm_scores"]
    b.batch["advantages"] = b.batch["returns"] = torch.zeros_like(b.batch["rm_scores"])
    logp = torch.zeros_like(b.batch["rm_scores"])
    _, pg = grpo.policy_loss(logp, logp, b.batch["advantages"], b.batch["response_mask"], grpo.actor_config(G, 0.2))
    actor = rename_dict({**pg, "pg_loss": 0.0, "grad_norm": 1.0, "lr": 1e-6}, "actor/")  # verl's actor update names
    logged = {**compute_data_metrics(b, use_critic=False), **actor,
              **compute_timing_metrics(b, {"gen": 1.0, "step": 2.0})}
    verl_names = {k for k in map_verl(logged) if not k.startswith("verl/")} | set(side)
    # the same run on the local backend
    local = train(make_cfg(tmp_path, *QUICK, *ALGO, "trainer.total_steps=3", "trainer.eval_every=3"), log=lambda *_: None)
    local_names = set(read_history(local.run_dir))
    assert verl_names == local_names, (verl_names ^ local_names)
    acc = read_history(verl_rollout["run_dir"] / "verl" / "s2lpo")["train/accuracy"][6]
    assert acc == pytest.approx(float((b.batch["rm_scores"].sum(-1) > 0).float().mean()))


def test_a_restarted_manager_resumes_the_guidance_and_compute_state(verl_rollout):
    """verl resumes from its checkpoint step; a new manager (a restarted run) takes the state of that step."""
    import json

    from s2lpo.verl_ext.manager import STATE_FILE, S2LPOAgentLoopManager

    run_dir = verl_rollout["run_dir"]
    states = json.loads((run_dir / "verl" / STATE_FILE).read_text())
    side = read_history(run_dir / "verl" / "s2lpo")
    assert states["2"]["cum"]["explorer/tokens"] == side["compute/explorer/tokens_cum"][2]
    fresh = S2LPOAgentLoopManager(config=verl_rollout["v"], llm_client=None)  # no workers: state only
    fresh._restore(3)  # the checkpoint was step 2: step 3 is trained again
    assert fresh.cum == states["2"]["cum"] and fresh.guidance.state_dict() == states["2"]["guidance"]
    assert fresh.guidance.length == side["train/guidance_length"][3]
