"""The paper's grid as published: every row of conf/experiment/paper carries the paper's settings *as verl
reads them* (the mapped config, checked by verl's own validate_config), and the sweep plans 27 runs."""

import json

import pytest
from omegaconf import OmegaConf, open_dict

from s2lpo.config.validate import ConfigError
from s2lpo_testing import ROOT, make_cfg

ROWS = sorted(p.name[:-5] for p in (ROOT / "conf/experiment/paper").glob("qwen3_*.yaml"))
# the published values per learner: G, T_mix, PPO mini-batch (prompts), micro-batch per GPU
LEARNER = {"qwen3_8b": (16, 8, 32, 4), "qwen3_14b": (8, 4, 16, 2)}
METHOD = {"grpo": ("grpo", 1.0, False), "token_temp": ("token_temp", 1.3, False), "g2rpo_a": ("g2rpo_a", 1.0, True),
          "s2lpo": ("s2lpo", 1.0, False)}


def mapped(tmp_path, row: str, *extra: str):
    from s2lpo.verl_ext.config import to_verl
    from s2lpo.verl_ext.runner import check_with_verl

    cfg = make_cfg(tmp_path, f"experiment=paper/{row}", *extra)
    v = to_verl(cfg, tmp_path / "runs" / "x", "x", "digest", 8_200_000_000, 1_700_000_000)
    check_with_verl(v)  # verl's own validate_config, as its main_ppo runs it
    return cfg, OmegaConf.to_container(v, resolve=True)


def test_the_grid_is_the_papers_nine_rows():
    assert ROWS == ["qwen3_14b_g2rpo_a", "qwen3_14b_grpo", "qwen3_14b_s2lpo_qwen3_4b", "qwen3_14b_token_temp",
                    "qwen3_8b_g2rpo_a", "qwen3_8b_grpo", "qwen3_8b_s2lpo_qwen3_1_7b", "qwen3_8b_s2lpo_qwen3_4b",
                    "qwen3_8b_token_temp"]  # 8B x {1.7B, 4B} and 14B x {4B} only


@pytest.mark.parametrize("row", ROWS)
def test_every_paper_row_reaches_verl_with_the_published_values(tmp_path, row):
    learner = "qwen3_14b" if row.startswith("qwen3_14b") else "qwen3_8b"
    method = row.removeprefix(learner + "_").split("_qwen3")[0]
    G, t_mix, mini, micro = LEARNER[learner]
    name, temperature, guided = METHOD[method]
    cfg, v = mapped(tmp_path, row)
    a, ref, ro = v["actor_rollout_ref"]["actor"], v["actor_rollout_ref"]["ref"], v["actor_rollout_ref"]["rollout"]
    assert cfg.algorithm.name == name and cfg.learner.size == learner
    assert v["actor_rollout_ref"]["model"]["path"].endswith({"qwen3_8b": "Qwen3-8B-Base", "qwen3_14b": "Qwen3-14B-Base"}[learner])
    # data: DAPO-Math-17k, 1024 prompts per step for 16 steps, prompts <= 512 tokens, responses <= 4096
    assert v["data"]["train_files"].endswith("dapo_math/train.parquet") and v["data"]["train_batch_size"] == 1024
    assert v["data"]["max_prompt_length"] == 512 and v["data"]["max_response_length"] == 4096
    assert v["trainer"]["total_training_steps"] == 16
    # GRPO: the group, mini/micro batches, KL loss 0.001 low_var_kl, no entropy bonus, token-mean, clip 0.2
    assert v["algorithm"]["adv_estimator"] == "grpo" and ro["n"] == G
    assert a["ppo_mini_batch_size"] == mini and a["ppo_micro_batch_size_per_gpu"] == micro and not a["use_dynamic_bsz"]
    assert ref["log_prob_micro_batch_size_per_gpu"] == micro == ro["log_prob_micro_batch_size_per_gpu"]
    assert a["use_kl_loss"] and a["kl_loss_coef"] == 0.001 and a["kl_loss_type"] == "low_var_kl"
    assert a["entropy_coeff"] == 0 and a["loss_agg_mode"] == "token-mean"
    assert a["clip_ratio"] == a["clip_ratio_low"] == a["clip_ratio_high"] == 0.2
    assert a["optim"]["lr"] == 1e-6 and a["optim"]["weight_decay"] == 0.01 and a["ppo_epochs"] == 1
    assert not v["algorithm"]["use_kl_in_reward"] and v["algorithm"]["rollout_correction"]["rollout_is"] is None
    assert ro["temperature"] == temperature and ro["top_p"] == 1.0 and not ro["calculate_log_probs"]
    # rewards: verl's DAPO scorer for the training rows (data_source math_dapo)
    assert v["reward"]["custom_reward_function"]["reward_kwargs"] == {"train_reward": "dapo"}
    s2 = v["s2lpo"]
    assert s2["group_size"] == G and s2["guidance"]["enabled"] == guided
    if guided:  # G²RPO-A: k guided rows per group, the released trainer's 3072-token maximum guidance
        assert s2["guidance"]["k"] == 2 and s2["guidance"]["max_length"] == 3072 and s2["guidance"]["kind"] == "adaptive"
    if name == "s2lpo":  # the explorer: its own offline sampling, 32 samples per prompt, annealed over T_mix
        assert s2["t_mix"] == t_mix and s2["explorer"] == {"qwen3_1_7b": "Qwen3-1.7B-Base",
                                                           "qwen3_4b": "Qwen3-4B-Base"}[row.split("_s2lpo_")[1]]
        assert s2["explorer_sampling"] == {"temperature": 0.7, "top_p": 0.95, "top_k": 0, "max_new_tokens": 4096}
        assert s2["explorer_samples"] == 32
    else:
        assert s2["t_mix"] == 0 and s2["explorer"] is None
    assert v["trainer"]["n_gpus_per_node"] == 8


def test_truncated_is_records_log_probs_and_turns_on_verls_token_is(tmp_path):
    """verl computes the IS weights from the rollout's own log-probs: without them the correction is a no-op."""
    _, v = mapped(tmp_path, "qwen3_8b_s2lpo_qwen3_1_7b", "algorithm.offpolicy_correction=truncated_is",
                  "algorithm.is_cap=2.0")
    assert v["actor_rollout_ref"]["rollout"]["calculate_log_probs"]
    rc = v["algorithm"]["rollout_correction"]
    assert rc["rollout_is"] == "token" and rc["rollout_is_threshold"] == 2.0 and not rc["bypass_mode"]


def test_verl_rejects_a_mapping_without_micro_batches(tmp_path):
    from s2lpo.verl_ext.config import to_verl
    from s2lpo.verl_ext.runner import check_with_verl

    v = to_verl(make_cfg(tmp_path, "experiment=paper/qwen3_8b_grpo", "trainer.micro_batch_size_per_gpu=null"),
                tmp_path / "r", "x")
    check_with_verl(v)  # packed by tokens
    with open_dict(v):
        v.actor_rollout_ref.actor.use_dynamic_bsz = False
    with pytest.raises(ConfigError, match="verl rejects the mapped config: .*micro_batch_size"):
        check_with_verl(v)


def test_the_dry_run_plans_27_runs_as_json_lines(tmp_path, capsys):
    """``s2lpo sweep submit --dry-run --json``: stdout holds one JSON object per run and nothing else; missing
    models and data are warnings in the plan; the same submit without --dry-run refuses them."""
    from s2lpo.cli import main

    assert main(["sweep", "submit", str(ROOT / "sweeps/paper.yaml"), "--dry-run", "--json", "--root",
                 str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    runs = [json.loads(line) for line in out.splitlines()]
    assert len(runs) == 27 and len({r["run_id"] for r in runs}) == 27
    for r in runs:
        c, v = r["config"], r["verl"]
        assert c["trainer"]["backend"] == "verl" and r["overrides"][1].startswith("experiment=paper/")
        assert v["actor_rollout_ref"]["rollout"]["n"] == c["algorithm"]["group_size"]
        assert v["trainer"]["experiment_name"] == r["run_id"]
        assert any("does not exist" in w for w in r["warnings"]) and r["cost"]["gpu_hours"] > 0
    by = {(r["config"]["learner"]["size"], r["config"]["algorithm"]["name"], r["config"]["explorer"]["name"])
          for r in runs}
    assert len(by) == 9
    s2 = [r for r in runs if r["config"]["algorithm"]["name"] == "s2lpo"]
    assert len(s2) == 9 and len({r["explorer_cache"] for r in s2}) == 2  # one cache job per explorer
    # cost: 8B GRPO, 16 steps x 1024 prompts x G 16 responses of <= 4096 tokens
    grpo8 = next(r for r in runs if r["config"]["learner"]["size"] == "qwen3_8b" and r["config"]["algorithm"]["name"] == "grpo")
    assert grpo8["cost"]["learner_rollout_tokens"] == 16 * 1024 * 16 * 4096
    assert grpo8["cost"]["train_tokens"] == 16 * 1024 * 16 * (512 + 4096)
    # without --dry-run the missing files are errors, before anything is queued (one row is enough to show it)
    (tmp_path / "one.yaml").write_text(json.dumps({"name": "one", "axes": {"experiment": ["paper/qwen3_8b_grpo"]}}))
    assert main(["sweep", "submit", str(tmp_path / "one.yaml"), "--root", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert "nothing submitted" in out + err and "learner.path=" in out + err
    assert not (tmp_path / "sweeps" / "one" / "sweep.json").exists()
    # the readable dry run writes nothing and says so
    assert main(["sweep", "submit", str(tmp_path / "one.yaml"), "--dry-run", "--root", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "would submit 1 run(s)" in out + err and "nothing was written" in out + err
    assert not (tmp_path / "sweeps").exists()
    # a sweep never submitted: exit 2 with the known ones
    assert main(["sweep", "status", "nope", "--root", str(tmp_path)]) == 2
    assert f"no sweep named 'nope' was submitted under {tmp_path / 'sweeps'}; none was" in " ".join(
        capsys.readouterr().out.split())
