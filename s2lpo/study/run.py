"""Run a study (a list of labelled runs x seeds), pre-fill explorer caches, write the results. Returns or
raises (``ConfigError`` before anything runs); ``train`` and ``log`` come from the entry point."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from hydra import compose
from omegaconf import DictConfig, OmegaConf

from s2lpo.analysis.regenerate import regenerate
from s2lpo.config.domains import _int
from s2lpo.config.paths import abspath
from s2lpo.config.validate import ConfigError, validate
from s2lpo.models.family import built_sizes
from s2lpo.models.resolve import family_recipe, role_sizes, toy_family
from s2lpo.study.diversity import measure_diversity, policies, policy_run_dir, policy_task
from s2lpo.study.parallel import Task, finished_dir, prepare_task, run_tasks, train_task
from s2lpo.tracking.lifecycle import RunResult
from s2lpo.tracking.mlflow_replica import announce_sweep
from s2lpo.tracking.readers import JournalReader
from s2lpo.trainer.dispatch import train as train_run
from s2lpo.trainer.explorer_fill import fill_explorer_cache

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class StudyResult:
    runs: dict[str, list[Path]]  # label -> run directories (one per seed)
    written: list[Path]  # tables and figures
    out: Path


def study_shape(st: DictConfig) -> None:
    """Raise :class:`ConfigError` unless ``study.seeds`` is a non-empty list of integers and ``study.runs`` a
    mapping of labels to override lists (a string of seeds was iterated letter by letter)."""
    problems = []
    seeds = OmegaConf.to_object(st.seeds) if OmegaConf.is_config(st.seeds) else st.seeds
    if not isinstance(seeds, list) or not seeds or not all(_int(x) for x in seeds):
        problems.append(f"study.seeds={seeds!r} must be a non-empty list of integers, e.g. study.seeds=[0,1,2]")
    if not OmegaConf.is_dict(st.runs) or not st.runs:
        problems.append("study.runs must be a mapping of labels to override lists (see conf/study/toy.yaml)")
    else:
        problems += [f"study.runs.{label} must be a list of overrides, e.g. [algorithm=grpo]"
                     for label, ov in st.runs.items() if not OmegaConf.is_list(ov)]
    if problems:
        raise ConfigError(problems)


def study_configs(cfg: DictConfig) -> list[tuple[str, int, DictConfig]]:
    study_shape(cfg.study)
    out = []
    for label, overrides in cfg.study.runs.items():
        for seed in cfg.study.seeds:
            ov = list(cfg.study.common) + list(overrides) + [f"seed={seed}", f"sweep={cfg.study.name}"]
            ov += [f"paths.{k}={v}" for k, v in cfg.paths.items()]
            c = compose("train", overrides=ov)
            c.run_name = label  # dashboards name the run by its study label and seed
            out.append((label, seed, c))
    return out


def prepare_run(c: DictConfig, log: Callable[[str], None] = print) -> None:
    """What a run needs before its first step: its toy-family sizes built, its explorer cache filled."""
    if c.learner.family == "toy":
        toy_family(c, log=log)
    fill_explorer_cache(c, log=log)


def run_study(cfg: DictConfig, train: Callable[[DictConfig, str], RunResult] | None = None,
              log: Callable[[str], None] = print, prepare: Callable[[DictConfig], object] | None = None) -> StudyResult:
    """Check every run's config (all problems, each prefixed by its run), ``prepare`` each (default: fill its
    explorer cache; the entry point's also draws progress bars), train (``train(cfg, label)``; finished runs are
    reused), then write the study's tables and figures. With ``study.jobs`` > 1 the work is a task list on worker
    processes (``s2lpo.study.parallel``): explorers not built yet are built and their caches filled there, beside
    the first runs (:func:`pool_prepare`), and the diversity measurements come last."""
    train = train or (lambda c, _label: train_run(c, log=log))
    prepare = prepare or (lambda c: prepare_run(c, log))
    configs = study_configs(cfg)
    problems = []
    for label, seed, c in configs:  # every config is checked before anything runs
        try:
            validate(c)
        except ConfigError as e:
            problems += [f"{label} (seed {seed}): {p}" for p in e.problems]
    if cfg.study.get("diversity"):
        d, sizes = cfg.study.diversity, list(configs[0][2].family.sizes)
        problems += [f"study.diversity: size {s!r} is not in family {configs[0][2].family.name!r} (sizes: "
                     f"{', '.join(sizes)}); use those sizes or drop study.diversity"
                     for s in [*d.explorers, d.learner] if s not in sizes]
    if problems:
        raise ConfigError(problems)
    announce_sweep([OmegaConf.to_container(c.logger, resolve=True) for _, _, c in configs], cfg.study.name,
                   len(configs), warn=log)
    runs: dict[str, list[Path]] = {}
    jobs = int(cfg.study.get("jobs") or 1)
    div = cfg.study.get("diversity")  # policy- vs token-level diversity of the family, before any RL (one run each)
    if jobs == 1:
        for _, _, c in configs:
            prepare(c)
        for label, seed, c in configs:
            runs.setdefault(label, []).append(train(c, f"{label} seed {seed}").run_dir)
        pols = policies(configs[0][2], list(div.explorers), str(div.learner), float(div.high_temperature)) if div else []
        extra = [r.run_dir for r in measure_diversity(configs[0][2], pols, int(div.n), log)] if div else []
    else:  # worker processes: the entry point's per-run progress bars give way to a line per finished task
        tasks = pool_prepare(configs, prepare)
        after = {t.name: (i,) for i, t in enumerate(tasks)}
        first = len(tasks)
        tasks += [train_task(f"{label} seed {seed}", c, after.get(_prepare_name(c), ()) if c.algorithm.t_mix else ())
                  for label, seed, c in configs]  # each after the task that prepares its explorer, if one does
        if div:
            pols = policies(configs[0][2], list(div.explorers), str(div.learner), float(div.high_temperature))
            tasks += [Task(f"diversity · {p.name}", policy_task,
                           (OmegaConf.to_container(configs[0][2], resolve=True), asdict(p), int(div.n)),
                           finished_dir(policy_run_dir(configs[0][2], p, int(div.n)))
                           if built(configs[0][2], p.size) else None, tuple(range(first)))
                      for p in pols]  # last: they fill the cores the last runs leave idle
        dirs = run_tasks(tasks, jobs, log)
        for (label, _, _), run_dir in zip(configs, dirs[first : first + len(configs)]):
            runs.setdefault(label, []).append(run_dir)
        extra = [d for d in dirs[first + len(configs) :] if d is not None]
    out = Path(cfg.paths.results_dir).resolve()
    written = write_results(cfg, [d for dirs in runs.values() for d in dirs] + extra, out, log)
    OmegaConf.save(cfg, out / "study.yaml")
    return StudyResult(runs, written, out)


def _prepare_name(c: DictConfig) -> str:
    return f"toy-family size {c.explorer.size} and the explorer cache of {c.explorer.name}"


def built(c: DictConfig, size: str) -> bool:
    """Whether ``c``'s toy family has ``size`` built (nothing is built)."""
    return size in built_sizes(family_recipe(c), abspath(c.paths.cache_dir))


def pool_prepare(configs: list[tuple[str, int, DictConfig]], prepare: Callable[[DictConfig], object]) -> list[Task]:
    """Prepare here what needs no more than the learners' sizes (built with every core, under a progress bar) or is
    built already; return a worker task per explorer whose size is not built yet: its size built and its caches
    filled (in the configs' order) beside the first runs — a small model gains little from a second thread."""
    learners = {str(c.learner.size) for _, _, c in configs}
    deferred: dict[str, list[DictConfig]] = {}
    for _, _, c in configs:
        need = [s for s in role_sizes(c) if s not in learners]
        if c.trainer.backend == "local" and c.algorithm.t_mix and need and not all(built(c, s) for s in need):
            deferred.setdefault(_prepare_name(c), []).append(c)
        else:
            prepare(c)
    return [prepare_task(name, cs) for name, cs in deferred.items()]


def write_results(cfg: DictConfig, run_dirs: list[Path], out: Path, log: Callable[[str], None] = print) -> list[Path]:
    """The study's tables and figures, through the analysis layer (specs in ``cfg.study.specs``), read from this
    study's run journals."""
    specs = Path(cfg.study.specs)
    specs = specs if specs.is_absolute() else ROOT / specs
    return regenerate([JournalReader(*run_dirs)], specs, out, Path(cfg.paths.cache_dir) / "analysis", warn=log).written
