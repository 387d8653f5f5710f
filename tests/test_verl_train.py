"""verl's own training loop on CPU: ``trainer=verl trainer.device=cpu`` runs verl 0.9.1's ``main_ppo`` task runner
and ``RayPPOTrainer.fit`` (FSDP2 actor and reference workers over gloo, verl's agent-loop and reward-loop Ray
actors, checkpoints, ``resume_mode=auto``) with the toy family, a stand-in HF generation server in vLLM's place
(it serves the actor's weights after every update), and our runner, manifest and journal around it.

Every row of every step is recorded (``trainer.record_rollouts``) and every weight update the server receives
(its digest), so the assertions read what verl really did."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from s2lpo.algo import grpo
from s2lpo.algo.plan import plan_group
from s2lpo.tracking.journal import read_history
from s2lpo.tracking.run import Manifest
from s2lpo_testing import CACHE, QUICK, ROOT, kill_tree, make_cfg

pytestmark = pytest.mark.slow
G, T_MIX, GLEN, PROMPTS, STEPS = 4, 3, 6, 2, 4
BASE = [*QUICK, "trainer=verl", "trainer.device=cpu", "trainer.mini_batches=1", "trainer.lr=1e-4",
        "trainer.record_rollouts=true",
        "trainer.verl.actor_rollout_ref.actor.checkpoint.save_contents=[model,optimizer,extra,hf_model]"]
# every row source at once: explorer rows (S2L-PO, T_mix 3), one guided row (G²RPO-A's guidance, masked prefix), learner rows
# sampled at a temperature the loss does not use, KL to the reference policy (verl's ref worker runs)
ALL_SOURCES = ["algorithm=s2lpo", f"algorithm.t_mix={T_MIX}", "algorithm.guidance.enabled=true", "algorithm.guidance.k=1",
               f"algorithm.guidance.max_length={GLEN}", "algorithm.guidance.mask_guidance=true",
               "algorithm.temperature_mode=sample_only",
               "algorithm.temperature=0.8", "algorithm.kl_coef=0.01", "algorithm.offpolicy_correction=truncated_is"]
COMPUTED = ("verl/actor/pg_loss", "verl/actor/grad_norm", "verl/actor/kl_loss", "verl/actor/entropy",
            "train/reward_mean", "rollout/learner/reward_mean", "eval/toy/pass@1")


def verl_train(root: Path, *overrides: str):
    from s2lpo.verl_ext.runner import train

    return train(make_cfg(root, *BASE, *overrides), log=lambda *_: None)


def rollouts(run_dir: Path, validate: bool = False) -> dict[int, list[dict]]:
    """step -> that step's rows in batch order (the last attempt's, for a step trained twice)."""
    out: dict[int, dict[int, dict]] = {}
    for line in (run_dir / "verl" / "s2lpo" / "rollouts.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["validate"] == validate:
            out.setdefault(r["step"], {})[r["row"]] = r
    return {s: [rows[i] for i in sorted(rows)] for s, rows in out.items()}


def server_digests(run_dir: Path) -> dict[int, str]:
    lines = (run_dir / "verl" / "standin" / "weights.jsonl").read_text().splitlines()
    return {r["global_steps"]: r["digest"] for r in map(json.loads, lines)}


@pytest.fixture(scope="module")
def all_sources(tmp_path_factory, tiny_family):
    root = tmp_path_factory.mktemp("verl_all")
    t0 = time.time()
    res = verl_train(root, *ALL_SOURCES)
    return {"root": root, "res": res, "seconds": time.time() - t0, "cfg": make_cfg(root, *BASE, *ALL_SOURCES)}


def test_every_row_source_trains_through_verls_loop(all_sources, tiny_family):
    from transformers import AutoModelForCausalLM

    from s2lpo.algo.draw import draw_slots
    from s2lpo.models.family import weights_digest
    from s2lpo.models.resolve import model_params
    from s2lpo.models.tokenizer import load_tokenizer
    from s2lpo.rollout.explorer_cache import ExplorerCache, explorer_sampling, prompt_key
    from s2lpo.verl_ext.standin_server import state_digest

    res, cfg = all_sources["res"], all_sources["cfg"]
    assert res.status == "finished" and Manifest(res.run_dir).data["config"]["trainer"]["device"] == "cpu"
    hist, steps = read_history(res.run_dir), rollouts(res.run_dir)
    assert sorted(steps) == list(range(1, STEPS + 1)) and sorted(hist["verl/training/global_step"]) == sorted(steps)
    sampling, pool = explorer_sampling(cfg)  # the explorer's own (toy: T 1, a pool of G samples per prompt)
    cache = ExplorerCache(Path(cfg.paths.explorer_cache_dir).resolve(), weights_digest(tiny_family.model_dir("s")),
                          sampling)
    tok = load_tokenizer(tiny_family.tokenizer_dir)
    solutions = {p.prompt: p.solution for p in tiny_family.splits().rl}
    params = {"learner": model_params(cfg, "learner"), "explorer": model_params(cfg, "explorer")}
    assert params["learner"] > params["explorer"] > 0
    for step, rows in steps.items():
        glen = int(hist["train/guidance_length"][step])
        plan = plan_group(step, G, T_MIX, "linear", 1, glen)
        assert [r["source"] for r in rows] == plan.sources * PROMPTS  # the schedule, per group
        assert (hist["train/n_explorer"][step], hist["train/n_guided"][step]) == (plan.n_explorer, plan.n_guided)
        generated = {"explorer": 0, "guided": 0, "learner": 0}
        for i, r in enumerate(rows):
            n = len(r["response_ids"])
            if r["source"] == "explorer":  # replayed from the cache, token for token, with its reward
                slot = draw_slots(cfg.seed, step, prompt_key(r["prompt_ids"]), plan.n_explorer, pool)[i % G]
                cached = cache.get(r["prompt_ids"], slot)
                assert r["response_ids"] == cached.tokens and r["score"] == pytest.approx(cached.reward)
                assert r["log_probs"] == pytest.approx(cached.logprobs, abs=1e-6)  # truncated IS: the explorer's
            if r["source"] == "guided":  # the reference prefix, masked out of the loss
                prefix = tok(solutions[tok.decode(r["prompt_ids"])], add_special_tokens=False)["input_ids"][:glen]
                assert r["response_ids"][:glen] == prefix and r["loss_tokens"] == n - glen
            generated[r["source"]] += n - (glen if r["source"] == "guided" else 0)
        for src, tokens in generated.items():  # FLOPs: 2 * params * generated tokens, as the local backend
            p = params["explorer" if src == "explorer" else "learner"]
            assert hist[f"compute/{src}/flops"][step] == pytest.approx(2.0 * p * tokens)
        assert hist["compute/rollout_flops_cum"][step] > 0
        # verl's advantages (its logged token statistics) are GRPO's over each combined group
        mask = torch.zeros(len(rows), max(len(r["response_ids"]) for r in rows))
        for i, r in enumerate(rows):
            n = len(r["response_ids"])
            mask[i, n - r["loss_tokens"]:n] = 1
        adv = grpo.group_advantages(torch.tensor([r["score"] for r in rows]), mask, [r["uid"] for r in rows])
        valid = adv[mask.bool()]
        assert float(valid.max()) == pytest.approx(hist["verl/critic/advantages/max"][step], abs=1e-5)
        assert float(valid.min()) == pytest.approx(hist["verl/critic/advantages/min"][step], abs=1e-5)
        assert float(valid.mean()) == pytest.approx(hist["verl/critic/advantages/mean"][step], abs=1e-5)
    assert max(hist["train/kl_loss"].values()) > 0  # the reference worker ran
    # truncated IS: the rows carry their sampler's log-probs (explorer rows: the cached ones), verl weighs the
    # policy loss by min(pi_learner / pi_sampler, cap) per token (its rollout_corr metrics)
    assert hist["verl/rollout_corr/rollout_is_mean"][1] != pytest.approx(1.0, abs=1e-3)  # step 1: explorer rows
    assert all("log_probs" in r and len(r["log_probs"]) == len(r["response_ids"]) for r in steps[1])
    # the server gets the learner's weights after every step: new ones whenever the step had a gradient
    digests = server_digests(res.run_dir)
    assert sorted(digests) == list(range(STEPS + 1))
    for step in range(1, STEPS + 1):
        assert (digests[step] != digests[step - 1]) == (hist["verl/actor/grad_norm"][step] > 0), step
    assert len(set(digests.values())) >= 3
    for step in (2, 4):  # the checkpoint's HF weights are what the server received after that step
        hf = res.run_dir / "verl_checkpoints" / f"global_step_{step}" / "actor" / "huggingface"
        assert state_digest(AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32)) == digests[step]
    assert {0, 2, 4} <= set(hist["eval/toy/pass@1"]) and 4 in hist["eval/toy/pass@4"]


def test_metric_names_equal_the_local_backends(all_sources, tmp_path):
    from s2lpo.trainer.local import train

    local = train(make_cfg(tmp_path, *QUICK, *ALL_SOURCES), log=lambda *_: None)
    verl_names = {k for k in read_history(all_sources["res"].run_dir) if not k.startswith("verl/")}
    local_names = set(read_history(local.run_dir))
    assert verl_names == local_names, verl_names ^ local_names


SHORT = ["trainer.total_steps=2", "trainer.eval_every=2", "trainer.checkpoint_every=2"]
HOT_PROMPTS = 4  # the tiny learner solves ~14 % at T = 1.2: 8 groups over two steps, so some carry a signal
# G²RPO-A (two guided rows per group, the reference prefix kept in the loss) sampling and training at T = 1.2 in
# verl's ``tempered`` sense: the token-level temperature's code path and the unmasked guidance in one verl start
# (each start costs ~1 min of the suite; algorithm=token_temp itself refuses guidance)
HOT = ["algorithm=g2rpo_a", "explorer=none", "algorithm.t_mix=0", "algorithm.temperature=1.2",
       "algorithm.temperature_mode=tempered", f"data.prompts_per_step={HOT_PROMPTS}", "algorithm.guidance.k=2",
       f"algorithm.guidance.max_length={GLEN}", "algorithm.guidance.mask_guidance=false", *SHORT]


@pytest.fixture(scope="module")
def hot(tmp_path_factory):
    """Sampling and loss at T = 1.2 (tempered) with unmasked guided rows, world size 1."""
    return verl_train(tmp_path_factory.mktemp("verl_hot"), *HOT)


def test_tempered_temperature_and_unmasked_guidance_train(hot, tmp_path):
    """token-level temperature in verl's ``tempered`` sense (sampling and loss at T) and G²RPO-A's guided rows
    with the reference prefix kept in the loss."""
    from s2lpo.verl_ext.config import to_verl

    assert hot.status == "finished"
    digests = server_digests(hot.run_dir)
    assert sorted(digests) == [0, 1, 2] and len(set(digests.values())) >= 2  # the learner trained
    # verl samples at T and divides the actor's logits by T (tempered); no sample-only override per row
    v = to_verl(make_cfg(tmp_path / "hot", *BASE, *HOT), tmp_path, "x")
    assert v.actor_rollout_ref.rollout.temperature == 1.2 and v.s2lpo.learner_agent is None
    steps, hist = rollouts(hot.run_dir), read_history(hot.run_dir)
    assert sorted(steps) == [1, 2]
    for step, rows in steps.items():
        glen = int(hist["train/guidance_length"][step])
        sources = [r["source"] for r in rows]
        assert glen > 0 and sources == plan_group(step, G, 0, "linear", 2, glen).sources * HOT_PROMPTS
        assert {"guided", "learner"} <= set(sources)
        assert all(r["loss_tokens"] == len(r["response_ids"]) for r in rows)  # nothing masked


def test_world_size_two_matches_world_size_one(hot, tmp_path):
    """Two fake GPUs: FSDP2 shards the learner over gloo, two replicas, two agent-loop workers; the first step's
    rollouts are the same rows (seeded per row) and its loss and gradient norm match world size 1's."""
    two = verl_train(tmp_path / "two", *HOT, "learner.resources.gpus_per_node=2")
    assert two.status == "finished"
    assert (two.run_dir / "verl_checkpoints" / "global_step_2" / "actor" / "model_world_size_2_rank_1.pt").exists()
    # the ranks met through a file of the start (no TCP port to lose to another process), removed at its end
    assert [p.name for p in (two.run_dir / "verl" / "dist").iterdir()] == []
    lines = (two.run_dir / "verl" / "standin" / "weights.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["global_steps"] for x in lines) == [0, 0, 1, 1, 2, 2]  # a server per rank
    r1, r2 = rollouts(hot.run_dir), rollouts(two.run_dir)
    assert [r["response_ids"] for r in r1[1]] == [r["response_ids"] for r in r2[1]]
    h1, h2 = read_history(hot.run_dir), read_history(two.run_dir)
    # the gradient norm sums the two shards' gradients in another order: 1.4e-4 apart on an Intel Xeon (AVX-512)
    # with the family built there, under 1e-4 on an AMD EPYC; a wrong normalisation by world size would be 2x off
    tol = {"verl/actor/grad_norm": 1e-3}
    for key in ("verl/actor/pg_loss", "verl/actor/grad_norm", "train/reward_mean", "verl/critic/advantages/mean"):
        assert h2[key][1] == pytest.approx(h1[key][1], rel=tol.get(key, 1e-4), abs=1e-6), key


def test_a_killed_verl_run_resumes_to_the_uninterrupted_history(all_sources, tmp_path):
    """SIGKILL of the whole process tree (driver, Ray, verl's workers) at a random point after the step-2
    checkpoint; the same command again resumes from verl's checkpoint into the same run dir, MLflow run and
    W&B id, and every value computed from the restored state equals the uninterrupted run's."""
    import mlflow

    overrides = [o for o in (*BASE, *ALL_SOURCES) if not o.startswith("logger=")]
    cmd = [sys.executable, str(ROOT / "experiments" / "train.py"), *overrides, "logger=default",
           f"paths.root_dir={tmp_path}", f"paths.cache_dir={CACHE}",
           f"logger.mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db"]
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}  # this process's W&B service is not the run's
    env.update(WANDB_MODE="offline", PYTHONUNBUFFERED="1")
    run_dir = tmp_path / "runs" / all_sources["res"].run_id
    tracker = run_dir / "verl_checkpoints" / "latest_checkpointed_iteration.txt"
    delay = random.Random().uniform(0.0, 2.0)
    with open(tmp_path / "first.log", "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 600  # a guard against a hang: beside another test process it took 250-400 s
        while not (tracker.exists() and tracker.read_text().strip() == "2"):
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.time() < deadline, "no step-2 checkpoint"
            time.sleep(0.05)
        time.sleep(delay)
        kill_tree(proc.pid)
    assert Manifest(run_dir).data["status"] == "running"  # killed hard: nothing could mark it
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    m = Manifest(run_dir).data
    assert m["status"] == "finished" and m["restarts"] == 1, f"killed {delay:.2f}s after the checkpoint"
    hist, want = read_history(run_dir), read_history(all_sources["res"].run_dir)
    for key in COMPUTED:
        assert hist[key] == pytest.approx(want[key], rel=1e-6, abs=1e-9), (key, delay)
    assert set(hist["verl/training/global_step"]) == set(range(1, STEPS + 1))
    client = mlflow.tracking.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    points = client.get_metric_history(m["tracking"]["mlflow"]["run_id"], "train/pg_loss")
    assert sorted(p.step for p in points) == list(range(1, STEPS + 1))  # each step once, in one MLflow run
    # offline-run-<time>-<id>, one per start that got as far as wandb.init (on a loaded 2-core machine the killed
    # start may not have): every one carries the run's id, and the journal replays what a start did not send
    wandb_dirs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(wandb_dirs) >= 1 and {p.name.split("-", 3)[3] for p in wandb_dirs} == {all_sources["res"].run_id}


def test_tables_1_and_2_fill_from_verl_trained_runs(all_sources, hot, tmp_path, tiny_family):
    """The paper's evaluation path on two verl-trained toy runs: verl's model merger turns each run's last FSDP
    checkpoint into a Hugging Face folder, ``experiments/evaluate.py eval.run_dir=…`` evaluates it with the
    released prompts and scorer on AIME-, AIME 25- and CSQA-layout files (toy problems, prepared by
    prepare_data) into ``kind: eval`` runs linked to the trained run, and Table 1 and Table 2 regenerate
    from those runs."""
    import shutil

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from transformers import AutoModelForCausalLM

    from s2lpo.analysis.regenerate import regenerate
    from s2lpo.data.prepare import prepare
    from s2lpo.eval.driver import evaluate_model
    from s2lpo.eval.trained import latest_verl_checkpoint
    from s2lpo_testing import CACHE, CONF

    probs = tiny_family.splits().eval[:4]
    src = tmp_path / "src"
    src.mkdir()
    layouts = {
        "aime24": [{"ID": i, "Problem": p.prompt, "Answer": p.answer} for i, p in enumerate(probs)],
        "aime25": [{"problem": p.prompt, "answer": str(p.answer)} for p in probs],
        "csqa": [{"id": str(i), "question": p.prompt, "answerKey": "C",
                  "choices": {"label": list("ABCDE"), "text": [str(int(p.answer) + d) for d in (-2, -1, 0, 1, 2)]}}
                 for i, p in enumerate(probs)]}
    files = []
    for name, rows in layouts.items():
        (src / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        files.append(str(prepare(name, src / f"{name}.jsonl", tmp_path / "data")[0]))
    trained = {"s2lpo": all_sources["res"].run_dir, "g2rpo_a": hot.run_dir}
    for run_dir in trained.values():
        GlobalHydra.instance().clear()
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
            cfg = compose("evaluate", overrides=[f"paths.root_dir={tmp_path}", f"paths.cache_dir={CACHE}", *QUICK,
                                                 f"eval.run_dir={run_dir}", f"eval.benchmarks=[{','.join(files)}]",
                                                 "eval.n=2", "eval.max_new_tokens=16", "trainer.device=cpu"])
        out = evaluate_model(cfg, log=lambda *_: None)
        assert {"eval/aime24/pass@1", "eval/aime25/pass@1", "eval/csqa/pass@1"} <= set(out)
        # verl's merger wrote the last checkpoint's weights (in its bf16) beside it
        actor = latest_verl_checkpoint(run_dir) / "actor"
        merged = AutoModelForCausalLM.from_pretrained(actor / "merged_hf", dtype=torch.float32).state_dict()
        hf = AutoModelForCausalLM.from_pretrained(actor / "huggingface", dtype=torch.float32).state_dict()
        assert all(torch.equal(merged[k], hf[k].to(torch.bfloat16).float()) for k in hf)
    evals = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("eval-*/manifest.json")]
    assert sorted(m["evaluated_run"] for m in evals) == sorted(Manifest(d).data["run_id"] for d in trained.values())
    for m in evals:  # the eval run carries its trained run's method, explorer, learner and seed
        assert m["config"]["kind"] == "eval" and m["config"]["eval"]["scorer"] == "released"
    specs = tmp_path / "specs"
    specs.mkdir()
    for name in ("table1_math", "table2_csqa"):
        shutil.copy(ROOT / "analysis" / "specs" / "paper" / f"{name}.yaml", specs)
    regenerate([f"journal:{tmp_path / 'runs'}"], specs, tmp_path / "out", tmp_path / "cache", warn=lambda *_: None)
    for name, cols in (("table1_math", ["AIME 24", "AIME 25"]), ("table2_csqa", ["CommonsenseQA"])):
        csv = (tmp_path / "out" / f"{name}.csv").read_text().splitlines()
        assert csv[0] == "learner,method,explorer,column,mean,ci_low,ci_high,n,delta,reference"
        cells = {(r[0], r[1], r[2], r[3]): r[4] for r in (line.split(",") for line in csv[1:])}
        assert set(cells) == {("toy-l", m, x, c) for m, x in (("s2lpo", "toy-s"), ("g2rpo_a", "none")) for c in cols}
        assert all(v != "" for v in cells.values()), csv  # every cell has its eval run's value
        assert "eval.scorer=released" in (tmp_path / "out" / f"{name}.md").read_text()  # the caption names it
