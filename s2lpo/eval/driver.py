"""``experiments/evaluate.py``: evaluate a model of a family, or a trained run's last checkpoint, on
prepared benchmarks; log ``eval/<benchmark>/pass@<k>`` and ``mean@<n>`` to an eval run (tag
``kind: eval``, linked to the trained run by ``evaluated_run``) through the tracking layer, and keep
the per-problem correct counts (``counts.json``) beside its journal."""

from __future__ import annotations

import json
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from s2lpo.config.validate import validate
from s2lpo.eval.benchmarks import EvalError, eval_run_id, load_benchmark, metrics, run_benchmark, sampling
from s2lpo.models.family import build_family, weights_digest
from s2lpo.models.tokenizer import load_tokenizer
from s2lpo.tracking.run import Manifest
from s2lpo.tracking.sinks import make_tracker
from s2lpo.trainer.setup import abspath, family_recipe, model_path, pick_device, step_seed


def _model(cfg: DictConfig, log) -> tuple[Path, Path]:
    """(weights dir, tokenizer dir) of ``learner``."""
    if cfg.learner.family == "toy":
        family = build_family(family_recipe(cfg), abspath(cfg.paths.cache_dir), log=log)
        path = model_path(cfg, "learner", family)
    else:
        path = abspath(cfg.learner.path)
    return path, abspath(cfg.learner.tokenizer) if cfg.learner.tokenizer else path


def evaluate_model(cfg: DictConfig, log=print) -> dict[str, float]:
    e = cfg.eval
    validate(cfg)
    if not e.benchmarks:
        raise EvalError("eval.benchmarks is empty; list prepared files, e.g. eval.benchmarks=[data/processed/aime24/"
                        "test.parquet]")
    params = sampling(e.preset, int(e.max_new_tokens), dict(e.get("sampling") or {}))
    for b in e.benchmarks:
        if not Path(str(b)).exists():
            raise EvalError(f"benchmark file {b} does not exist; prepare it with experiments/prepare_data.py")
    weights, tok_dir = _model(cfg, log)
    tok = load_tokenizer(tok_dir)
    benches = [load_benchmark(b, tok, e.preset, e.limit) for b in e.benchmarks]
    trained, step, state = None, 0, None
    if e.run_dir:
        from s2lpo.trainer.checkpoint import latest_checkpoint, load_checkpoint

        run_dir = abspath(e.run_dir)
        ckpt = latest_checkpoint(run_dir)
        if ckpt is None:
            raise EvalError(f"eval.run_dir={run_dir} has no checkpoint to evaluate")
        state = load_checkpoint(ckpt)
        trained, step = Manifest(run_dir).data.get("run_id", run_dir.name), int(state["step"])
    ident = f"{trained}@{step}" if trained else weights_digest(weights)
    rid = eval_run_id(cfg.learner.name, ident, [b.name for b in benches], int(e.n), e.preset, int(cfg.seed))
    run_dir = abspath(cfg.paths.runs_dir) / rid
    run_dir.mkdir(parents=True, exist_ok=True)
    container = OmegaConf.to_container(cfg, resolve=True)
    container["kind"] = "eval"
    manifest = Manifest(run_dir)
    if manifest.status == "finished":
        log(f"evaluation {rid} already done: {run_dir}")
        return manifest.data.get("final_metrics", {})
    manifest.start(container, rid)
    manifest.update(evaluated_run=trained, evaluated_step=step)
    if e.backend == "vllm":
        model = weights  # vLLM loads the weights itself
    else:
        from s2lpo.trainer.local import load_model

        model = load_model(weights, pick_device(cfg.trainer.device)).eval()
        if state is not None:
            model.load_state_dict(state["model"])
    tracker = make_tracker(container, run_dir, rid, warn=log, on_open=manifest.record_tracking)
    out: dict[str, float] = {}
    counts = {}
    status = "failed"
    try:
        for bench in benches:
            t0 = time.time()
            res = run_benchmark(model, tok, bench, int(e.n), params, step_seed(cfg.seed, step, f"eval-{bench.name}"),
                                int(e.batch_size), e.backend)
            m = metrics(bench.name, res)
            m[f"time/eval/{bench.name}_s"] = time.time() - t0
            counts[bench.name] = {"n": res.n, "correct": res.correct}
            out.update(m)
            log(f"{bench.name}: pass@1 {100 * m[f'eval/{bench.name}/pass@1']:.1f}% over {len(res.correct)} problems, "
                f"n={res.n}")
        (run_dir / "counts.json").write_text(json.dumps(counts, sort_keys=True))
        tracker.log(step, out)
        status = "finished"
    finally:
        manifest.update(status=status, final_metrics=out, ended_at=time.time())
        manifest.update(undelivered=tracker.close(status))
    return out
