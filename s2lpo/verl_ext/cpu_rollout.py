"""verl's rollout side of a run on CPU, for tests and benchmarks: our mapping, verl's reward-loop workers and our
agent-loop manager around a stand-in generation server (vLLM's place, which needs a GPU)."""

from __future__ import annotations

from s2lpo.verl_ext.standin_server import StandInClient, start_server


def cpu_rollout(cfg, run_dir, server_model: str, num_workers: int = 4, prompt_length: int = 64,
                response_length: int = 24, val_n: int = 4, learner_params: int = 0, explorer_params: int = 0):
    """verl's rollout side of a run, on CPU: our config mapped onto verl's, verl's reward-loop workers and
    ``AgentLoopManager`` machinery (our subclass) around an ``HFGenerationServer`` of ``server_model``.
    Ray must be initialised. Returns (verl config, manager, server actor)."""
    from omegaconf import OmegaConf, open_dict
    from verl.experimental.reward_loop.reward_loop import RewardLoopManager

    from s2lpo.config.paths import abspath
    from s2lpo.models.family import weights_digest
    from s2lpo.verl_ext.config import to_verl
    from s2lpo.verl_ext.manager import S2LPOAgentLoopManager

    digest = weights_digest(abspath(cfg.explorer.path)) if cfg.algorithm.t_mix > 0 else None
    v = to_verl(cfg, run_dir, "cpu-rollout", digest, learner_params, explorer_params)
    with open_dict(v):
        r = v.actor_rollout_ref.rollout
        r.agent.num_workers = num_workers
        r.prompt_length, r.response_length, r.val_kwargs.n = prompt_length, response_length, val_n
        v.reward.num_workers = 1
    OmegaConf.resolve(v)
    server = start_server(server_model, response_length)
    rm = RewardLoopManager(v)
    mgr = S2LPOAgentLoopManager.create(config=v, llm_client=StandInClient(v, server),
                                       reward_loop_worker_handles=rm.reward_loop_worker_handles)
    return v, mgr, server
