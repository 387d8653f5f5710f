"""Routing of verl rollout rows between the explorer agent loop and the default one."""

import pytest

from s2lpo.algo.schedule import split_group
from s2lpo.verl_ext.routing import EXPLORER_AGENT, route


@pytest.mark.parametrize("step", [1, 2, 5, 10, 11, 40])
def test_each_group_starts_with_the_schedules_explorer_rows(step):
    G, groups = 8, 3
    r = route(step, G * groups, G, 10, "linear", "single_turn_agent")
    n_explorer = split_group(step, G, 10, "linear")[0]
    for g in range(groups):
        rows = range(g * G, (g + 1) * G)
        assert [r.agent[i] for i in rows] == [EXPLORER_AGENT] * n_explorer + ["single_turn_agent"] * (G - n_explorer)
        assert [r.slot[i] for i in rows] == list(range(G))
    assert r.source.count("explorer") == groups * n_explorer


def test_exact_counts_and_validation():
    assert route(1, 8, 8, 10, "linear", "a").source.count("explorer") == 8  # alpha_1 = 1
    assert route(6, 8, 8, 11, "linear", "a").source.count("explorer") == 4  # ceil(0.5 * 8)
    assert route(11, 8, 8, 11, "linear", "a").source.count("explorer") == 0  # alpha_T = 0
    assert route(1, 8, 8, 10, "linear", "a", validate=True).agent == ["a"] * 8
    assert route(3, 8, 8, 0, "linear", "a").agent == ["a"] * 8  # t_mix = 0: plain GRPO
    with pytest.raises(ValueError, match="not whole groups"):
        route(1, 10, 8, 10, "linear", "a")


def test_trainer_verl_composes_verls_own_config(tmp_path):
    import importlib

    from s2lpo.config.validate import ConfigError
    from s2lpo.trainer.dispatch import train
    from s2lpo_testing import QUICK, make_cfg

    cfg = make_cfg(tmp_path, *QUICK, "trainer=verl")
    v = cfg.trainer.verl
    assert cfg.trainer.backend == "verl" and v.trainer.use_v1 is False and v.actor_rollout_ref.rollout.name == "vllm"
    assert {"actor_rollout_ref", "data", "algorithm", "trainer", "ray_kwargs"} <= set(v)
    module, _, cls = v.actor_rollout_ref.rollout.agent.agent_loop_manager_class.rpartition(".")
    assert getattr(importlib.import_module(module), cls).__name__ == "S2LPOAgentLoopManager"
    assert cfg.algorithm.name == "s2lpo" and cfg.data.name == "toy"  # our groups are untouched by verl's
    from s2lpo.verl_ext.config import run_container

    c = run_container(cfg)  # verl's absolute interpolations resolve with its tree as the root
    assert c["trainer"]["verl"]["actor_rollout_ref"]["ref"]["strategy"] == c["trainer"]["verl"]["actor_rollout_ref"][
        "actor"]["strategy"]
    assert c["paths"]["root_dir"] == str(tmp_path) and c["trainer"]["backend"] == "verl"
    with pytest.raises(ConfigError, match="must be divisible by trainer.mini_batches"):  # checked before Ray starts
        train(cfg, log=lambda *_: None)


def test_our_run_config_maps_onto_verls(tmp_path):
    from s2lpo.verl_ext.config import to_verl
    from s2lpo.verl_ext.reward import compute_score
    from s2lpo_testing import QUICK, make_cfg

    cfg = make_cfg(tmp_path, *QUICK, "trainer=verl", "algorithm.kl_coef=0.01", "trainer.mini_batches=2",
                   "algorithm.offpolicy_correction=truncated_is", "algorithm.top_k=20")
    v = to_verl(cfg, tmp_path / "runs" / "rid", "rid", explorer_digest="abc")
    r, act = v.actor_rollout_ref.rollout, v.actor_rollout_ref.actor
    assert v.algorithm.adv_estimator == "grpo" and r.n == 4 and r.top_k == 20 and r.temperature == 1.0
    assert (act.clip_ratio_low, act.clip_ratio_high, act.loss_agg_mode) == (0.2, 0.2, "token-mean")
    assert act.use_kl_loss is True and act.kl_loss_coef == 0.01 and act.ppo_mini_batch_size == 1
    assert v.algorithm.rollout_correction.rollout_is == "token" and v.algorithm.rollout_correction.bypass_mode is False
    assert v.trainer.default_local_dir == str(tmp_path / "runs" / "rid" / "verl_checkpoints")
    assert (v.trainer.total_training_steps, v.trainer.save_freq, v.trainer.test_freq) == (4, 2, 2)
    assert v.s2lpo.t_mix == 3 and v.s2lpo.explorer == "toy-s" and v.s2lpo.explorer_digest == "abc"
    assert compute_score("math500", r"so \boxed{\frac12}", "0.5") == 1.0 and compute_score("csqa", "Answer: B", "C") == 0
    v = to_verl(make_cfg(tmp_path, *QUICK, "trainer=verl", "algorithm.temperature_mode=sample_only",
                         "algorithm.temperature=1.2"), tmp_path, "r")
    assert v.actor_rollout_ref.rollout.temperature == 1.0  # the loss's temperature; sampling is the loop's
    assert v.s2lpo.learner_agent == "s2lpo_learner" and v.s2lpo.sample_temperature == 1.2
    assert v.actor_rollout_ref.rollout.agent.agent_loop_config_path.endswith("agent_loops.yaml")
    assert v.reward.custom_reward_function.name == "compute_score" and v.trainer.logger == ["console", "file"]
