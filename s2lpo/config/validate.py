"""Validation of the resolved config before any model is loaded or job submitted.

Every problem is reported as one line naming the field, its value and the fix; the checkers of every config
group (:mod:`s2lpo.config.groups`) and of the keys themselves (:mod:`s2lpo.config.domains`) all run, and their
problems are raised together in one :class:`ConfigError`.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig

from s2lpo.config.domains import CONF, domain_problems, position_problems, unknown_key_problems
from s2lpo.config.groups import CHECKERS


class ConfigError(ValueError):
    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))

    def __reduce__(self):  # rebuilt from its problems when it crosses a process (a study's worker)
        return ConfigError, (self.problems,)


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


def writable_problem(field: str, path) -> str | None:
    """Why the run could not write under ``path`` (probed in its nearest existing directory), None if it can."""
    if path is None:
        return None
    import tempfile

    p = Path(str(path)).expanduser().absolute()
    probe_dir = next((q for q in (p, *p.parents) if q.exists()), None)
    if probe_dir is None or not probe_dir.is_dir():
        return f"{field}={path}: {probe_dir} is not a directory; set {field} to a directory"
    try:
        fd, name = tempfile.mkstemp(prefix=".s2lpo-probe-", dir=probe_dir)
    except OSError as e:
        return f"{field}={path} is not writable ({probe_dir}: {e.strerror}); make it writable or set {field} elsewhere"
    os.close(fd)
    os.unlink(name)
    return None


def file_problems(cfg: DictConfig) -> list[str]:
    """Models and data files the run reads that are not on disk (or, for G²RPO-A, lack reference solutions);
    one line each, naming the field, the path and the fix."""
    errs: list[str] = []
    d = cfg.data
    for role in ("learner", "explorer"):
        m = cfg[role]
        if role == "explorer" and (m.name == "none" or m.family != cfg.learner.family):
            continue  # a foreign explorer is reported as such
        if m.family == "toy" and m.path is not None and not Path(str(m.path)).is_dir():
            errs.append(f"{role}.path={m.path} does not exist; set it to a model directory, or null to use the toy "
                        "family's build")
        elif m.family not in ("toy", None) and (m.path is None or not Path(str(m.path)).exists()):
            errs.append(f"{role}.path={m.path} does not exist; put a local copy there or set paths.models_dir "
                        "(nothing is downloaded)")
        elif m.family not in ("toy", None) and not (Path(str(m.path)) / "config.json").is_file():
            errs.append(f"{role}.path={m.path} holds no model (no config.json); point it at a Hugging Face model "
                        "folder (config.json, tokenizer and *.safetensors)")
        if m.tokenizer is not None and not Path(str(m.tokenizer)).exists():
            errs.append(f"{role}.tokenizer={m.tokenizer} does not exist; set it to a tokenizer directory or null")
    if d.train_file is not None and not Path(str(d.train_file)).exists():
        errs.append(f"data.train_file={d.train_file} does not exist; prepare it first (python "
                    "experiments/prepare_data.py <dataset> <local file>) or set data.train_file=null for the toy task")
    elif cfg.algorithm.guidance.enabled and d.train_file is not None:
        _check_solutions(Path(str(d.train_file)), errs)
    dirs = ["runs_dir", "cache_dir", "eval_cache_dir"] + (["explorer_cache_dir"] if cfg.algorithm.t_mix else [])
    errs += [p for key in dirs if (p := writable_problem(f"paths.{key}", cfg.paths.get(key)))]
    if cfg.trainer.backend == "verl":
        for f in d.get("eval_files") or []:
            if not Path(str(f)).exists():
                errs.append(f"data.eval_files: {f} does not exist; prepare it first (python "
                            "experiments/prepare_data.py <dataset> <local file>)")
    return errs


# the key every option of one of our groups defines: without it the option is not ours (verl's config groups are
# on Hydra's search path for trainer=verl, so e.g. ``algorithm=rollout_correction`` composes verl's)
IDENTITY = {"algorithm": "name", "data": "name", "learner": "name", "explorer": "name", "trainer": "backend",
            "logger": "sinks", "family": "name"}


def foreign_group_problems(cfg: DictConfig) -> list[str]:
    errs = []
    for group, key in IDENTITY.items():
        node = cfg.get(group)
        if group == "family" and node is None:
            continue
        if not isinstance(node, DictConfig) or key not in node:
            dirs = {"learner": "model", "explorer": "explorer"}.get(group, group)
            ours = sorted(p.stem for p in (CONF / dirs).glob("*.yaml") if not p.stem.startswith("_"))
            errs.append(f"{group} is not one of s2lpo's {group} configs (it has no {group}.{key}); choose "
                        f"{group}=<one of {', '.join(ours)}>")
    return errs


def validate(cfg: DictConfig, this_machine: bool = True, files: bool = True) -> None:
    """Raise :class:`ConfigError` listing every invalid field of the resolved config. With
    ``this_machine=False`` (a job being submitted elsewhere) the devices of this machine are not checked;
    with ``files=False`` neither are the model and data files (a dry run reports them as warnings)."""
    errs = foreign_group_problems(cfg)
    if errs:  # a group that is not one of ours cannot be checked further
        raise ConfigError(errs)
    errs = unknown_key_problems(cfg) + domain_problems(cfg) + position_problems(cfg)
    for check in CHECKERS:
        errs += check(cfg, this_machine)
    if files:
        errs += file_problems(cfg)
    if errs:
        raise ConfigError(errs)


def check_tokenizers(cfg: DictConfig, digest) -> None:
    """Learner and explorer must share one tokenizer. ``digest(role) -> str | None`` hashes a model's
    tokenizer (cheap: no model is loaded); None means unknown and is not compared."""
    if cfg.explorer.name == "none":
        return
    le, ex = digest("learner"), digest("explorer")
    if le and ex and le != ex:
        raise ConfigError([f"explorer tokenizer (digest {ex}) differs from the learner's ({le}): explorer token ids "
                           "would be meaningless to the learner; use an explorer of the same family and tokenizer"])
