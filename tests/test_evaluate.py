"""Evaluation on prepared benchmark files: a toy model's logged pass@k equal the unbiased estimator on
its recorded per-problem correct counts; a trained run's checkpoint is evaluated into a linked eval run."""

import json

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from s2lpo.data.prepare import toy_rows, write_parquet
from s2lpo.eval.benchmarks import EvalError, sampling
from s2lpo.eval.driver import evaluate_model
from s2lpo.eval.passk import pass_at_k
from s2lpo.tracking.journal import read_history
from s2lpo.trainer.local import train
from s2lpo_testing import CACHE, CONF, QUICK, make_cfg

pytestmark = pytest.mark.slow


def eval_cfg(tmp_path, *overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose("evaluate", overrides=[f"paths.root_dir={tmp_path}", f"paths.cache_dir={CACHE}", *QUICK,
                                              *overrides])


def test_logged_pass_at_k_is_the_estimator_on_the_recorded_counts(tmp_path, tiny_family):
    bench = write_parquet(toy_rows(tiny_family.splits().eval[:12]), tmp_path / "toy" / "test.parquet")
    cfg = eval_cfg(tmp_path, f"eval.benchmarks=[{bench}]", "eval.n=8", "eval.max_new_tokens=24",
                   "eval.sampling={temperature: 1.0, top_p: 1.0, top_k: 0, presence_penalty: 0.0}")
    out = evaluate_model(cfg, log=lambda *_: None)
    [run_dir] = [p.parent for p in (tmp_path / "runs").glob("eval-*/manifest.json")]
    counts = json.loads((run_dir / "counts.json").read_text())["toy"]
    assert counts["n"] == 8 and len(counts["correct"]) == 12
    assert 0 < sum(counts["correct"]) < 8 * 12, "the tiny model should solve some, not all"
    for k in (1, 2, 4, 8):
        expect = sum(pass_at_k(8, c, k) for c in counts["correct"]) / 12
        assert out[f"eval/toy/pass@{k}"] == pytest.approx(expect, abs=1e-12)
    assert out["eval/toy/mean@8"] == pytest.approx(sum(counts["correct"]) / 96)
    assert out["eval/toy/mean@8"] == pytest.approx(out["eval/toy/pass@1"])
    assert read_history(run_dir)["eval/toy/pass@8"] == {0: pytest.approx(out["eval/toy/pass@8"])}
    m = json.loads((run_dir / "manifest.json").read_text())
    assert m["status"] == "finished" and m["config"]["kind"] == "eval"
    # a trained run's last checkpoint, into an eval run linked to it
    trained = train(make_cfg(tmp_path, *QUICK, "algorithm=grpo", "explorer=none", "algorithm.t_mix=0"),
                    log=lambda *_: None)
    cfg2 = eval_cfg(tmp_path, f"eval.benchmarks=[{bench}]", "eval.n=4", "eval.max_new_tokens=24",
                    f"eval.run_dir={trained.run_dir}")
    out2 = evaluate_model(cfg2, log=lambda *_: None)
    [linked] = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("eval-*/manifest.json")
                if json.loads(p.read_text()).get("evaluated_run") == trained.run_id]
    assert linked["evaluated_step"] == 4 and set(out2) >= {"eval/toy/pass@1", "eval/toy/pass@4", "eval/toy/mean@4"}
    assert linked["config"]["algorithm"]["name"] == "grpo"  # the eval run is tagged with its trained run's method
    # eval.backend=vllm loads weights from disk: a local run's checkpoint is written as a Hugging Face folder
    import torch
    from omegaconf import OmegaConf
    from transformers import AutoModelForCausalLM

    from s2lpo.eval.driver import _model
    from s2lpo.eval.trained import export_hf, load_trained
    from s2lpo.models.tokenizer import load_tokenizer

    t = load_trained(trained.run_dir)
    base, tok_dir = _model(OmegaConf.create(t.config), lambda *_: None)
    folder = export_hf(t, base, load_tokenizer(tok_dir))
    exported = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).state_dict()
    assert all(torch.equal(exported[k], v) for k, v in t.state["model"].items())


def test_presets_and_bad_input():
    """The sampler settings the evaluation really uses: Qwen3's published non-thinking / thinking settings, with
    ``eval.sampling`` overrides on top and the benchmark's response limit."""
    from s2lpo.rollout.sampler import SamplingParams

    assert sampling("nothink", 100) == SamplingParams(0.7, 0.8, 20, 100, presence_penalty=1.5)
    assert sampling("think", 38912) == SamplingParams(0.6, 0.95, 20, 38912, presence_penalty=0.0)
    assert sampling("think", 7, {"temperature": 1.0, "top_k": 0}) == SamplingParams(1.0, 0.95, 0, 7)
    with pytest.raises(EvalError, match="eval.preset='greedy' is unknown"):
        sampling("greedy", 10)


def test_missing_benchmark_file_is_named_before_loading(tmp_path):
    cfg = eval_cfg(tmp_path, f"eval.benchmarks=[{tmp_path}/nope.parquet]")
    with pytest.raises(EvalError, match="nope.parquet does not exist"):
        evaluate_model(cfg, log=lambda *_: None)


def test_a_family_evaluated_as_a_multirun_feeds_the_pass_at_k_figure(tmp_path, tiny_family):
    """`experiments/evaluate.py -m learner=...`: one eval run per model (kind=eval), drawn by a figure spec."""
    import subprocess
    import sys

    from s2lpo.analysis.regenerate import regenerate
    from s2lpo_testing import ROOT

    bench = write_parquet(toy_rows(tiny_family.splits().eval[:8]), tmp_path / "toy" / "test.parquet")
    cmd = [sys.executable, str(ROOT / "experiments/evaluate.py"), "-m", f"paths.root_dir={tmp_path}",
           f"paths.cache_dir={CACHE}", *QUICK, "learner=toy_s,toy_l", f"eval.benchmarks=[{bench}]", "eval.n=8",
           "eval.max_new_tokens=24"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    spec = tmp_path / "fig2.yaml"
    spec.write_text("kind: figure\nname: fig2\nfilter: {kind: eval}\npanels: [{y: 'eval/toy/pass@{k}'}]\n"
                    "x: k\nseries: learner\nlogx: 2\n")
    rep = regenerate([f"journal:{tmp_path}/runs"], spec, tmp_path / "out", tmp_path / "cache", warn=lambda *_: None)
    assert rep.runs == 2 and [p.name for p in rep.written] == ["fig2.png", "fig2.pdf"]
    from s2lpo.analysis.figures import curves
    from s2lpo.analysis.regenerate import load_runs, load_specs

    df, _ = load_runs([f"journal:{tmp_path}/runs"], tmp_path / "cache")
    lines = curves(load_specs(spec)[0], df, {"y": "eval/toy/pass@{k}"})
    assert sorted(lines) == ["toy-l", "toy-s"] and list(lines["toy-l"][0]) == [1, 2, 4, 8]
