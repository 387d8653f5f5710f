"""Evaluation on prepared benchmarks (verl parquet files): n samples per problem, pass@k for k ≤ n and
mean@n (the paper's Pass@1 over 16 samples), per benchmark, logged through the tracking layer.

Sampling presets as in the released evaluation code: ``nothink`` (T 0.7, top-p 0.8, top-k 20,
presence penalty 1.5) and ``think`` (T 0.6, top-p 0.95, top-k 20, no penalty). Backends: ``hf`` (this
package's KV-cached sampler on CPU or one GPU) and ``vllm`` (the GPU extra).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from s2lpo.data.prepare import load_prepared, reward_for_source
from s2lpo.eval.runner import EvalResult, evaluate, power_of_two_ks
from s2lpo.rewards import get_reward_fn
from s2lpo.rollout.sampler import SamplingParams

PRESETS = {
    "nothink": {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "presence_penalty": 1.5},
    "think": {"temperature": 0.6, "top_p": 0.95, "top_k": 20, "presence_penalty": 0.0},
}


class EvalError(ValueError):
    pass


@dataclass(frozen=True)
class Problem:
    prompt: str
    answer: str


@dataclass
class Benchmark:
    name: str
    reward: str
    problems: list[Problem]


def render_prompt(messages: list[dict], tok, preset: str) -> str:
    """The chat template when the tokenizer has one (Qwen3's: ``enable_thinking`` off for ``nothink``),
    else the messages' text as is (base models without a template, the toy family)."""
    if getattr(tok, "chat_template", None):
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                       enable_thinking=preset == "think")
    return "\n\n".join(m["content"] for m in messages)


def load_benchmark(path: str | Path, tok, preset: str, limit: int | None = None) -> Benchmark:
    path = Path(path)
    if not path.exists():
        raise EvalError(f"benchmark file {path} does not exist; prepare it with experiments/prepare_data.py")
    rows = load_prepared(path)
    if not rows:
        raise EvalError(f"{path}: no rows")
    source = rows[0]["data_source"]
    reward = reward_for_source(source)
    problems = [Problem(render_prompt(r["prompt"], tok, preset), str(r["reward_model"]["ground_truth"]))
                for r in rows[:limit]]
    return Benchmark(source, reward, problems)


def sampling(preset: str, max_new_tokens: int, overrides: dict | None = None) -> SamplingParams:
    if preset not in PRESETS:
        raise EvalError(f"eval.preset={preset!r} is unknown; use one of {', '.join(PRESETS)}")
    return SamplingParams(**{**PRESETS[preset], **(overrides or {})}, max_new_tokens=max_new_tokens)


def run_benchmark(model, tok, bench: Benchmark, n: int, params: SamplingParams, seed: int, batch_size: int,
                  backend: str = "hf") -> EvalResult:
    if backend == "vllm":
        return _vllm(model, bench, n, params, seed)
    if backend != "hf":
        raise EvalError(f"eval.backend={backend!r} is unknown; use hf or vllm")
    return evaluate(model, tok, bench.problems, get_reward_fn(bench.reward), n, params, seed, batch_size)


def _vllm(model_path, bench: Benchmark, n: int, params: SamplingParams, seed: int) -> EvalResult:
    try:
        from vllm import LLM
        from vllm import SamplingParams as VParams
    except ImportError:
        raise EvalError("eval.backend=vllm needs vLLM: pip install -e '.[gpu]' on a GPU machine") from None
    llm = LLM(str(model_path), seed=seed)
    sp = VParams(n=n, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k or -1,
                 presence_penalty=params.presence_penalty, max_tokens=params.max_new_tokens, seed=seed)
    outs = llm.generate([p.prompt for p in bench.problems], sp)
    fn = get_reward_fn(bench.reward)
    correct = [sum(int(fn(c.text, p.answer) > 0) for c in o.outputs) for p, o in zip(bench.problems, outs)]
    return EvalResult(n, correct, sum(len(c.token_ids) for o in outs for c in o.outputs))


def metrics(name: str, res: EvalResult) -> dict[str, float]:
    """``eval/<benchmark>/pass@<k>`` for k = 1, 2, 4, …, n (and n), and ``mean@<n>``."""
    ks = sorted(set(power_of_two_ks(res.n)) | {res.n})
    out = {f"eval/{name}/pass@{k}": v for k, v in res.curve(ks).items()}
    out[f"eval/{name}/mean@{res.n}"] = sum(res.correct) / (res.n * len(res.correct))
    return out


def eval_run_id(model_name: str, weights: str, benchmarks: list[str], n: int, preset: str, seed: int) -> str:
    h = hashlib.sha256(json.dumps([model_name, weights, sorted(benchmarks), n, preset, seed]).encode()).hexdigest()
    return f"eval-{model_name}-{preset}-n{n}-s{seed}-{h[:8]}".replace("/", "_")
