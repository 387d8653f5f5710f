"""``experiments/evaluate.py``: evaluate a model of a family, or a trained run's last checkpoint (local
``.pt`` or verl's, merged by verl's model merger), on prepared benchmarks (a trained run's default: its
``data.eval_files`` and ``data.ood_files``, so CSQA is evaluated for every trained run); log ``eval/<benchmark>/pass@<k>`` and ``mean@<n>`` to an eval run (tag
``kind: eval``, linked to the trained run by ``evaluated_run``) through the tracking layer, and keep
the per-problem correct counts (``counts.json``) beside its journal."""

from __future__ import annotations

import json
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from s2lpo.algo.seeds import step_seed
from s2lpo.config.paths import abspath
from s2lpo.config.validate import validate
from s2lpo.eval.benchmarks import (
    PRESETS,
    EvalError,
    eval_run_id,
    load_benchmark,
    metrics,
    run_benchmark,
    sampling,
)
from s2lpo.eval.trained import TrainedRun, TrainedRunError, export_hf, load_trained
from s2lpo.models.family import weights_digest
from s2lpo.models.resolve import load_model, model_path, pick_device, toy_family
from s2lpo.models.tokenizer import load_tokenizer
from s2lpo.tracking.lifecycle import RunLifecycle


def _model(cfg: DictConfig, log) -> tuple[Path, Path]:
    """(weights dir, tokenizer dir) of ``learner``."""
    path = model_path(cfg, "learner", toy_family(cfg, log) if cfg.learner.family == "toy" else None)
    return path, abspath(cfg.learner.tokenizer) if cfg.learner.tokenizer else path


def _run_config(cfg: DictConfig, trained: TrainedRun | None) -> dict:
    """The eval run's config: a trained run's own (its method, explorer, learner and seed tag the eval run, so
    tables group it with its training run) with this evaluation's ``eval``, paths and logger."""
    mine = OmegaConf.to_container(cfg, resolve=True)
    if trained is None:
        return {**mine, "kind": "eval"}
    return {**trained.config, "eval": mine["eval"], "paths": mine["paths"], "logger": mine["logger"],
            "kind": "eval", "evaluated_run": trained.run_id}


def evaluate_model(cfg: DictConfig, log=print) -> dict[str, float]:
    e = cfg.eval
    validate(cfg)
    trained = None
    if e.run_dir:
        try:
            trained = load_trained(abspath(e.run_dir), log)
        except TrainedRunError as err:
            raise EvalError(str(err)) from None
    files = [str(b) for b in e.benchmarks]
    if not files and trained is not None:  # the trained run's own benchmarks, in domain and out (CSQA)
        d = trained.config["data"]
        files = [str(f) for f in (d.get("eval_files") or []) + (d.get("ood_files") or [])]
    problems = [] if files else ["eval.benchmarks is empty; list prepared files, e.g. eval.benchmarks=[data/processed/"
                                 "aime24/test.parquet]"]
    problems += [f"benchmark file {b} does not exist; prepare it with experiments/prepare_data.py"
                 for b in files if not Path(b).exists()]
    if e.preset not in PRESETS:
        problems.append(f"eval.preset={e.preset!r} is unknown; use one of {', '.join(PRESETS)}")
    if e.backend not in ("hf", "vllm"):
        problems.append(f"eval.backend={e.backend!r} is unknown; use hf or vllm")
    if problems:  # every problem of the evaluation's own settings at once, before a model is loaded
        raise EvalError("\n".join(problems))
    model_cfg = OmegaConf.create(trained.config) if trained is not None else cfg
    weights, tok_dir = _model(model_cfg, log)
    if trained is not None and trained.hf_dir is not None:
        weights = trained.hf_dir
    tok = load_tokenizer(tok_dir)
    benches = [load_benchmark(b, tok, e.preset, e.limit, e.get("scorer", "released"), e.get("prompts", "released"),
                              e.max_new_tokens, int(model_cfg.data.max_new_tokens)) for b in files]
    step = trained.step if trained is not None else 0
    ident = f"{trained.run_id}@{step}" if trained else weights_digest(weights)
    rid = eval_run_id(str(model_cfg.learner.name), ident, [b.name for b in benches], int(e.n), e.preset, int(cfg.seed),
                      [e.get("scorer", "released"), e.get("prompts", "released"), e.max_new_tokens])
    run = RunLifecycle(cfg.paths.runs_dir, _run_config(cfg, trained), log, rid=rid, final_prefixes=("eval/", "time/"))
    if run.done is not None:
        return run.done.final_metrics
    if e.backend == "vllm":  # vLLM loads a Hugging Face folder itself: a local run's state is written as one
        model = export_hf(trained, weights, tok) if trained is not None and trained.state is not None else weights
    else:
        model = load_model(weights, pick_device(cfg.trainer.device)).eval()
        if trained is not None and trained.state is not None:
            model.load_state_dict(trained.state["model"])
    out: dict[str, float] = {}
    counts = {}
    with run.running(evaluated_run=trained.run_id if trained else None, evaluated_step=step) as tracker:
        for bench in benches:
            t0 = time.time()
            params = sampling(e.preset, bench.max_new_tokens, dict(e.get("sampling") or {}))
            res = run_benchmark(model, tok, bench, int(e.n), params, step_seed(cfg.seed, step, f"eval-{bench.name}"),
                                int(e.batch_size), e.backend)
            m = metrics(bench.name, res)
            m[f"time/eval/{bench.name}_s"] = time.time() - t0
            counts[bench.name] = {"n": res.n, "correct": res.correct}
            out.update(m)
            log(f"{bench.name}: pass@1 {100 * m[f'eval/{bench.name}/pass@1']:.1f}% over {len(res.correct)} problems, "
                f"n={res.n} ({bench.reward}, <= {bench.max_new_tokens} tokens)")
        (run.run_dir / "counts.json").write_text(json.dumps(counts, sort_keys=True))
        tracker.log(step, out)
    return out
