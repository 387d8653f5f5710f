"""pass@k of every member of a model family on held-out problems, written as a table (``family_passk.md``) and
every k (``family_passk.csv``). Returns the curves and the files; the entry point prints."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from s2lpo.algo.seeds import step_seed
from s2lpo.config.paths import abspath
from s2lpo.eval.runner import evaluate, power_of_two_ks
from s2lpo.models.resolve import load_model, pick_device, toy_family
from s2lpo.models.tokenizer import load_tokenizer
from s2lpo.rewards import get_reward_fn
from s2lpo.rollout.sampler import SamplingParams


@dataclass
class FamilyPassK:
    curves: dict[str, dict[int, float]]  # size -> k -> pass@k
    params: dict[str, int]  # size -> parameters
    n_problems: int
    n: int
    markdown: Path
    csv: Path


def family_passk(cfg: DictConfig, n: int = 64, log: Callable[[str], None] = print) -> FamilyPassK:
    family = toy_family(cfg, log=log, sizes=list(cfg.family.sizes))
    tok = load_tokenizer(family.tokenizer_dir)
    problems = family.splits().eval
    device = pick_device(cfg.trainer.device)
    params = SamplingParams(cfg.trainer.eval_temperature, 1.0, 0, cfg.data.max_new_tokens)
    curves: dict[str, dict[int, float]] = {}
    for size in family.recipe.sizes:
        model = load_model(family.model_dir(size), device).eval()
        res = evaluate(model, tok, problems, get_reward_fn(cfg.data.reward), n, params,
                       step_seed(cfg.seed, 0, f"family-{size}"), cfg.trainer.gen_batch_size)
        curves[size] = res.curve(list(range(1, n + 1)))
    ks = power_of_two_ks(n)
    params_of = {s: int(family.manifest["models"][s]["params"]) for s in curves}
    lines = ["| model | params | " + " | ".join(f"pass@{k}" for k in ks) + " |",
             "|---|---:|" + "---:|" * len(ks)]
    for size, curve in curves.items():
        lines.append(f"| toy-{size} | {params_of[size] / 1e6:.2f}M | "
                     + " | ".join(f"{100 * curve[k]:.1f}" for k in ks) + " |")
    out = abspath(cfg.paths.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, csv = out / "family_passk.md", out / "family_passk.csv"
    md.write_text("\n".join(lines) + "\n")
    csv.write_text("k," + ",".join(f"toy-{s}" for s in curves) + "\n"
                   + "".join(f"{k}," + ",".join(f"{curves[s][k]:.6f}" for s in curves) + "\n" for k in range(1, n + 1)))
    return FamilyPassK(curves, params_of, len(problems), n, md, csv)
