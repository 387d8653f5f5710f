"""Run a study (a list of labelled runs x seeds), pre-fill explorer caches, write the results."""

from __future__ import annotations

from pathlib import Path

from hydra import compose
from omegaconf import DictConfig, OmegaConf

from s2lpo.cli_utils import console, exit_on_config_error, train_with_progress
from s2lpo.config.validate import validate
from s2lpo.rollout.explorer_fill import fill_explorer_cache


def study_configs(cfg: DictConfig) -> list[tuple[str, int, DictConfig]]:
    out = []
    for label, overrides in cfg.study.runs.items():
        for seed in cfg.study.seeds:
            ov = list(cfg.study.common) + list(overrides) + [f"seed={seed}", f"sweep={cfg.study.name}"]
            ov += [f"paths.{k}={v}" for k, v in cfg.paths.items()]
            out.append((label, seed, compose("train", overrides=ov)))
    return out


@exit_on_config_error
def run_study(cfg: DictConfig) -> dict[str, list[Path]]:
    configs = study_configs(cfg)
    for _, _, c in configs:  # every config is checked before anything runs
        validate(c)
    for _, _, c in configs:
        fill_explorer_cache(c, log=console.print)
    runs: dict[str, list[Path]] = {}
    for label, seed, c in configs:
        result = train_with_progress(c, label=f"{label} seed {seed}")
        runs.setdefault(label, []).append(result.run_dir)
    out = Path(cfg.paths.results_dir).resolve()
    write_results(cfg, [d for dirs in runs.values() for d in dirs], out)
    OmegaConf.save(cfg, out / "study.yaml")
    return runs


def write_results(cfg: DictConfig, run_dirs: list[Path], out: Path) -> None:
    """The study's tables and figures, through the analysis layer (specs in ``cfg.study.specs``), read
    from this study's run journals; the first table is printed."""
    from rich.markdown import Markdown

    from s2lpo.analysis.readers import JournalReader
    from s2lpo.analysis.regenerate import regenerate

    specs = Path(cfg.study.specs)
    specs = specs if specs.is_absolute() else Path(__file__).resolve().parents[1] / specs
    rep = regenerate([JournalReader(*run_dirs)], specs, out, Path(cfg.paths.cache_dir) / "analysis",
                     warn=console.print)
    tables = [p for p in rep.written if p.suffix == ".md"]
    if tables:
        console.print(Markdown(tables[0].read_text()))
    console.print("wrote " + ", ".join(str(p.relative_to(out.parent)) if out.parent in p.parents else str(p)
                                      for p in rep.written))
