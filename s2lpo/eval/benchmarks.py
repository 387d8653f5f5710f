"""Evaluation on prepared benchmarks (verl parquet files): n samples per problem, pass@k for k ≤ n and
mean@n (the paper's Pass@1 over 16 samples), per benchmark, logged through the tracking layer.

As the released evaluation code does it (``eval.prompts=released``, ``eval.scorer=released``): sampling
presets ``nothink`` (T 0.7, top-p 0.8, top-k 20, presence penalty 1.5) and ``think`` (T 0.6, top-p 0.95,
top-k 20, no penalty); a response limit per benchmark (AIME 38,912 tokens, MATH-500 32,768, CommonsenseQA
8,192; ``eval.max_new_tokens`` overrides); the question with " /no_think" (or " /think") as the only user
message, CSQA with its choices and "Answer with only the letter (A, B, C, D, or E)."; answers extracted and
compared by ``s2lpo.rewards.released``. ``eval.prompts=prepared`` keeps the prepared files' prompts (the
training prompt's "reason step by step … \boxed{}"), ``eval.scorer=math_verify`` scores by math-verify.
Backends: ``hf`` (this package's KV-cached sampler on CPU or one GPU) and ``vllm`` (the GPU extra).
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


# the released evaluation's response limits (its BENCHMARK_MAX_TOKENS; CSQA: its own script's 8,192)
BENCHMARK_MAX_TOKENS = {"aime24": 38912, "aime25": 38912, "math500": 32768, "csqa": 8192}
DEFAULT_MAX_TOKENS = 32768
RELEASED_CSQA = "\n\nAnswer with only the letter (A, B, C, D, or E)."
SCORERS = {"released": {"mcq": "released_mcq"}, "math_verify": {"mcq": "mcq"}}  # else: released_math / math
PROMPTS = ("released", "prepared")


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
    max_new_tokens: int = DEFAULT_MAX_TOKENS


def released_messages(messages: list[dict], source: str, preset: str) -> list[dict]:
    """The released evaluation's user message for a prepared row: the bare question (our training suffix
    removed), CSQA's letter instruction, and Qwen3's " /no_think" (or " /think") switch."""
    from s2lpo.data.prepare import CSQA_SUFFIX, MATH_SUFFIX

    text = messages[-1]["content"]
    if source == "csqa":
        text = text.removesuffix(CSQA_SUFFIX) + RELEASED_CSQA
    else:
        text = text.removesuffix(MATH_SUFFIX)
    return [{"role": "user", "content": f"{text} {'/think' if preset == 'think' else '/no_think'}"}]


def reward_name(source: str, scorer: str) -> str:
    if scorer not in SCORERS:
        raise EvalError(f"eval.scorer={scorer!r} is unknown; use released (the paper's extraction) or math_verify")
    base = reward_for_source(source)
    if base in ("math", "dapo"):
        return "released_math" if scorer == "released" else "math"
    return SCORERS[scorer].get(base, base)


def render_prompt(messages: list[dict], tok, preset: str, released: bool = False) -> str:
    """The chat template when the tokenizer has one, else the messages' text as is (base models without a
    template, the toy family). Released prompts switch thinking in the message (" /no_think") and call the
    template with its defaults, as the released code does; prepared ones set Qwen3's ``enable_thinking``."""
    if getattr(tok, "chat_template", None):
        if released:
            return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                       enable_thinking=preset == "think")
    return "\n\n".join(m["content"] for m in messages)


def load_benchmark(path: str | Path, tok, preset: str, limit: int | None = None, scorer: str = "released",
                   prompts: str = "released", max_new_tokens: int | None = None,
                   default_tokens: int = DEFAULT_MAX_TOKENS) -> Benchmark:
    """A prepared file as a benchmark: its prompts (released or prepared), reward (by ``scorer``) and response
    limit (``max_new_tokens``, else the released one for its source, else ``default_tokens``)."""
    if prompts not in PROMPTS:
        raise EvalError(f"eval.prompts={prompts!r} is unknown; use released or prepared")
    path = Path(path)
    if not path.exists():
        raise EvalError(f"benchmark file {path} does not exist; prepare it with experiments/prepare_data.py")
    rows = load_prepared(path)
    if not rows:
        raise EvalError(f"{path}: no rows")
    source = rows[0]["data_source"]
    released = prompts == "released" and source in BENCHMARK_MAX_TOKENS
    problems = [Problem(render_prompt(released_messages(r["prompt"], source, preset) if released else r["prompt"],
                                      tok, preset, released), str(r["reward_model"]["ground_truth"]))
                for r in rows[:limit]]
    limit_tokens = int(max_new_tokens) if max_new_tokens else BENCHMARK_MAX_TOKENS.get(source, int(default_tokens))
    return Benchmark(source, reward_name(source, scorer), problems, limit_tokens)


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
    return {**out, **res.size(name)}


def eval_run_id(model_name: str, weights: str, benchmarks: list[str], n: int, preset: str, seed: int,
                extra: list | None = None) -> str:
    key = [model_name, weights, sorted(benchmarks), n, preset, seed] + ([extra] if extra else [])
    h = hashlib.sha256(json.dumps(key, default=str).encode()).hexdigest()
    return f"eval-{model_name}-{preset}-n{n}-s{seed}-{h[:8]}".replace("/", "_")
