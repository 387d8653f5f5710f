"""One checker per config group: each returns every problem of its group (one line naming the field, its value
and the fix); :func:`s2lpo.config.validate.validate` runs them all and raises them together."""

from __future__ import annotations

from omegaconf import DictConfig

from s2lpo.algo.correction import CORRECTIONS
from s2lpo.algo.schedule import SCHEDULES
from s2lpo.config.domains import _int, _num
from s2lpo.config.identity import check_identity
from s2lpo.rewards.registry import REWARDS

ALGORITHMS = ("grpo", "s2lpo", "token_temp", "g2rpo_a")
TEMPERATURE_MODES = ("tempered", "sample_only")
LOSS_AGG_MODES = ("token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")
FAMILIES = ("toy", "qwen3")
VERL_VERSION = "0.9.1"  # the verl release whose extension points s2lpo.verl_ext uses (pinned in pyproject.toml)


def check_algorithm(cfg: DictConfig, this_machine: bool = True) -> list[str]:
    errs: list[str] = []
    a, t = cfg.algorithm, cfg.trainer
    if a.name not in ALGORITHMS:
        errs.append(f"algorithm.name={a.name!r} is unknown; choose one of {', '.join(ALGORITHMS)}")
    G = a.group_size
    if not isinstance(G, int) or G < 2:
        errs.append(f"algorithm.group_size={G!r} must be an integer >= 2 (advantages are relative to the group)")
    if a.schedule not in SCHEDULES:
        errs.append(f"algorithm.schedule={a.schedule!r} is unknown; choose one of {', '.join(SCHEDULES)}")
    if not isinstance(a.t_mix, int) or a.t_mix < 0:
        errs.append(f"algorithm.t_mix={a.t_mix!r} must be an integer >= 0 (0 = no explorer)")
    elif a.t_mix == 1 and a.schedule in ("linear", "cosine"):
        errs.append("algorithm.t_mix=1 divides by T_mix-1 = 0 in alpha_i = 1-(i-1)/(T_mix-1); "
                    "use t_mix=0 (plain GRPO) or t_mix>=2")
    elif isinstance(t.total_steps, int) and a.t_mix > t.total_steps:
        errs.append(f"algorithm.t_mix={a.t_mix} exceeds trainer.total_steps={t.total_steps}: the annealing "
                    "would never finish; lower t_mix or raise total_steps")
    if a.name == "s2lpo" and a.t_mix == 0:
        errs.append("algorithm=s2lpo with algorithm.t_mix=0 is plain GRPO; set t_mix>=2 or use algorithm=grpo")
    if not _num(a.temperature) or a.temperature <= 0:
        errs.append(f"algorithm.temperature={a.temperature!r} must be a number > 0")
    if a.temperature_mode not in TEMPERATURE_MODES:
        errs.append(f"algorithm.temperature_mode={a.temperature_mode!r} is unknown; use tempered or sample_only")
    if not _num(a.top_p) or not 0 < a.top_p <= 1:
        errs.append(f"algorithm.top_p={a.top_p!r} must be in (0, 1]")
    if not isinstance(a.top_k, int) or a.top_k < 0:
        errs.append(f"algorithm.top_k={a.top_k!r} must be an integer >= 0 (0 = off)")
    gd = a.guidance
    if gd.enabled:
        if gd.kind not in ("adaptive", "linear_decay"):
            errs.append(f"algorithm.guidance.kind={gd.kind!r} is unknown; use adaptive or linear_decay")
        if isinstance(G, int) and not 0 < gd.k <= G:
            errs.append(f"algorithm.guidance.k={gd.k} guided rollouts must be in [1, group_size={G}]")
        if not isinstance(gd.max_length, int) or gd.max_length < 1:
            errs.append(f"algorithm.guidance.max_length={gd.max_length!r} must be an integer >= 1")
        if not _num(gd.period) or gd.period < 2:
            errs.append(f"algorithm.guidance.period={gd.period!r} must be a number >= 2")
    if a.offpolicy_correction not in CORRECTIONS:
        errs.append(f"algorithm.offpolicy_correction={a.offpolicy_correction!r} is unknown; "
                    f"choose one of {', '.join(CORRECTIONS)}")
    if a.loss_agg_mode not in LOSS_AGG_MODES:
        errs.append(f"algorithm.loss_agg_mode={a.loss_agg_mode!r} is unknown; choose one of {', '.join(LOSS_AGG_MODES)}")
    if not _num(a.clip_ratio) or a.clip_ratio <= 0:
        errs.append(f"algorithm.clip_ratio={a.clip_ratio!r} must be a number > 0")
    if not _num(a.kl_coef) or a.kl_coef < 0:
        errs.append(f"algorithm.kl_coef={a.kl_coef!r} must be a number >= 0")
    return errs


def check_trainer(cfg: DictConfig, this_machine: bool = True) -> list[str]:
    errs: list[str] = []
    t, d = cfg.trainer, cfg.data
    if not _num(t.lr) or t.lr <= 0:
        errs.append(f"trainer.lr={t.lr!r} must be a number > 0")
    if not isinstance(t.total_steps, int) or t.total_steps < 1:
        errs.append(f"trainer.total_steps={t.total_steps!r} must be an integer >= 1")
    for key in ("eval_every", "checkpoint_every", "eval_samples", "final_eval_samples", "ppo_epochs", "mini_batches",
                "gen_batch_size"):
        if not isinstance(t[key], int) or t[key] < 1:
            errs.append(f"trainer.{key}={t[key]!r} must be an integer >= 1")
    if t.eval_problems is not None and (not _int(t.eval_problems) or t.eval_problems < 1):
        errs.append(f"trainer.eval_problems={t.eval_problems!r} must be null (all held-out problems) or an integer >= 1")
    mbs = t.get("mini_batch_size")
    if mbs is not None:
        if not isinstance(mbs, int) or mbs < 1:
            errs.append(f"trainer.mini_batch_size={mbs!r} must be an integer >= 1 (prompts per optimizer step) or null")
        elif isinstance(d.prompts_per_step, int) and d.prompts_per_step % mbs:
            errs.append(f"data.prompts_per_step={d.prompts_per_step} must be divisible by trainer.mini_batch_size={mbs}")
    elif isinstance(d.prompts_per_step, int) and isinstance(t.mini_batches, int) and d.prompts_per_step % max(t.mini_batches, 1):
        errs.append(f"data.prompts_per_step={d.prompts_per_step} must be divisible by trainer.mini_batches={t.mini_batches}")
    micro = t.get("micro_batch_size_per_gpu")
    if micro is not None and (not isinstance(micro, int) or micro < 1):
        errs.append(f"trainer.micro_batch_size_per_gpu={micro!r} must be an integer >= 1 or null (packed by tokens)")
    if t.precision not in ("fp32", "bf16"):
        errs.append(f"trainer.precision={t.precision!r} is unknown; use fp32 or bf16 (bf16 autocast, fp32 weights)")
    if this_machine and t.backend == "local" and str(t.device).startswith("cuda"):  # verl: GPUs are Ray's
        import torch

        if not torch.cuda.is_available():
            errs.append(f"trainer.device={t.device} but no CUDA device is visible; use trainer.device=cpu or auto")
    if t.backend == "verl":
        errs += check_verl(cfg)
    elif t.backend != "local":
        errs.append(f"trainer.backend={t.backend!r} is unknown; use trainer=local or trainer=verl")
    return errs


def check_data(cfg: DictConfig, this_machine: bool = True) -> list[str]:
    errs: list[str] = []
    d = cfg.data
    if not isinstance(d.prompts_per_step, int) or d.prompts_per_step < 1:
        errs.append(f"data.prompts_per_step={d.prompts_per_step!r} must be an integer >= 1")
    if not isinstance(d.max_new_tokens, int) or d.max_new_tokens < 1:
        errs.append(f"data.max_new_tokens={d.max_new_tokens!r} must be an integer >= 1")
    if d.reward not in REWARDS:
        errs.append(f"data.reward={d.reward!r} is unknown; registered: {', '.join(sorted(REWARDS))}")
    return errs


def _check_model(cfg: DictConfig, role: str) -> list[str]:
    m = cfg[role]
    if role == "explorer" and m.name == "none":
        return []
    if m.family not in FAMILIES:
        return [f"{role}.family={m.family!r} is unknown; use one of {', '.join(FAMILIES)}"]
    if m.family == "toy" and m.size not in cfg.family.sizes:
        return [f"{role}.size={m.size!r} is not in family.sizes ({', '.join(cfg.family.sizes)}); "
                f"pick {role}=toy_<size>"]
    return []


def check_models(cfg: DictConfig, this_machine: bool = True) -> list[str]:
    """``learner`` and ``explorer`` (same family; the explorer's sampling when it is used)."""
    a = cfg.algorithm
    errs = _check_model(cfg, "learner")
    if cfg.explorer.name != "none" and cfg.learner.family and cfg.explorer.family != cfg.learner.family:
        errs.append(f"explorer.family={cfg.explorer.family!r} differs from learner.family={cfg.learner.family!r}: "
                    "S2L-PO needs an explorer of the learner's family (same tokenizer)")
    else:
        errs += _check_model(cfg, "explorer")
    if isinstance(a.t_mix, int) and a.t_mix > 0:
        if cfg.explorer.name == "none":
            errs.append(f"algorithm.t_mix={a.t_mix} needs an explorer but explorer=none; pick e.g. explorer=toy_s "
                        "or set algorithm.t_mix=0")
        else:
            errs += _check_explorer_sampling(cfg)
    return errs


def _check_explorer_sampling(cfg: DictConfig) -> list[str]:
    s, G = cfg.explorer.get("sampling"), cfg.algorithm.group_size
    if s is None:
        return [f"explorer={cfg.explorer.name} has no sampling block; add explorer.sampling {{temperature, top_p, "
                "top_k, samples_per_prompt, max_new_tokens}} (see conf/explorer_job/qwen3.yaml)"]
    errs = []
    n = s.samples_per_prompt
    if not isinstance(n, int) or (isinstance(G, int) and n < G):
        errs.append(f"explorer.sampling.samples_per_prompt={n!r} must be an integer >= algorithm.group_size={G}: "
                    "step 1 draws the whole group from the explorer's cached samples")
    if not _num(s.temperature) or s.temperature <= 0:
        errs.append(f"explorer.sampling.temperature={s.temperature!r} must be a number > 0")
    if not _num(s.top_p) or not 0 < s.top_p <= 1:
        errs.append(f"explorer.sampling.top_p={s.top_p!r} must be in (0, 1]")
    if not isinstance(s.max_new_tokens, int) or s.max_new_tokens < 1:
        errs.append(f"explorer.sampling.max_new_tokens={s.max_new_tokens!r} must be an integer >= 1")
    return errs


def check_verl(cfg: DictConfig) -> list[str]:
    """The verl backend reads models and data from files (nothing is downloaded) and supports the
    local backend's settings except the shaping ablation."""
    errs: list[str] = []
    a, d = cfg.algorithm, cfg.data
    from importlib.metadata import version

    if version("verl") != VERL_VERSION:
        errs.append(f"verl {version('verl')} is installed; s2lpo's verl backend is built on verl {VERL_VERSION} (its "
                    f"agent-loop, platform and rollout extension points): pip install verl=={VERL_VERSION}")
    if str(cfg.trainer.device) not in ("cuda", "cpu"):
        errs.append(f"trainer.device={cfg.trainer.device} with trainer=verl: use cuda (GPUs through Ray) or cpu "
                    "(verl's trainer on CPU with a stand-in rollout server in vLLM's place)")
    rollout = cfg.trainer.verl.actor_rollout_ref.rollout
    if rollout.name != "vllm":
        errs.append(f"trainer.verl.actor_rollout_ref.rollout.name={rollout.name!r}: the explorer agent loop mirrors "
                    "vLLM's row schema only; use vllm")
    if a.offpolicy_correction == "shaping":
        errs.append("algorithm.offpolicy_correction=shaping has no verl counterpart; use none or truncated_is "
                    "(verl's token-level rollout IS)")
    roles = ["learner"] + (["explorer"] if a.t_mix > 0 else [])
    for role in roles:
        if cfg[role].path is None and cfg[role].family != "toy":  # toy: built offline (s2lpo.verl_ext.toy)
            errs.append(f"{role}.path is not set: the verl backend loads Hugging Face weights from a local directory "
                        f"(download them ahead, e.g. huggingface-cli download, and set {role}.path)")
    if d.train_file is None and d.name != "toy":
        errs.append(f"data.train_file is not set for data={d.name}: the verl backend reads parquet files in verl's "
                    "schema; write them with experiments/prepare_data.py and use e.g. data=dapo_math")
    return errs


SINKS = ("journal", "mlflow", "wandb")
WANDB_MODES = ("auto", "online", "offline", "disabled")
MLFLOW_SCHEMES = ("sqlite:///", "http://", "https://", "file:", "databricks", "postgresql", "mysql")


def check_logger(cfg: DictConfig, this_machine: bool = True) -> list[str]:
    errs: list[str] = []
    lg = cfg.logger
    bad = [s for s in lg.sinks if s not in SINKS]
    if bad:
        errs.append(f"logger.sinks has unknown sink(s) {bad}; choose from {', '.join(SINKS)}")
    if "journal" not in lg.sinks:
        errs.append("logger.sinks must include journal: it is the source of truth that resumes and replays replicas")
    if "mlflow" in lg.sinks and not str(lg.mlflow.tracking_uri).startswith(MLFLOW_SCHEMES):
        errs.append(f"logger.mlflow.tracking_uri={lg.mlflow.tracking_uri!r} is not a tracking URI; use "
                    "sqlite:///<path>.db or http://host:port")
    if lg.wandb.mode not in WANDB_MODES:
        errs.append(f"logger.wandb.mode={lg.wandb.mode!r} is unknown; use one of {', '.join(WANDB_MODES)}")
    for key in ("interval_s", "retry_max_s", "close_timeout_s"):
        v = lg.delivery[key]
        if not _num(v) or v < 0:
            errs.append(f"logger.delivery.{key}={v!r} must be a number of seconds >= 0")
    return errs


ARCH_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
               "intermediate_size")


def check_family(cfg: DictConfig, this_machine: bool = True) -> list[str]:
    """The toy family's recipe (only when a toy model is used: it is built before anything else runs), and the
    evaluation split it makes, which ``trainer.eval_problems`` takes from."""
    f = cfg.family
    if "toy" not in (cfg.learner.family, cfg.explorer.family) or f is None:
        return []
    errs = []
    for key in ("n_operands", "n_sft", "n_rl", "n_eval", "vocab_size", "sft_epochs", "sft_batch_size",
                "max_position_embeddings"):
        if not _int(f.get(key)) or f[key] < 1:
            errs.append(f"family.{key}={f.get(key)!r} must be an integer >= 1")
    if not _num(f.get("sft_lr")) or f.sft_lr <= 0:
        errs.append(f"family.sft_lr={f.get('sft_lr')!r} must be a number > 0")
    for size, arch in (f.get("sizes") or {}).items():
        for key in ARCH_FIELDS:
            if not _int(arch.get(key)) or arch[key] < 1:
                errs.append(f"family.sizes.{size}.{key}={arch.get(key)!r} must be an integer >= 1")
        if _int(arch.get("num_attention_heads")) and _int(arch.get("num_key_value_heads")) and \
                arch.num_key_value_heads >= 1 and arch.num_attention_heads % arch.num_key_value_heads:
            errs.append(f"family.sizes.{size}.num_attention_heads={arch.num_attention_heads} must be a multiple of "
                        f"num_key_value_heads={arch.num_key_value_heads}")
    share = f.get("precedence_share")
    if share is not None and (not _num(share) or not 0 <= share <= 1):
        errs.append(f"family.precedence_share={share!r} must be null or a number in [0, 1]")
    for key in ("left_to_right", "left_to_right_only"):
        for size, v in (f.get(key) or {}).items():
            if size not in (f.get("sizes") or {}):
                errs.append(f"family.{key}.{size}: {size!r} is not in family.sizes "
                            f"({', '.join(f.get('sizes') or {})}); use one of them")
            elif not _num(v) or not 0 <= v <= 1:
                errs.append(f"family.{key}.{size}={v!r} must be a number in [0, 1]")
    both, only = f.get("left_to_right") or {}, f.get("left_to_right_only") or {}
    for size in set(both) & set(only):
        if _num(both[size]) and _num(only[size]) and both[size] + only[size] > 1:
            errs.append(f"family.left_to_right.{size}={both[size]} + family.left_to_right_only.{size}={only[size]} "
                        f"exceeds 1: a problem is taught both ways or left to right only; lower one of them")
    drills = f.get("drills", 0)
    if not _int(drills) or drills < 0:
        errs.append(f"family.drills={drills!r} must be an integer >= 0 (copies of every arithmetic step per epoch)")
    elif drills and _int(f.get("n_operands")) and f.n_operands < 3:
        errs.append(f"family.drills={drills} needs family.n_operands >= 3: with {f.n_operands} operands a step is "
                    f"a whole problem, so drills would teach the evaluation split; set drills: 0")
    n_eval, ask = f.get("n_eval"), cfg.trainer.get("eval_problems")
    if _int(n_eval) and _int(ask) and ask > n_eval:
        errs.append(f"trainer.eval_problems={ask} exceeds the family's {n_eval} evaluation problems "
                    f"(family.n_eval); lower it to at most {n_eval}")
    return errs


# one checker per config group, in the order their problems are listed
CHECKERS = (check_algorithm, check_identity, check_models, check_family, check_data, check_trainer, check_logger)
