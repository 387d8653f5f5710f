"""pass@k of every member of a model family on held-out problems, as tables."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig
from rich.table import Table

from s2lpo.cli_utils import console
from s2lpo.eval.runner import evaluate, power_of_two_ks
from s2lpo.models.family import build_family
from s2lpo.models.tokenizer import load_tokenizer
from s2lpo.rewards import get_reward_fn
from s2lpo.rollout.sampler import SamplingParams
from s2lpo.trainer.local import load_model
from s2lpo.trainer.setup import abspath, family_recipe, pick_device, step_seed


def family_passk(cfg: DictConfig, n: int = 64) -> dict[str, dict[int, float]]:
    family = build_family(family_recipe(cfg), abspath(cfg.paths.cache_dir), log=console.print)
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
    params_of = {s: family.manifest["models"][s]["params"] for s in curves}
    table = Table(title=f"pass@k (%) on {len(problems)} held-out problems, n={n} samples each")
    table.add_column("model")
    table.add_column("params", justify="right")
    for k in ks:
        table.add_column(f"k={k}", justify="right")
    lines = ["| model | params | " + " | ".join(f"pass@{k}" for k in ks) + " |",
             "|---|---:|" + "---:|" * len(ks)]
    for size, curve in curves.items():
        cells = [f"{100 * curve[k]:.1f}" for k in ks]
        table.add_row(f"toy-{size}", f"{params_of[size] / 1e6:.2f}M", *cells)
        lines.append(f"| toy-{size} | {params_of[size] / 1e6:.2f}M | " + " | ".join(cells) + " |")
    console.print(table)
    out = Path(abspath(cfg.paths.results_dir))
    out.mkdir(parents=True, exist_ok=True)
    (out / "family_passk.md").write_text("\n".join(lines) + "\n")
    (out / "family_passk.csv").write_text(
        "k," + ",".join(f"toy-{s}" for s in curves) + "\n"
        + "".join(f"{k}," + ",".join(f"{curves[s][k]:.6f}" for s in curves) + "\n" for k in range(1, n + 1)))
    console.print(f"wrote {out / 'family_passk.md'} and {out / 'family_passk.csv'}")
    return curves
