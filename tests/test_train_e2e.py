"""End-to-end CPU runs of every algorithm on the tiny family (a few steps each)."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from transformers import AutoModelForCausalLM

from s2lpo.algo import grpo
from s2lpo.algo.schedule import split_group
from s2lpo.models.tokenizer import load_tokenizer
from s2lpo.rollout.batch import Row, collate, response_log_probs
from s2lpo.rollout.sampler import SamplingParams, sample
from s2lpo.tracking.journal import read_history
from s2lpo.trainer.local import sampling_params, train
from s2lpo.trainer.update import UpdateConfig, train_step
from s2lpo_testing import CACHE, QUICK, ROOT, assert_passk_is_an_estimate, make_cfg

pytestmark = pytest.mark.slow


def run(tmp_path, *overrides):
    cfg = make_cfg(tmp_path, *QUICK, *overrides)
    res = train(cfg, log=lambda *_: None)
    assert res.status == "finished"
    return cfg, read_history(res.run_dir), res


def test_s2lpo_source_counts_follow_the_schedule(tmp_path, tiny_family):
    ov = ["algorithm=s2lpo", "explorer=toy_s", "trainer.total_steps=5", f"paths.explorer_cache_dir={tmp_path}/xc"]
    cfg, h, res = run(tmp_path, *ov)
    G, T, P = cfg.algorithm.group_size, cfg.algorithm.t_mix, cfg.data.prompts_per_step
    for step in range(1, 6):
        ne, nl = split_group(step, G, T)
        assert h["train/n_explorer"][step] == ne
        assert h["rollout/explorer/count"][step] == ne * P
        assert h["rollout/learner/count"][step] == nl * P
        assert h["compute/explorer/tokens"][step] > 0 if ne else h["compute/explorer/tokens"][step] == 0
    assert [h["train/n_explorer"][s] for s in range(1, 6)] == [4, 2, 0, 0, 0]
    # a fresh cache is filled on first use, the explorer's whole pool (samples_per_prompt = G here) per new prompt
    from s2lpo.algo.seeds import batch_indices

    drawn = [set(batch_indices(len(tiny_family.splits().rl), P, s, cfg.seed)) for s in (1, 2)]
    pool = cfg.explorer.sampling.samples_per_prompt
    assert [h["compute/explorer/cache_misses"][s] for s in (1, 2, 3)] == [pool * P, pool * len(drawn[1] - drawn[0]), 0]
    # ... and another run over the same explorer and prompts (another seed of a sweep) reuses it
    _, h2, _ = run(tmp_path / "again", *ov, f"trainer.lr={cfg.trainer.lr * 2}")
    assert sum(h2["compute/explorer/cache_misses"].values()) == 0
    assert h2["rollout/explorer/reward_mean"] == h["rollout/explorer/reward_mean"]
    assert_passk_is_an_estimate({k: h[f"eval/toy/pass@{k}"][5] for k in (1, 2, 4)}, n=4, problems=8)
    assert_passk_is_an_estimate({k: h[f"eval/toy/pass@{k}"][4] for k in (1, 2)}, n=2, problems=8)
    assert h["eval/toy/pass@1"].keys() == {0, 2, 4, 5}
    assert res.final_metrics["compute/rollout_flops_cum"] == h["compute/rollout_flops_cum"][5]


def test_grpo_and_token_temperature(tmp_path, tiny_family):
    _, h, _ = run(tmp_path / "g", "algorithm=grpo", "explorer=none", "algorithm.t_mix=0")
    assert all(h["train/n_learner"][s] == 4 for s in range(1, 5))
    assert "rollout/explorer/reward_mean" not in h
    cfg_t, ht, _ = run(tmp_path / "t", "algorithm=token_temp", "explorer=none", "algorithm.t_mix=0")
    assert all(ht["rollout/learner/count"][s] == 8 for s in range(1, 5))
    # the temperature the sampler and the update really use (tempered mode: the log-probs are tempered too)
    assert sampling_params(cfg_t).temperature == UpdateConfig.from_config(cfg_t).temperature == 1.3
    assert UpdateConfig.from_config(make_cfg(tmp_path, *QUICK, "algorithm=grpo")).temperature == 1.0
    for hist in (h, ht):  # token accounting: every generated response token is counted once
        for s in range(1, 5):
            assert hist["compute/learner/tokens"][s] == pytest.approx(
                hist["rollout/learner/count"][s] * hist["rollout/learner/response_length"][s])


def test_g2rpo_a_guided_rows(tmp_path, tiny_family):
    _, h, _ = run(tmp_path, "algorithm=g2rpo_a", "explorer=none", "algorithm.t_mix=0", "algorithm.guidance.k=2",
                  "algorithm.guidance.max_length=6", "algorithm.guidance.mask_guidance=true")
    assert h["train/guidance_length"][1] == 6
    for s in range(1, 5):
        guided = h["rollout/guided/count"][s]
        assert guided == (4 if h["train/guidance_length"][s] > 0 else 0)  # k=2 of each of 2 groups
        assert h["rollout/learner/count"][s] == 8 - guided


def test_guided_rows_continue_the_reference_solution(tmp_path, tiny_family):
    """A guided row is the reference solution's first ``guidance_length`` tokens, then the learner's own
    continuation: the prefix marked (``n_guidance``) with no behaviour log-prob, the learner rows unguided."""
    from s2lpo.algo.plan import GUIDED, LEARNER, plan_group
    from s2lpo.models.resolve import load_model
    from s2lpo.rewards.registry import token_scorer
    from s2lpo.rollout.collect import Rollout
    from s2lpo.trainer.setup import resolve

    cfg = make_cfg(tmp_path, *QUICK, "algorithm=g2rpo_a", "explorer=none", "algorithm.t_mix=0")
    res = resolve(cfg, log=lambda *_: None)
    tok = load_tokenizer(res.tokenizer_path)
    rollout = Rollout(res.train, tok, None, None, sampling_params(cfg), token_scorer(tok, cfg.data.reward), 0, 64,
                      res.device)
    plan = plan_group(1, 4, 0, "linear", 2, 5)
    idx = [3, 11]
    rows = rollout.learner_rows(1, plan, idx, 5, load_model(res.learner_path, res.device))
    assert sorted(r.source for r in rows) == [GUIDED] * 4 + [LEARNER] * 4
    for r in rows:
        ref = rollout.ref_ids[idx[r.group]]
        assert r.prompt_ids == rollout.prompt_ids[idx[r.group]]
        if r.source == GUIDED:
            assert r.n_guidance == 5 and r.response_ids[:5] == ref[:5] and len(r.response_ids) > 5
            assert r.behavior_logprobs[:5] == [0.0] * 5 and all(lp <= 0 for lp in r.behavior_logprobs[5:])
        else:
            assert r.n_guidance == 0 and all(lp <= 0 for lp in r.behavior_logprobs)


def test_offpolicy_corrections_reach_the_update(tmp_path, tiny_family):
    """A run with a correction trains through it (the KL term too): its first update, from the same weights on
    the same rows, differs from the uncorrected run's, while everything before the update is identical."""
    hs = {}
    for correction in ("none", "truncated_is", "shaping"):
        _, hs[correction], _ = run(tmp_path / correction, "algorithm=s2lpo", "explorer=toy_s",
                                   f"algorithm.offpolicy_correction={correction}",
                                   "algorithm.kl_coef=0.01", "algorithm.is_cap=1.5",
                                   f"paths.explorer_cache_dir={tmp_path}/xc")
    for key in ("rollout/explorer/reward_mean", "train/accuracy"):  # step 1: every row is the explorer's
        assert hs["none"][key][1] == hs["truncated_is"][key][1] == hs["shaping"][key][1]
    for correction in ("truncated_is", "shaping"):
        assert max(hs[correction]["train/kl_loss"].values()) > 0
        assert [hs[correction]["train/pg_loss"][s] for s in range(1, 5)] != [hs["none"]["train/pg_loss"][s]
                                                                           for s in range(1, 5)]


def test_training_raises_logprob_of_rewarded_completions(tiny_family):
    torch.manual_seed(0)
    tok = load_tokenizer(tiny_family.tokenizer_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_family.model_dir("l")).eval()
    probs = tiny_family.splits().rl[:8]
    ctx = [tok(p.prompt, add_special_tokens=False)["input_ids"] for p in probs for _ in range(8)]
    g = torch.Generator().manual_seed(0)
    samples = sample(model, ctx, SamplingParams(max_new_tokens=24), tok.eos_token_id, tok.pad_token_id, g)
    rows = []
    for i, s in enumerate(samples):
        text = tok.decode(s.tokens, skip_special_tokens=True)
        r = float(text.rsplit("####", 1)[-1].strip() == str(probs[i // 8].answer)) if "####" in text else 0.0
        rows.append(Row(i // 8, "learner", ctx[i], s.tokens, s.logprobs, 0, s.finish_reason, r))
    rewarded = [r for r in rows if r.reward > 0]
    groups_with_signal = {r.group for r in rewarded} - {r.group for r in rows if r.reward == 0} ^ {r.group for r in rewarded}
    assert rewarded and groups_with_signal, "the tiny learner must solve some but not all of its samples"

    def mean_logp(rs):
        b = collate(rs, tok.pad_token_id, "cpu")
        with torch.no_grad():
            return float((response_log_probs(model, b) * b.response_mask).sum() / len(rs))

    before_good = mean_logp(rewarded)
    before_bad = mean_logp([r for r in rows if r.reward == 0])
    cfg = make_cfg(CACHE, *QUICK)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    aconf = grpo.actor_config(8)
    for _ in range(3):
        train_step(model, None, opt, rows, tok.pad_token_id, "cpu", aconf, UpdateConfig.from_config(cfg))
    assert mean_logp(rewarded) > before_good + 0.3
    assert mean_logp([r for r in rows if r.reward == 0]) < before_bad


def _history_without_timing(run_dir):
    """Everything but wall-clock times and cache misses (those depend on what ran before, not on the run)."""
    return {k: v for k, v in read_history(run_dir).items()
            if not k.startswith("time/") and k != "compute/explorer/cache_misses"}


def test_kill_and_resume_gives_the_uninterrupted_history(tmp_path, tiny_family):
    overrides = [*QUICK, "algorithm=s2lpo", "explorer=toy_s", "trainer.total_steps=20", "algorithm.t_mix=4",
                 "trainer.checkpoint_every=3", "trainer.eval_every=4", "logger=mlflow"]
    ref_cfg = make_cfg(tmp_path / "ref", *overrides)
    ref = train(ref_cfg, log=lambda *_: None)
    # the same run in a child process, SIGKILLed mid-run (after step 4's metrics, checkpoint at 3)
    root = tmp_path / "killed"
    cmd = [sys.executable, str(ROOT / "experiments/train.py"), f"paths.root_dir={root}", f"paths.cache_dir={CACHE}",
           *overrides]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = root / "runs" / ref.run_id / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline:
        if journal.exists() and 4 in read_history(journal.parent).get("train/loss", {}):
            break
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert 20 not in read_history(journal.parent).get("train/loss", {}), "the child finished before the kill"
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "warning" not in done.stdout + done.stderr, (done.stdout + done.stderr)[-3000:]
    assert _history_without_timing(journal.parent) == _history_without_timing(ref.run_dir)
    # MLflow got every step exactly once
    import json

    from mlflow.tracking import MlflowClient

    run_id = json.loads((journal.parent / "tracking" / "mlflow.json").read_text())["remote"]["run_id"]
    client = MlflowClient(f"sqlite:///{root}/mlruns.db")
    steps = [m.step for m in client.get_metric_history(run_id, "train/loss")]
    assert steps == list(range(1, 21))
    assert json.loads((journal.parent / "manifest.json").read_text())["restarts"] == 1


@pytest.mark.parametrize(("agg_mode", "correction"), [("token-mean", "none"), ("seq-mean-token-mean", "shaping"),
                                                      ("token-mean", "truncated_is")])
def test_skipping_rows_without_signal_leaves_the_update_unchanged(tiny_family, agg_mode, correction):
    tok = load_tokenizer(tiny_family.tokenizer_dir)
    probs = tiny_family.splits().rl[:6]
    base = AutoModelForCausalLM.from_pretrained(tiny_family.model_dir("l")).eval()
    ctx = [tok(p.prompt, add_special_tokens=False)["input_ids"] for p in probs for _ in range(4)]
    samples = sample(base, ctx, SamplingParams(max_new_tokens=24), tok.eos_token_id, tok.pad_token_id,
                     torch.Generator().manual_seed(1))
    # groups 0-1 all rewarded, 2-3 mixed, 4-5 none rewarded; rows 0-3 play explorer rows
    rewards = [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 0, 1, 0, 0] + [0] * 8
    rows = [Row(i // 4, "explorer" if i < 4 else "learner", ctx[i], s.tokens, s.logprobs, 0, "stop", float(r))
            for i, (s, r) in enumerate(zip(samples, rewards))]
    cfg = make_cfg(CACHE, *QUICK, f"algorithm.loss_agg_mode={agg_mode}",
                   f"algorithm.offpolicy_correction={correction}")
    params = []
    for skip in (False, True):
        model = AutoModelForCausalLM.from_pretrained(tiny_family.model_dir("l"))
        # plain SGD: the update is the gradient itself (Adam would magnify float noise in near-zero gradients)
        opt = torch.optim.SGD(model.parameters(), lr=1.0)
        m = train_step(model, None, opt, rows, tok.pad_token_id, "cpu", grpo.actor_config(4, loss_agg_mode=agg_mode),
                       UpdateConfig.from_config(cfg), skip_zero_advantage=skip)
        params.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
        assert m["train/rows_with_signal"] == pytest.approx(8 / 24)
    diff = (params[0] - params[1]).abs().max().item()
    assert diff < 1e-5, diff
    assert not torch.equal(params[0], torch.cat([p.detach().flatten() for p in base.parameters()]))


def test_killed_after_the_last_checkpoint_finishes_without_training(tmp_path, tiny_family):
    import json

    cfg, h, res = run(tmp_path, "algorithm=grpo", "explorer=none", "algorithm.t_mix=0")
    manifest = res.run_dir / "manifest.json"
    data = json.loads(manifest.read_text())
    data.update(status="running", final_metrics={})  # as if killed between the checkpoint and the manifest
    manifest.write_text(json.dumps(data))
    lines = (res.run_dir / "metrics.jsonl").read_text()
    again = train(cfg, log=lambda *_: None)
    assert again.status == "finished"
    assert again.final_metrics["eval/toy/pass@1"] == h["eval/toy/pass@1"][4]
    assert (res.run_dir / "metrics.jsonl").read_text() == lines  # nothing trained or logged again


def test_runs_from_the_same_start_evaluate_it_once(tmp_path, tiny_family, monkeypatch):
    """Step 0 is the same for every run from the same weights and seed (s2lpo.eval.memo): a second method reads
    the first's evaluation instead of sampling it again; what it reads is what an evaluation gives; another seed,
    or a damaged entry, is evaluated anew."""
    import s2lpo.trainer.local as local

    calls = []
    real = local.evaluate
    monkeypatch.setattr(local, "evaluate", lambda *a, **k: calls.append(a[4]) or real(*a, **k))
    grpo_ov = ["algorithm=grpo", "explorer=none", "algorithm.t_mix=0", "trainer.total_steps=1"]
    memo = f"paths.eval_cache_dir={tmp_path}/memo"

    def step0(h):
        return {k: v[0] for k, v in h.items() if k.startswith("eval/") and 0 in v}

    _, h1, _ = run(tmp_path / "a", *grpo_ov, memo)
    assert calls == [2, 4]  # step 0 (eval_samples) and the final evaluation (final_eval_samples)
    entries = list((tmp_path / "memo").glob("*.json"))
    assert len(entries) == 1
    _, h2, _ = run(tmp_path / "b", "algorithm=token_temp", "explorer=none", "algorithm.t_mix=0",
                   "trainer.total_steps=1", memo)
    assert calls == [2, 4, 4] and step0(h2) == step0(h1) and set(step0(h1)) >= {"eval/toy/pass@1", "eval/toy/pass@2"}
    _, h3, _ = run(tmp_path / "c", *grpo_ov, f"paths.eval_cache_dir={tmp_path}/empty")
    assert step0(h3) == step0(h1)  # evaluated, not read: the same numbers
    run(tmp_path / "d", *grpo_ov, memo, "seed=1")
    assert len(list((tmp_path / "memo").glob("*.json"))) == 2 and calls[-2:] == [2, 4]
    entries[0].write_text("{not json")
    del calls[:]
    _, h5, _ = run(tmp_path / "e", *grpo_ov, memo)
    assert calls == [2, 4] and step0(h5) == step0(h1)


def test_inside_a_slurm_job_a_run_without_threads_takes_its_cpus(tmp_path, tiny_family, monkeypatch):
    """``trainer.threads=null`` inside a SLURM job: torch gets the job's CPUs (``SLURM_CPUS_PER_TASK``), not
    every core of the node; a set ``trainer.threads`` wins; outside SLURM torch keeps its default."""
    from s2lpo.trainer.setup import intra_op_threads

    before = torch.get_num_threads()
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    try:
        torch.set_num_threads(2)
        run(tmp_path, "trainer.threads=null", "trainer.total_steps=3", "trainer.eval_every=10")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert intra_op_threads(3, {"SLURM_CPUS_PER_TASK": "1"}) == 3
    assert intra_op_threads(None, {"SLURM_CPUS_PER_TASK": "6"}) == 6
    assert intra_op_threads(None, {}) is None and intra_op_threads(None, {"SLURM_CPUS_PER_TASK": ""}) is None


def test_bf16_on_a_cpu_without_bf16_units_says_it_will_be_slow(tmp_path, tiny_family, monkeypatch):
    """``trainer.precision=bf16`` on a CPU whose flags name no bf16 units: the run says, before it trains, that
    its matmuls are emulated and fp32 is faster; with AMX (or AVX-512 BF16, or Arm's bf16) it says nothing."""
    import s2lpo.trainer.local as local
    from s2lpo.trainer.setup import bf16_warning

    cpu = torch.device("cpu")
    assert "13x slower" in bf16_warning("bf16", cpu, "fpu sse avx2 fma")
    for flags in ("avx2 amx_bf16 amx_tile", "avx512f avx512_bf16", "fp asimd bf16"):
        assert bf16_warning("bf16", cpu, flags) is None, flags
    assert bf16_warning("fp32", cpu, "avx2") is None and bf16_warning("bf16", torch.device("cuda"), "avx2") is None
    for flags, warned in (("fpu avx2 fma", True), ("avx512f amx_bf16", False)):
        monkeypatch.setattr(local, "cpu_features", lambda f=flags: f)
        lines: list[str] = []
        cfg = make_cfg(tmp_path / str(warned), *QUICK, "algorithm=grpo", "algorithm.t_mix=0", "explorer=none",
                       "trainer.precision=bf16", "trainer.total_steps=1", "trainer.eval_every=10")
        res = local.train(cfg, log=lambda *a, out=lines: out.append(" ".join(map(str, a))))
        assert res.status == "finished"
        assert any("trainer.precision=bf16 on a CPU without bf16 units" in line for line in lines) == warned, lines
