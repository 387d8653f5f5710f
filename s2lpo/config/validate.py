"""Validation of the resolved config before any model is loaded or job submitted.

Every problem is reported as one line naming the field and the fix; all problems are collected and
raised together in one :class:`ConfigError`.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from s2lpo.algo.correction import CORRECTIONS
from s2lpo.algo.schedule import SCHEDULES
from s2lpo.config.domains import _num, domain_problems, position_problems, unknown_key_problems
from s2lpo.rewards.registry import REWARDS

ALGORITHMS = ("grpo", "s2lpo", "token_temp", "g2rpo_a")
TEMPERATURE_MODES = ("tempered", "sample_only")
LOSS_AGG_MODES = ("token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")
FAMILIES = ("toy", "qwen3")
VERL_VERSION = "0.9.1"  # the verl release whose extension points s2lpo.verl_ext uses (pinned in pyproject.toml)


class ConfigError(ValueError):
    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


def _check_model(cfg: DictConfig, role: str, errs: list[str]) -> None:
    m = cfg[role]
    if role == "explorer" and m.name == "none":
        return
    if m.family not in FAMILIES:
        errs.append(f"{role}.family={m.family!r} is unknown; use one of {', '.join(FAMILIES)}")
    elif m.family == "toy" and m.size not in cfg.family.sizes:
        errs.append(f"{role}.size={m.size!r} is not in family.sizes ({', '.join(cfg.family.sizes)}); "
                    f"pick {role}=toy_<size>")


SOLUTIONS_FIX = ("join solutions by question text: python experiments/prepare_data.py <dataset> <file> --solutions "
                 "<file with question and solution columns> (rows left without one are dropped), or prepare a "
                 "dataset that has them (MATH-style solution)")


def _check_solutions(path: Path, errs: list[str]) -> None:
    """G²RPO-A starts rollouts from reference solutions: every training row needs one."""
    import pyarrow.parquet as pq

    if "reference_solution" not in pq.read_schema(str(path)).names:
        errs.append(f"algorithm.guidance needs reference solutions but {path} has no reference_solution column; "
                    + SOLUTIONS_FIX)
        return
    col = pq.read_table(str(path), columns=["reference_solution"]).column(0).to_pylist()
    missing = sum(1 for s in col if not (isinstance(s, str) and s.strip()))
    if missing:
        errs.append(f"algorithm.guidance needs a reference solution for every training row but {missing} of "
                    f"{len(col)} rows of {path} have none; " + SOLUTIONS_FIX)


def _check_explorer_sampling(cfg: DictConfig, errs: list[str]) -> None:
    s, G = cfg.explorer.get("sampling"), cfg.algorithm.group_size
    if s is None:
        errs.append(f"explorer={cfg.explorer.name} has no sampling block; add explorer.sampling {{temperature, top_p, "
                    "top_k, samples_per_prompt, max_new_tokens}} (see conf/explorer/qwen3_1_7b.yaml)")
        return
    n = s.samples_per_prompt
    if not isinstance(n, int) or (isinstance(G, int) and n < G):
        errs.append(f"explorer.sampling.samples_per_prompt={n!r} must be an integer >= algorithm.group_size={G}: "
                    "step 1 draws the whole group from the explorer's cached samples")
    if not _num(s.temperature) or s.temperature <= 0:
        errs.append(f"explorer.sampling.temperature={s.temperature!r} must be > 0")
    if not _num(s.top_p) or not 0 < s.top_p <= 1:
        errs.append(f"explorer.sampling.top_p={s.top_p!r} must be in (0, 1]")
    if not isinstance(s.max_new_tokens, int) or s.max_new_tokens < 1:
        errs.append(f"explorer.sampling.max_new_tokens={s.max_new_tokens!r} must be an integer >= 1")


def file_problems(cfg: DictConfig) -> list[str]:
    """Models and data files the run reads that are not on disk (or, for G²RPO-A, lack reference solutions);
    one line each, naming the field, the path and the fix."""
    errs: list[str] = []
    d = cfg.data
    for role in ("learner", "explorer"):
        m = cfg[role]
        if role == "explorer" and (m.name == "none" or m.family != cfg.learner.family):
            continue  # a foreign explorer is reported as such
        if m.family not in ("toy", None) and (m.path is None or not Path(str(m.path)).exists()):
            errs.append(f"{role}.path={m.path} does not exist; put a local copy there or set paths.models_dir "
                        "(nothing is downloaded)")
        if m.tokenizer is not None and not Path(str(m.tokenizer)).exists():
            errs.append(f"{role}.tokenizer={m.tokenizer} does not exist; set it to a tokenizer directory or null")
    if d.train_file is not None and not Path(str(d.train_file)).exists():
        errs.append(f"data.train_file={d.train_file} does not exist; prepare it first (python "
                    "experiments/prepare_data.py <dataset> <local file>) or set data.train_file=null for the toy task")
    elif cfg.algorithm.guidance.enabled and d.train_file is not None:
        _check_solutions(Path(str(d.train_file)), errs)
    if cfg.trainer.backend == "verl":
        for f in d.get("eval_files") or []:
            if not Path(str(f)).exists():
                errs.append(f"data.eval_files: {f} does not exist; prepare it first (python "
                            "experiments/prepare_data.py <dataset> <local file>)")
    return errs


def validate(cfg: DictConfig, this_machine: bool = True, files: bool = True) -> None:
    """Raise :class:`ConfigError` listing every invalid field of the resolved config. With
    ``this_machine=False`` (a job being submitted elsewhere) the devices of this machine are not checked;
    with ``files=False`` neither are the model and data files (a dry run reports them as warnings)."""
    errs: list[str] = unknown_key_problems(cfg) + domain_problems(cfg) + position_problems(cfg)
    a, t, d = cfg.algorithm, cfg.trainer, cfg.data
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
    if isinstance(a.t_mix, int) and a.t_mix > 0 and cfg.explorer.name == "none":
        errs.append(f"algorithm.t_mix={a.t_mix} needs an explorer but explorer=none; pick e.g. explorer=toy_s "
                    "or set algorithm.t_mix=0")
    if isinstance(a.t_mix, int) and a.t_mix > 0 and cfg.explorer.name != "none":
        _check_explorer_sampling(cfg, errs)
    if a.name == "s2lpo" and a.t_mix == 0:
        errs.append("algorithm=s2lpo with algorithm.t_mix=0 is plain GRPO; set t_mix>=2 or use algorithm=grpo")
    if not _num(a.temperature) or a.temperature <= 0:
        errs.append(f"algorithm.temperature={a.temperature!r} must be > 0")
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
        if gd.period < 2:
            errs.append(f"algorithm.guidance.period={gd.period} must be >= 2")
    if a.offpolicy_correction not in CORRECTIONS:
        errs.append(f"algorithm.offpolicy_correction={a.offpolicy_correction!r} is unknown; "
                    f"choose one of {', '.join(CORRECTIONS)}")
    if a.loss_agg_mode not in LOSS_AGG_MODES:
        errs.append(f"algorithm.loss_agg_mode={a.loss_agg_mode!r} is unknown; choose one of {', '.join(LOSS_AGG_MODES)}")
    if not _num(a.clip_ratio) or a.clip_ratio <= 0:
        errs.append(f"algorithm.clip_ratio={a.clip_ratio!r} must be > 0")
    if not _num(a.kl_coef) or a.kl_coef < 0:
        errs.append(f"algorithm.kl_coef={a.kl_coef!r} must be >= 0")
    if not _num(t.lr) or t.lr <= 0:
        errs.append(f"trainer.lr={t.lr!r} must be > 0")
    if not isinstance(t.total_steps, int) or t.total_steps < 1:
        errs.append(f"trainer.total_steps={t.total_steps!r} must be an integer >= 1")
    for key in ("eval_every", "checkpoint_every", "eval_samples", "final_eval_samples", "eval_problems",
                "ppo_epochs", "mini_batches", "gen_batch_size"):
        if not isinstance(t[key], int) or t[key] < 1:
            errs.append(f"trainer.{key}={t[key]!r} must be an integer >= 1")
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
    if not isinstance(d.prompts_per_step, int) or d.prompts_per_step < 1:
        errs.append(f"data.prompts_per_step={d.prompts_per_step!r} must be an integer >= 1")
    if not isinstance(d.max_new_tokens, int) or d.max_new_tokens < 1:
        errs.append(f"data.max_new_tokens={d.max_new_tokens!r} must be an integer >= 1")
    if d.reward not in REWARDS:
        errs.append(f"data.reward={d.reward!r} is unknown; registered: {', '.join(sorted(REWARDS))}")
    if t.precision not in ("fp32", "bf16"):
        errs.append(f"trainer.precision={t.precision!r} is unknown; use fp32 or bf16 (bf16 autocast, fp32 weights)")
    if this_machine and t.backend == "local" and str(t.device).startswith("cuda"):  # verl: GPUs are Ray's
        import torch

        if not torch.cuda.is_available():
            errs.append(f"trainer.device={t.device} but no CUDA device is visible; use trainer.device=cpu or auto")
    _check_model(cfg, "learner", errs)
    if cfg.explorer.name != "none" and cfg.learner.family and cfg.explorer.family != cfg.learner.family:
        errs.append(f"explorer.family={cfg.explorer.family!r} differs from learner.family={cfg.learner.family!r}: "
                    "S2L-PO needs an explorer of the learner's family (same tokenizer)")
    else:
        _check_model(cfg, "explorer", errs)
    if files:
        errs += file_problems(cfg)
    _check_logger(cfg.logger, errs)
    if cfg.trainer.backend == "verl":
        _check_verl(cfg, errs)
    elif cfg.trainer.backend != "local":
        errs.append(f"trainer.backend={cfg.trainer.backend!r} is unknown; use trainer=local or trainer=verl")
    if errs:
        raise ConfigError(errs)


def _check_verl(cfg: DictConfig, errs: list[str]) -> None:
    """The verl backend reads models and data from files (nothing is downloaded) and supports the
    local backend's settings except the shaping ablation."""
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


SINKS = ("journal", "mlflow", "wandb")
WANDB_MODES = ("auto", "online", "offline", "disabled")
MLFLOW_SCHEMES = ("sqlite:///", "http://", "https://", "file:", "databricks", "postgresql", "mysql")


def _check_logger(lg: DictConfig, errs: list[str]) -> None:
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


def check_tokenizers(cfg: DictConfig, digest) -> None:
    """Learner and explorer must share one tokenizer. ``digest(role) -> str | None`` hashes a model's
    tokenizer (cheap: no model is loaded); None means unknown and is not compared."""
    if cfg.explorer.name == "none":
        return
    le, ex = digest("learner"), digest("explorer")
    if le and ex and le != ex:
        raise ConfigError([f"explorer tokenizer (digest {ex}) differs from the learner's ({le}): explorer token ids "
                           "would be meaningless to the learner; use an explorer of the same family and tokenizer"])


def to_container(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # type: ignore[return-value]
