"""Seconds per step of the local trainer against TRL's GRPOTrainer, same tiny model, prompts, group size and
lengths, on CPU, measured fairly in this one run and printed as ratios, with the step's compute bound.

    make bench        # = .venv-bench/bin/python benchmarks/bench_trainer_vs_trl.py (TRL lives in its own venv)
    python benchmarks/bench_trainer_vs_trl.py [--rounds 3] [--steps 12] [--size l] [--precision fp32|bf16] [--save F]

Fair: plain GRPO on both sides (no explorer), beta = 0 (no reference model), one optimizer step per batch,
TRL with gradient checkpointing off (its default is on: ~25 % of its step here). Each measurement runs in a
process of its own and the variants alternate, round after round, so a change of machine load lands on all
of them alike; each variant's number is the median over rounds of its per-round median step (step 1, the
warm-up, excluded), with the min-max over rounds and the 1-minute load average at each start; for ours also
the rollout phase alone (sampling s/step) against its share of the bound. Our two
savings with identical gradients are rows of their own:

- ``ours``: the local trainer as it runs;
- ``ours, no skip``: rows with zero advantage (no learning signal) kept in the forward and backward passes;
- ``ours, Python decode step``: decode steps through the lean path's Python code instead of its compiled step
  (``s2lpo.rollout.kernel``: the norms, RoPE, attention and SiLU of a step as loops between the matmuls);
- ``ours, Python training ops``: the training pass's norms, RoPE, attention and SiLU as tensor operations instead
  of the compiled ops (``s2lpo.rollout.train_kernel``: one call each way per piece, gradients by hand);
- ``ours, HF decode``: sampling through the model's Hugging Face forward instead of the lean decode path
  (``s2lpo.rollout.decode``: fused weights, a KV cache allocated once, finished rows leave the batch);
- ``ours, HF training forward``: the training pass through the model's Hugging Face forward instead of the lean
  one (``s2lpo.rollout.train_forward``: one pass over the distinct prompts and the responses, fused norms);
- ``ours, no prompt sharing``: each of a group's G rows prefills its prompt itself;
- ``ours, neither``: the work TRL does.

Compute bound: the FLOPs the step needs (2·params per prompt token prefilled once per prompt and per generated
token; 6·params per token of the rows with signal, each prompt counted once as the pass computes it), at this machine's fp32 matmul rate at the model's shapes
(measured here after every round, rows-wide for decoding and 2,048 tokens for training: the faster of torch.mm and
the compiled kernels' matmul with the weights laid out beforehand, as the decode step multiplies; the best of the
rounds). Also printed: the bound as stops 20-28 counted it (every row's prompt in the training pass) and each
round of ours against the bound at the rates measured right after it. ``--save F`` keeps every round's
measurements; ``--report F`` prints the table of a saved run again.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from matmul_rates import machine_rates

ROOT = Path(__file__).resolve().parents[1]
# (skip rows without signal, share the prompt's prefill, lean decode path, lean training forward, compiled decode
# step, compiled training ops)
VARIANTS = {"ours": (True, True, True, True, True, True),
            "ours, Python decode step": (True, True, True, True, False, True),
            "ours, Python training ops": (True, True, True, True, True, False),
            "ours, HF decode": (True, True, False, True, False, True),
            "ours, HF training forward": (True, True, True, False, True, True),
            "ours, no skip": (False, True, True, True, True, True),
            "ours, no prompt sharing": (True, False, True, True, True, True),
            "ours, neither": (False, False, True, True, True, True), "TRL (no grad. checkpointing)": None}


def setup_args(ap: argparse.ArgumentParser, steps: int, precisions: list[str]) -> None:
    """The run's setup on the command line, as :func:`compose_cfg` reads it (this benchmark's and
    ``step_profile.py``'s)."""
    ap.add_argument("--family", default="toy")
    ap.add_argument("--size", default="l")
    ap.add_argument("--steps", type=int, default=steps)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", choices=precisions, default="fp32", help="the same on both sides")
    ap.add_argument("--cache", default=str(ROOT / ".cache"))


def compose_cfg(root: Path, cache: Path, args) -> object:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        return compose("train", overrides=[
            f"paths.root_dir={root}", f"paths.cache_dir={cache}", f"family={args.family}",
            f"learner=toy_{args.size}", "algorithm=grpo", "explorer=none", "logger=journal",
            f"trainer.total_steps={args.steps}", f"trainer.eval_every={10 * args.steps}",
            f"trainer.checkpoint_every={10 * args.steps}", "trainer.eval_problems=8", "trainer.eval_samples=1",
            "trainer.final_eval_samples=1", f"trainer.threads={args.threads}",
            f"algorithm.group_size={args.group}", f"data.prompts_per_step={args.prompts}",
            f"data.max_new_tokens={args.max_new_tokens}", f"trainer.lr={args.lr}",
            f"trainer.precision={args.precision}",
        ])


def run_ours(cfg, skip: bool, share: bool, fast: bool, lean: bool, compiled: bool, compiled_ops: bool) -> dict:
    import s2lpo.rollout.batch as batch
    import s2lpo.rollout.decode as decode
    import s2lpo.rollout.sampler as sampler
    import s2lpo.rollout.train_forward as train_forward
    import s2lpo.trainer.local as local
    from s2lpo.models.resolve import model_params, model_path, toy_family
    from s2lpo.tracking.journal import read_history
    from s2lpo.trainer.update import train_step

    sampler.SHARE_PREFILL = share
    sampler.FAST_DECODE = fast
    decode.COMPILED_STEP = compiled
    train_forward.COMPILED_OPS = compiled_ops
    batch.LEAN_FORWARD = lean
    needed: list[int] = []  # per step: the tokens its training pass needs (rows with signal, prompts once)

    def step(learner, ref, opt, rows, *a, **k):
        needed.append(signal_tokens(rows))
        return train_step(learner, ref, opt, rows, *a, skip_zero_advantage=skip, **k)

    local.train_step = step
    res = local.train(cfg, log=lambda *_: None)
    h = read_history(res.run_dir)
    steps = sorted(s for s in h["time/step_s"] if s > 1)
    params = model_params(cfg, "learner")
    flops = h["compute/train/flops_cum"]
    work = [{"generated": h["compute/learner/tokens"][s], "trained": (flops[s] - flops[s - 1]) / (6 * params),
             "signal": h["train/rows_with_signal"][s], "needed": needed[s - 1]} for s in steps]
    arch = json.loads((model_path(cfg, "learner", toy_family(cfg, log=lambda *_: None)) / "config.json").read_text())
    return {"steps": [h["time/step_s"][s] for s in steps], "sampling": [h["time/generate_s"][s] for s in steps],
            "work": work, "params": params,
            "arch": [arch["hidden_size"], arch["intermediate_size"], arch["vocab_size"]]}


def signal_tokens(rows) -> int:
    """The tokens a training pass over a step's rows needs: those of the rows with signal (a reward different from
    their group's mean: a non-zero advantage), each prompt counted once (the rows of a group share it)."""
    groups: dict[int, list[float]] = {}
    for r in rows:
        groups.setdefault(r.group, []).append(r.reward)
    sig = [r for r in rows if abs(r.reward - sum(groups[r.group]) / len(groups[r.group])) > 1e-6]
    return sum(len(p) for p in {tuple(r.prompt_ids) for r in sig}) + sum(len(r.response_ids) for r in sig)


def run_trl(cfg, args) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from s2lpo.models.tokenizer import load_tokenizer
    from s2lpo.rewards import get_reward_fn
    from s2lpo.trainer.setup import resolve

    res = resolve(cfg, log=lambda *_: None)
    tok = load_tokenizer(res.tokenizer_path)
    model = AutoModelForCausalLM.from_pretrained(res.learner_path, dtype=torch.float32)
    probs = res.train[: args.prompts * (args.steps + 1)]
    ds = Dataset.from_list([{"prompt": p.prompt, "answer": str(p.answer)} for p in probs])
    rf = get_reward_fn(cfg.data.reward)

    def reward(completions, answer, **_):
        return [rf(c, a) for c, a in zip(completions, answer)]

    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t0)

    conf = GRPOConfig(
        output_dir=tempfile.mkdtemp(), use_cpu=True, bf16=args.precision == "bf16", fp16=False, report_to="none",
        save_strategy="no", logging_steps=10**6, max_steps=args.steps, learning_rate=args.lr,
        num_generations=args.group, per_device_train_batch_size=args.group * args.prompts,
        max_completion_length=args.max_new_tokens, temperature=1.0, beta=0.0, shuffle_dataset=False,
        dataloader_num_workers=0, seed=0, disable_tqdm=True, gradient_checkpointing=False,
    )
    GRPOTrainer(model=model, reward_funcs=reward, args=conf, train_dataset=ds, processing_class=tok,
                callbacks=[Timer()]).train()
    return {"steps": times[1:]}


def worker(args) -> None:
    """One measurement, in a process of its own: its step times (and our work per step) as JSON on stdout."""
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as root:
        cfg = compose_cfg(Path(root), Path(args.cache), args)
        flags = VARIANTS[args.worker]
        out = run_trl(cfg, args) if flags is None else run_ours(cfg, *flags)
    print("RESULT " + json.dumps(out))


def measure(variant: str, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", variant, *sys.argv[1:]]
    load = os.getloadavg()[0]
    out = subprocess.run(cmd, capture_output=True, text=True)
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"{variant} failed:\n{out.stderr[-3000:]}")
    return {**json.loads(line[7:]), "load": load}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    setup_args(ap, steps=12, precisions=["fp32", "bf16"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--save", help="write every round's measurements and rates here (JSON)")
    ap.add_argument("--report", help="print the table of a run saved with --save instead of measuring")
    ap.add_argument("--worker", choices=list(VARIANTS), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.report:
        saved = json.loads(Path(args.report).read_text())
        return report(saved["runs"], [tuple(r) for r in saved["rates"]], argparse.Namespace(**saved["args"]))
    try:
        import trl  # noqa: F401
    except ImportError:
        sys.exit("TRL is not installed here: run `make bench` (TRL lives in .venv-bench, see the Makefile)")
    runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    rates: list[tuple[float, float]] = []  # (decode, training) GFLOP/s, measured after every round
    for r in range(args.rounds):  # alternate: each round runs every variant once
        for v in VARIANTS:
            runs[v].append(measure(v, args))
            print(f"round {r + 1}/{args.rounds} {v}: {statistics.median(runs[v][-1]['steps']):.3f} s/step "
                  f"(load {runs[v][-1]['load']:.2f})", file=sys.stderr)
        rates.append(machine_rates(runs["ours"][0]["arch"], args))
        print(f"round {r + 1}/{args.rounds} matmul rates: {rates[-1][0]:.0f} GFLOP/s at {args.prompts * args.group} "
              f"rows, {rates[-1][1]:.0f} at 2,048", file=sys.stderr)
    if args.save:
        Path(args.save).write_text(json.dumps({"args": vars(args), "runs": runs, "rates": rates}))
    report(runs, rates, args)


def report(runs: dict[str, list[dict]], rates: list[tuple[float, float]], args) -> None:
    """The table: every variant's median over rounds against TRL and against the compute bound of ours."""
    med = {v: [statistics.median(m["steps"]) for m in ms] for v, ms in runs.items()}
    trl_s = statistics.median(med["TRL (no grad. checkpointing)"])
    # the compute bound of our step (the work it needs) at what this machine's matmuls can do: the best rate of
    # the rounds (a rate measured once read half its usual value when a neighbour was busy)
    decode_rate, train_rate = max(d for d, _ in rates), max(t for _, t in rates)
    rows = args.prompts * args.group
    works = [w for m in runs["ours"] for w in m["work"]]
    p = runs["ours"][0]["params"]
    gen = statistics.median(w["generated"] for w in works)
    trained = statistics.median(w["trained"] for w in works)
    signal = statistics.median(w["signal"] for w in works)
    needed = statistics.median(w["needed"] for w in works)
    prompt_tokens = (trained - gen) / rows * args.prompts  # each prompt prefilled once

    def bound_at(decode: float, train: float) -> tuple[float, float]:  # (sampling's share, the whole step's) in s
        share = 2 * p * (prompt_tokens + gen) / (decode * 1e9)
        return share, share + 6 * p * needed / (train * 1e9)

    gen_bound, bound = bound_at(decode_rate, train_rate)
    # the bound of stops 20-28, which counted each row's prompt in the training pass (~30 % more tokens than it needs)
    old_bound = gen_bound + 6 * p * signal * trained / (train_rate * 1e9)
    print(f"model toy-{args.size} ({p / 1e6:.2f}M params), {args.prompts} prompts x {args.group} rollouts, "
          f"<= {args.max_new_tokens} new tokens, {args.threads} threads, {args.precision}; {args.rounds} rounds "
          f"alternating, {args.steps - 1} timed steps each")
    print(f"{'variant':32s} {'s/step (median, min-max of rounds)':36s} {'TRL / it':>9s} {'it / bound':>11s}"
          f"  {'sampling s/step':>16s} {'/ its bound':>11s}")
    for v, ms in med.items():
        m = statistics.median(ms)
        samp = ""
        if "sampling" in runs[v][0]:  # the rollout phase alone (ours only): what the decode variants change
            g = statistics.median(statistics.median(r["sampling"]) for r in runs[v])
            samp = f"  {g:16.3f} {g / gen_bound:10.2f}x"
        print(f"{v:32s} {m:7.3f}  [{min(ms):.3f}, {max(ms):.3f}]{'':14s} {trl_s / m:8.2f}x {m / bound:10.2f}x{samp}")
    print(f"{'compute bound of ours':32s} {bound:7.3f}  ({gen:.0f} generated + {prompt_tokens:.0f} prompt tokens "
          f"at {decode_rate:.0f} GFLOP/s: {gen_bound:.3f} s; {needed:.0f} tokens to train (the rows with signal, "
          f"{signal:.0%} of them, each prompt once) at {train_rate:.0f} GFLOP/s: {bound - gen_bound:.3f} s)")
    print(f"{'  counting every row prompt':32s} {old_bound:7.3f}  (the bound of earlier runs: {signal:.0%} of "
          f"{trained:.0f} tokens with every row's prompt; ours / it: "
          f"{statistics.median(med['ours']) / old_bound:.2f}x)")
    # what the goal (>= 3x TRL and <= 1.5x the bound) asks of this machine: 3x TRL below the bound cannot be reached
    # by any implementation of this work at this matmul rate
    need = trl_s / 3
    print(f"3x TRL here: {need:.3f} s/step = {need / bound:.2f}x the bound "
          f"({'reachable in principle' if need >= bound else 'below the bound: unreachable at this matmul rate'}); "
          f"1.5x the bound: {1.5 * bound:.3f} s/step = {trl_s / (1.5 * bound):.2f}x TRL")
    # each round against the bound at the rates measured right after it (the machine's state then): how much of
    # the ratio's spread between runs is the machine's
    paired = [m / bound_at(d, t)[1] for m, (d, t) in zip(med["ours"], rates)]
    print(f"ours / bound at each round's own rates: {', '.join(f'{x:.2f}x' for x in paired)} "
          f"(median {statistics.median(paired):.2f}x)")
    loads = [m["load"] for ms in runs.values() for m in ms]
    print(f"1-min load average at the starts: {min(loads):.2f}-{max(loads):.2f} (2 threads per run)")


if __name__ == "__main__":
    sys.exit(main())
