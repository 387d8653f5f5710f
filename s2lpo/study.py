"""Run a study (a list of labelled runs x seeds), pre-fill explorer caches, write the results."""

from __future__ import annotations

from pathlib import Path

from hydra import compose
from omegaconf import DictConfig, OmegaConf
from rich.table import Table

from s2lpo.cli_utils import console, exit_on_config_error, train_with_progress
from s2lpo.config.validate import validate
from s2lpo.report import fmt_percent, markdown_table, plot_pass1, study_rows
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
    out.mkdir(parents=True, exist_ok=True)
    rows = study_rows(runs, cfg.study.benchmark)
    (out / "table.md").write_text(markdown_table(rows))
    plot_pass1(runs, cfg.study.benchmark, out / "pass1_vs_step.png")
    table = Table(title=f"{cfg.study.name}: final evaluation on {cfg.study.benchmark}")
    for col in ("method", "pass@1 (%)", "pass@8 (%)", "explorer tok", "learner tok", "guided tok"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for r in rows:
        table.add_row(r["method"], fmt_percent(r["pass@1"]), fmt_percent(r["pass@8"]),
                      *(f"{r['tokens'][s]:,.0f}" for s in ("explorer", "learner", "guided")))
    console.print(table)
    console.print(f"wrote {out / 'table.md'} and {out / 'pass1_vs_step.png'}")
    OmegaConf.save(cfg, out / "study.yaml")
    return runs
