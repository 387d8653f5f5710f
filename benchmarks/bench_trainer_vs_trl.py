"""Steps per second of the local trainer against TRL's GRPOTrainer, same tiny model, prompts, group size
and lengths, on CPU, both measured in this one run and printed as a ratio.

    python benchmarks/bench_trainer_vs_trl.py [--family toy|toy_tiny] [--size l] [--steps 12]

Plain GRPO on both sides (no explorer), fp32, beta=0 (no reference model), one optimizer step per batch.
Step 1 is warm-up and excluded on both sides.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]


def compose_cfg(root: Path, cache: Path, args) -> object:
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


def bench_ours(cfg) -> list[float]:
    from s2lpo.tracking.journal import read_history
    from s2lpo.trainer.local import train

    res = train(cfg, log=lambda *_: None)
    steps = read_history(res.run_dir)["time/step_s"]
    return [steps[s] for s in sorted(steps) if s > 1]


def bench_trl(cfg, args) -> list[float]:
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

    out = tempfile.mkdtemp()
    conf = GRPOConfig(
        output_dir=out, use_cpu=True, bf16=args.precision == "bf16", fp16=False, report_to="none", save_strategy="no",
        logging_steps=10**6, max_steps=args.steps, learning_rate=args.lr, num_generations=args.group,
        per_device_train_batch_size=args.group * args.prompts, max_completion_length=args.max_new_tokens,
        temperature=1.0, beta=0.0, shuffle_dataset=False, dataloader_num_workers=0, seed=0,
        disable_tqdm=True,
    )
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=conf, train_dataset=ds, processing_class=tok,
                          callbacks=[Timer()])
    trainer.train()
    return times[1:]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", default="toy")
    ap.add_argument("--size", default="l")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="the same on both sides")
    ap.add_argument("--cache", default=str(ROOT / ".cache"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as root:
        cfg = compose_cfg(Path(root), Path(args.cache), args)
        ours = bench_ours(cfg)
        trl = bench_trl(cfg, args)
    o, t = statistics.median(ours), statistics.median(trl)
    print(f"model toy-{args.size} ({args.family}), {args.prompts} prompts x {args.group} rollouts, "
          f"<= {args.max_new_tokens} new tokens, {args.threads} threads, {args.precision}, median of {len(ours)} steps")
    print(f"  s2lpo local trainer : {o:.3f} s/step  ({1 / o:.2f} steps/s)")
    print(f"  TRL GRPOTrainer     : {t:.3f} s/step  ({1 / t:.2f} steps/s)")
    print(f"  speed-up            : {t / o:.2f}x TRL (goal >= 1.5x)")


if __name__ == "__main__":
    sys.exit(main())
