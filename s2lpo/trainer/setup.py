"""What a local run needs from its config: validation first, then the family build, model and tokenizer
paths, problems and device — no model is loaded here. Imports config, data, models."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from s2lpo.config.paths import abspath
from s2lpo.config.validate import ConfigError, check_tokenizers, validate
from s2lpo.data.toy import Problem
from s2lpo.models.family import Family
from s2lpo.models.resolve import model_path, pick_device, toy_family
from s2lpo.models.tokenizer import load_tokenizer, tokenizer_digest


@dataclass
class Resolved:
    family: Family
    learner_path: Path
    explorer_path: Path | None
    tokenizer_path: Path
    train: list[Problem]
    eval: list[Problem]
    device: torch.device


def resolve(cfg: DictConfig, log=print) -> Resolved:
    """Validate ``cfg``, build or find the family, then compare tokenizers (no model is loaded here)."""
    validate(cfg)
    if cfg.learner.family != "toy":
        raise ConfigError([f"learner={cfg.learner.name!r} with trainer=local: the local trainer trains the toy "
                           "family only (its data is built with it); train other models with trainer=verl on "
                           "prepared files (data=dapo_math)"])
    family = toy_family(cfg, log=log)

    def digest(role: str) -> str | None:
        m = cfg[role]
        if m.tokenizer is not None:
            return tokenizer_digest(load_tokenizer(abspath(m.tokenizer)))
        if m.family == "toy":
            return family.manifest["tokenizer"]
        if m.path is not None and Path(str(m.path)).exists():
            return tokenizer_digest(load_tokenizer(abspath(m.path)))
        return None

    check_tokenizers(cfg, digest)  # before any model is loaded
    splits = family.splits()
    learner = model_path(cfg, "learner", family)
    explorer = model_path(cfg, "explorer", family) if cfg.algorithm.t_mix > 0 else None
    tok = abspath(cfg.learner.tokenizer) if cfg.learner.tokenizer else learner
    return Resolved(family, learner, explorer, tok, splits.rl, splits.eval[: cfg.trainer.eval_problems],
                    pick_device(cfg.trainer.device))


BF16_UNITS = {"avx512_bf16", "amx_bf16", "bf16"}  # x86 (AVX-512 BF16, AMX) and Arm (FEAT_BF16) flags


def bf16_warning(precision: str, device: torch.device, cpu_flags: str) -> str | None:
    """Why ``trainer.precision=bf16`` will be slow here, or None: on a CPU without bf16 units (none of
    ``BF16_UNITS`` in its flags) torch emulates bf16 matmuls, measured 13x slower a step than fp32 on an AVX2
    AMD EPYC (README, Performance), where an AMX Xeon ran 1.3x faster."""
    if precision != "bf16" or device.type != "cpu" or BF16_UNITS & set(cpu_flags.split()):
        return None
    return ("warning: trainer.precision=bf16 on a CPU without bf16 units (no avx512_bf16, amx_bf16 or bf16 in "
            "/proc/cpuinfo): its bf16 matmuls are emulated, measured 13x slower a step than fp32 on such a CPU; "
            "trainer.precision=fp32 is faster here")


def intra_op_threads(threads: int | None, env: dict[str, str]) -> int | None:
    """torch threads for a run: ``trainer.threads`` where set; else, inside a SLURM job, the CPUs it was given
    (``SLURM_CPUS_PER_TASK``): on a node without CPU binding torch's default is every core of the node, and
    threads beyond the allocation spin-wait against other jobs' (libgomp); else None (torch's default)."""
    if threads:
        return int(threads)
    cpus = env.get("SLURM_CPUS_PER_TASK", "")
    return int(cpus) if cpus.isdigit() and int(cpus) > 0 else None
