"""verl's config as verl sees it: ``trainer.verl`` re-rooted.

verl's flattened config interpolates absolute paths (``${actor_rollout_ref.actor.strategy}``), which only
resolve when its tree is the root; composed under ``trainer.verl`` it must be lifted out before it is
resolved or handed to verl. (Nothing inside it may interpolate our own keys.)
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from s2lpo.verl_ext.routing import LEARNER_AGENT


def verl_config(cfg: DictConfig) -> DictConfig:
    return OmegaConf.create(OmegaConf.to_container(cfg.trainer.verl, resolve=False))


def run_container(cfg: DictConfig) -> dict:
    """The resolved run config as a dict, with ``trainer.verl`` resolved as its own root."""
    if "verl" not in cfg.trainer:
        return OmegaConf.to_container(cfg, resolve=True)
    verl = OmegaConf.to_container(verl_config(cfg), resolve=True)
    rest = OmegaConf.to_container(cfg, resolve=False)
    rest["trainer"].pop("verl")
    out = OmegaConf.to_container(OmegaConf.create(rest), resolve=True)
    out["trainer"]["verl"] = verl
    return out


AGENT_LOOPS = Path(__file__).with_name("agent_loops.yaml")


def mini_batch_size(cfg: DictConfig) -> int:
    """Prompts per optimizer step: ``trainer.mini_batch_size``, else ``prompts_per_step / mini_batches``."""
    t = cfg.trainer
    if t.get("mini_batch_size") is not None:
        return int(t.mini_batch_size)
    return int(cfg.data.prompts_per_step) // int(t.mini_batches)


def explorer_sampling(cfg: DictConfig) -> dict:
    """The explorer's own offline sampling (``explorer.sampling``), as the cache keys it."""
    from s2lpo.rollout.explorer_cache import explorer_sampling as params

    return params(cfg)[0].as_dict()


def on_cpu(cfg: DictConfig) -> bool:
    """``trainer=verl trainer.device=cpu``: verl's trainer on the CPU platform of ``s2lpo.verl_ext.cpu``."""
    return str(cfg.trainer.device) == "cpu"


def cpu_world_size(cfg: DictConfig) -> int:
    """Ranks of a CPU run: ``learner.resources.gpus_per_node`` fake GPUs (at least one)."""
    return max(1, int(cfg.learner.resources.gpus_per_node or 0))


def cpu_values(world: int) -> dict:
    """verl settings for the CPU platform: the stand-in rollout in vLLM's place (one rank per replica,
    weights pushed in-process: checkpoint backend ``naive``), FSDP2 (FSDP1's ``sync_module_states`` needs GPU
    parameters), fp32 compute, plain SDPA attention with padding kept (flash-attn and remove-padding need
    CUDA kernels), no torch.compile, no gradient checkpointing, and as few extra processes as the run needs
    (agent-loop workers one per rank, one reward worker, no dataloader workers)."""
    from s2lpo.verl_ext.cpu import ROLLOUT

    values: dict = {
        "trainer.device": "cpu",
        "trainer.nnodes": 1,
        "trainer.n_gpus_per_node": world,
        "actor_rollout_ref.rollout.name": ROLLOUT,
        "actor_rollout_ref.rollout.tensor_model_parallel_size": 1,
        "actor_rollout_ref.rollout.data_parallel_size": 1,
        "actor_rollout_ref.rollout.pipeline_model_parallel_size": 1,
        "actor_rollout_ref.rollout.checkpoint_engine.backend": "naive",
        "actor_rollout_ref.rollout.agent.num_workers": world,
        "actor_rollout_ref.model.use_remove_padding": False,
        "actor_rollout_ref.model.enable_gradient_checkpointing": False,
        "actor_rollout_ref.model.override_config.attn_implementation": "sdpa",
        "reward.num_workers": 1,
        "data.dataloader_num_workers": 0,
    }
    for role in ("actor", "ref"):
        values.update({f"actor_rollout_ref.{role}.strategy": "fsdp2",
                       f"actor_rollout_ref.{role}.use_torch_compile": False,
                       f"actor_rollout_ref.{role}.fsdp_config.use_torch_compile": False,
                       f"actor_rollout_ref.{role}.fsdp_config.dtype": "float32",
                       # offloading to the CPU pins memory, which needs an accelerator (and gains nothing here)
                       f"actor_rollout_ref.{role}.fsdp_config.param_offload": False,
                       f"actor_rollout_ref.{role}.fsdp_config.optimizer_offload": False,
                       f"actor_rollout_ref.{role}.fsdp_config.offload_policy": False})
    return values


def to_verl(cfg: DictConfig, run_dir: Path, rid: str, explorer_digest: str | None = None,
            learner_params: int = 0, explorer_params: int = 0) -> DictConfig:
    """Our run config as verl's: GRPO with the group as ``rollout.n``, the same clip/loss/KL settings,
    sampling, files, steps, a checkpoint directory of this run's own (verl's ``resume_mode=auto`` would
    otherwise pick up another run's), our agent loops and reward, and the ``s2lpo`` block the manager and
    the agent loops read.

    Temperature: verl's ``rollout.temperature`` divides the logits both when sampling and in the actor's
    loss (``tempered``); ``sample_only`` trains at 1.0 and samples at ``algorithm.temperature`` in the
    ``s2lpo_learner`` loop."""
    a, t, d, lg = cfg.algorithm, cfg.trainer, cfg.data, cfg.logger
    sample_only = a.temperature_mode == "sample_only"
    if a.offpolicy_correction == "shaping":
        raise ValueError("algorithm.offpolicy_correction=shaping has no verl counterpart; use none or truncated_is")
    v = verl_config(cfg)
    values = {
        "algorithm.adv_estimator": "grpo",
        "algorithm.norm_adv_by_std_in_grpo": bool(a.norm_adv_by_std),
        "algorithm.use_kl_in_reward": False,
        # the paper: no rollout IS, old log-probs recomputed by the learner for every row
        "algorithm.rollout_correction.bypass_mode": False,
        "algorithm.rollout_correction.rollout_is": "token" if a.offpolicy_correction == "truncated_is" else None,
        "algorithm.rollout_correction.rollout_is_threshold": float(a.is_cap),
        "actor_rollout_ref.rollout.n": int(a.group_size),
        "actor_rollout_ref.rollout.temperature": 1.0 if sample_only else float(a.temperature),
        "actor_rollout_ref.rollout.agent.agent_loop_config_path": str(AGENT_LOOPS),
        "actor_rollout_ref.rollout.top_p": float(a.top_p),
        "actor_rollout_ref.rollout.top_k": int(a.top_k) or -1,
        # one sample count for every validation (verl has one): the final pass@k curve's, as the local backend's last
        "actor_rollout_ref.rollout.val_kwargs.n": max(int(t.eval_samples), int(t.final_eval_samples)),
        "actor_rollout_ref.rollout.val_kwargs.temperature": float(t.eval_temperature),
        "actor_rollout_ref.rollout.val_kwargs.do_sample": True,
        "actor_rollout_ref.actor.clip_ratio": float(a.clip_ratio),
        "actor_rollout_ref.actor.clip_ratio_low": float(a.clip_ratio),
        "actor_rollout_ref.actor.clip_ratio_high": float(a.clip_ratio),
        "actor_rollout_ref.actor.loss_agg_mode": str(a.loss_agg_mode),
        "actor_rollout_ref.actor.use_kl_loss": float(a.kl_coef) > 0,
        "actor_rollout_ref.actor.kl_loss_coef": float(a.kl_coef),
        "actor_rollout_ref.actor.kl_loss_type": str(a.kl_type),
        "actor_rollout_ref.actor.optim.lr": float(t.lr),
        "actor_rollout_ref.actor.optim.weight_decay": float(t.weight_decay),
        "actor_rollout_ref.actor.optim.lr_warmup_steps": int(t.warmup_steps),
        "actor_rollout_ref.actor.grad_clip": float(t.grad_clip),
        "actor_rollout_ref.actor.ppo_epochs": int(t.ppo_epochs),
        "actor_rollout_ref.actor.ppo_mini_batch_size": mini_batch_size(cfg),
        "actor_rollout_ref.actor.entropy_coeff": float(a.get("entropy_coef", 0.0)),
        # truncated IS needs the sampler's own log-probs of every row (explorer rows: the cached ones)
        "actor_rollout_ref.rollout.calculate_log_probs": a.offpolicy_correction == "truncated_is",
        "actor_rollout_ref.model.path": str(cfg.learner.path),
        "data.train_files": str(d.train_file),
        "data.val_files": [str(f) for f in d.get("eval_files") or []],
        "data.train_batch_size": int(d.prompts_per_step),
        "data.max_response_length": int(d.max_new_tokens),
        "data.val_batch_size": None,  # one validation batch: pass@k is computed over the whole eval set
        "data.seed": int(cfg.seed),
        "trainer.total_training_steps": int(t.total_steps),
        "trainer.nnodes": int(cfg.learner.resources.get("nodes") or 1),
        "trainer.n_gpus_per_node": int(cfg.learner.resources.gpus_per_node),
        "trainer.save_freq": int(t.checkpoint_every),
        "trainer.test_freq": int(t.eval_every),
        "trainer.default_local_dir": str(Path(run_dir) / "verl_checkpoints"),
        "trainer.project_name": str(lg.project),
        "trainer.experiment_name": rid,
        "trainer.logger": ["console", "file"],  # the file is merged into our journal (s2lpo.verl_ext.follow)
        "reward.custom_reward_function.path": str(Path(__file__).with_name("reward.py")),
        "reward.custom_reward_function.name": "compute_score",
        "reward.custom_reward_function.reward_kwargs": {"train_reward": str(d.reward)},
    }
    if on_cpu(cfg):
        values.update(cpu_values(cpu_world_size(cfg)))
    if d.get("max_prompt_length") is not None:  # verl pads every row to prompt + response length
        values["data.max_prompt_length"] = int(d.max_prompt_length)
    micro = t.get("micro_batch_size_per_gpu")
    if micro is not None:  # fixed micro-batches (the paper's): no packing by tokens
        values.update({"actor_rollout_ref.actor.use_dynamic_bsz": False,
                       "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": int(micro),
                       "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu": int(micro),
                       "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu": int(micro)})
    for key, value in values.items():
        OmegaConf.update(v, key, value, force_add=True)
    explorer_on = int(a.t_mix) > 0
    gd = a.guidance
    OmegaConf.update(v, "s2lpo", {
        "run_dir": str(run_dir), "total_steps": int(t.total_steps),
        "t_mix": int(a.t_mix), "schedule": str(a.schedule), "group_size": int(a.group_size),
        "explorer": str(cfg.explorer.name) if explorer_on else None,
        "explorer_cache_dir": str(Path(cfg.paths.explorer_cache_dir).expanduser().resolve()), "explorer_digest": explorer_digest,
        "explorer_sampling": explorer_sampling(cfg) if explorer_on else None,
        "explorer_samples": int(cfg.explorer.sampling.samples_per_prompt) if explorer_on else 0,
        "learner_params": int(learner_params), "explorer_params": int(explorer_params),
        "learner_agent": LEARNER_AGENT if sample_only else None,
        "sample_temperature": float(a.temperature),
        "guidance": {"enabled": bool(gd.enabled), "kind": str(gd.kind), "k": int(gd.k),
                     "initial_length": None if gd.initial_length is None else int(gd.initial_length),
                     "max_length": int(gd.max_length), "period": int(gd.period),
                     "mask_guidance": bool(gd.mask_guidance)},
        "mask_guidance": bool(gd.mask_guidance),
        "seed": int(cfg.seed),
        # per-row sampling seeds (vLLM's per-request ``seed``): a resumed CPU run reproduces its rollouts
        "row_seeds": on_cpu(cfg),
        "record_rollouts": bool(t.get("record_rollouts", False)),
    }, force_add=True)
    return v
