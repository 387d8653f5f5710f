"""Resolve what a run needs from its config: family build, model and tokenizer paths, problems,
device; validation happens here, before any model is loaded."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from s2lpo.config.validate import check_tokenizers, validate
from s2lpo.data.toy import Problem
from s2lpo.models.family import Family, FamilyRecipe, build_family
from s2lpo.models.tokenizer import load_tokenizer, tokenizer_digest


def family_recipe(cfg: DictConfig) -> FamilyRecipe:
    d = OmegaConf.to_container(cfg.family, resolve=True)
    d.pop("name", None)
    return FamilyRecipe.from_dict(d)


@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    status: str
    final_metrics: dict[str, float]


def open_run(runs_dir: str | Path, container: dict, log=print):
    """The run's id, directory and manifest (both backends); ``done`` is the result of a run that already
    finished (nothing to do), else None."""
    from s2lpo.tracking.run import Manifest, run_id

    rid = run_id(container)
    run_dir = abspath(runs_dir) / rid
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(run_dir)
    done = None
    if manifest.status == "finished":
        log(f"run {rid} already finished: {run_dir}")
        done = RunResult(rid, run_dir, "finished", manifest.data.get("final_metrics", {}))
    return rid, run_dir, manifest, done


def abspath(p: str | Path) -> Path:
    return Path(p).expanduser().resolve()


def model_params(cfg: DictConfig, role: str, family: Family | None = None) -> int:
    """Parameters of the learner's or explorer's model, the same number for both backends (FLOPs metrics):
    the toy family's manifest, else ``<role>.params``, else counted from the checkpoint's safetensors headers.
    0 for ``explorer=none``."""
    m = cfg[role]
    if m.name == "none":
        return 0
    if m.family == "toy":
        family = family or build_family(family_recipe(cfg), abspath(cfg.paths.cache_dir), log=lambda *_: None)
        return int(family.manifest["models"][m.size]["params"])
    if m.get("params"):
        return int(float(m.params))
    from safetensors import safe_open

    total = 0
    for f in sorted(abspath(m.path).glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            for k in st.keys():
                n = 1
                for d in st.get_slice(k).get_shape():
                    n *= int(d)
                total += n
    return total


@dataclass
class Resolved:
    family: Family | None
    learner_path: Path
    explorer_path: Path | None
    tokenizer_path: Path
    train: list[Problem]
    eval: list[Problem]
    device: torch.device


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def model_path(cfg: DictConfig, role: str, family: Family | None) -> Path | None:
    m = cfg[role]
    if m.name == "none":
        return None
    if m.path is not None:
        return abspath(m.path)
    assert family is not None
    return family.model_dir(m.size)


def resolve(cfg: DictConfig, log=print) -> Resolved:
    """Validate ``cfg``, build or find the family, then compare tokenizers (no model is loaded here)."""

    validate(cfg)
    uses_toy = cfg.learner.family == "toy"
    family = build_family(family_recipe(cfg), abspath(cfg.paths.cache_dir), log=log) if uses_toy else None

    def digest(role: str) -> str | None:
        m = cfg[role]
        if m.tokenizer is not None:
            return tokenizer_digest(load_tokenizer(abspath(m.tokenizer)))
        if m.family == "toy" and family is not None:
            return family.manifest["tokenizer"]
        if m.path is not None and Path(str(m.path)).exists():
            return tokenizer_digest(load_tokenizer(abspath(m.path)))
        return None

    check_tokenizers(cfg, digest)  # before any model is loaded
    if family is None:
        raise NotImplementedError(
            "data for non-toy families comes from prepared dataset files (data.train_file); "
            "only the toy task is wired into the local trainer so far"
        )
    splits = family.splits()
    learner = model_path(cfg, "learner", family)
    explorer = model_path(cfg, "explorer", family) if cfg.algorithm.t_mix > 0 else None
    tok = abspath(cfg.learner.tokenizer) if cfg.learner.tokenizer else learner
    return Resolved(family, learner, explorer, tok, splits.rl, splits.eval[: cfg.trainer.eval_problems],
                    pick_device(cfg.trainer.device))


def step_seed(seed: int, step: int, salt: str) -> int:
    """A seed that is a pure function of (run seed, step, purpose): resumes replay the same randomness."""
    return zlib.crc32(f"{seed}:{step}:{salt}".encode()) & 0x7FFFFFFF


def batch_indices(n_items: int, per_step: int, step: int, seed: int) -> list[int]:
    """Prompt indices of 1-based ``step``: epochs of seeded permutations, consumed ``per_step`` at a time."""
    out: list[int] = []
    pos = (step - 1) * per_step
    while len(out) < per_step:
        epoch, off = divmod(pos, n_items)
        perm = torch.randperm(n_items, generator=torch.Generator().manual_seed(step_seed(seed, epoch, "epoch")))
        take = perm[off : off + per_step - len(out)].tolist()
        out += take
        pos += len(take)
    return out
