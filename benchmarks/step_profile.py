"""Where one step of the local trainer goes, against the matmul time the compute bound counts: the training pass
op by op (torch's profiler, each matmul's FLOPs from its shapes) and the sampling call split into its matmuls
and the rest, on the benchmark's setup (toy-l, 8 prompts x 8 rollouts, <= 48 new tokens, fp32).

    python benchmarks/step_profile.py [--steps 8] [--size l] [--threads 2]

``bench_trainer_vs_trl.py`` says how far a step is from its bound; this says what the rest is made of. It trains
``--steps`` steps (keeping each step's rows), replays the training steps under the profiler, and times the
sampling calls of those steps' prompts again, the decode step's matmuls alone (the compiled kernels' packed
matmul at each step's rows) beside them. Everything runs in this one process: its spread between repetitions is
printed, so a busy machine shows.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_trainer_vs_trl import compose_cfg, setup_args  # noqa: E402

MATMULS = ("aten::mm", "aten::addmm")
# our compiled ops (train_kernel) by what they are; anything else is "other ops"
GROUPS = {"Attention": "attention", "AttentionBackward": "attention", "SiluMul": "SiLU·up", "SiluMulBackward": "SiLU·up",
          "RMSNorm": "RMSNorm", "RMSNormBackward": "RMSNorm", "aten::_fused_adamw_": "optimizer",
          "aten::_foreach_norm": "grad clip", "aten::linalg_vector_norm": "grad clip", "aten::_foreach_mul_": "grad clip"}


def capture(args) -> tuple:
    """Train ``args.steps`` steps; return what a replay of their training passes and sampling calls needs."""
    import s2lpo.trainer.local as local
    from s2lpo.trainer.update import train_step

    kept: dict = {"rows": []}

    def step(learner, ref, opt, rows, *a, **k):
        kept["rows"].append(rows)
        kept["call"] = (learner, ref, opt, a, k)
        return train_step(learner, ref, opt, rows, *a, **k)

    local.train_step = step
    with tempfile.TemporaryDirectory() as root:
        cfg = compose_cfg(Path(root), Path(args.cache), args)
        local.train(cfg, log=lambda *_: None)
    return kept["call"], kept["rows"][1:]  # step 1 warms up


def profile_training(call, sets, reps: int) -> dict:
    """Per step: wall ms, and self ms per op group with matmul GFLOP/s (one profiled pass over the sets)."""
    from torch.profiler import ProfilerActivity, profile

    from s2lpo.trainer.update import train_step

    learner, ref, opt, a, k = call
    walls = []
    for _ in range(reps):
        for rows in sets:
            t0 = time.perf_counter()
            train_step(learner, ref, opt, rows, *a, **k)
            walls.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for rows in sets:
            train_step(learner, ref, opt, rows, *a, **k)
    profiled = (time.perf_counter() - t0) / len(sets) * 1e3
    ms: dict[str, float] = defaultdict(float)
    other: dict[str, float] = defaultdict(float)  # the "other ops" by name
    flops = 0.0
    for e in prof.events():
        if e.cpu_parent is not None and e.cpu_parent.name in MATMULS:  # a matmul's own allocations
            ms["matmul"] += e.self_cpu_time_total / 1e3
        elif e.name in MATMULS:
            shapes = [s for s in e.input_shapes if s]
            (m, kk), (_, n) = shapes[-2], shapes[-1]
            flops += 2 * m * kk * n
            ms["matmul"] += e.self_cpu_time_total / 1e3
        else:
            ms[GROUPS.get(e.name, "other ops")] += e.self_cpu_time_total / 1e3
            if e.name not in GROUPS:
                other[e.name] += e.self_cpu_time_total / 1e3 / len(sets)
    per = {g: v / len(sets) for g, v in ms.items()}
    return {"wall": statistics.median(walls) * 1e3, "spread": (min(walls) * 1e3, max(walls) * 1e3), "ms": per,
            "profiled": profiled, "other": sorted(other.items(), key=lambda kv: -kv[1]),
            "gflops": flops / (ms["matmul"] / 1e3) / 1e9 if ms["matmul"] else 0.0}


def profile_sampling(learner, sets, reps: int, max_new_tokens: int) -> dict:
    """Per sampling call of the same prompts (8 x 8 rows): wall ms, and the decode matmuls alone at its rows."""
    import s2lpo.rollout.sampler as sampler
    from s2lpo.rollout.kernel import kernels

    gemm = kernels()
    contexts = [[r.prompt_ids for r in rows] for rows in sets]
    walls, lengths = [], []
    params = sampler.SamplingParams(1.0, 1.0, 0, max_new_tokens)
    eos, pad = learner.config.eos_token_id, learner.config.pad_token_id
    for rep in range(reps):
        for i, ctx in enumerate(contexts):
            gen = torch.Generator().manual_seed(rep * 1000 + i)
            t0 = time.perf_counter()
            out = sampler.sample(learner, ctx, params, eos, pad, gen, len(ctx))
            walls.append(time.perf_counter() - t0)
            lengths.append(sorted((len(s.tokens) for s in out), reverse=True))
    # the matmuls of those calls alone: at each decode step, the rows still going, through the packed weights
    dec = sampler.fast_decoder(learner)
    weights = dec.step_matmul_weights() if gemm is not None and dec is not None and dec.kernel is not None else []
    t_mm, flops = [], []
    xs = {w.shape[1]: torch.randn(max(len(c) for c in contexts), w.shape[1]) for w in weights}
    for lens in lengths[: len(contexts)]:
        t0, f = time.perf_counter(), 0
        for t in range(lens[0]):
            rows = sum(1 for n in lens if n > t)
            for w in weights:
                gemm.packed_mm(xs[w.shape[1]][:rows], w, w.shape[0] * w.shape[2])
                f += 2 * rows * w.shape[1] * w.shape[0] * w.shape[2]
        t_mm.append(time.perf_counter() - t0)
        flops.append(f / t_mm[-1] / 1e9)
    return {"wall": statistics.median(walls) * 1e3, "spread": (min(walls) * 1e3, max(walls) * 1e3),
            "matmul": statistics.median(t_mm) * 1e3 if t_mm else 0.0,
            "gflops": statistics.median(flops) if flops else 0.0,
            "tokens": statistics.median(sum(x) for x in lengths)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    setup_args(ap, steps=8, precisions=["fp32"])
    ap.add_argument("--reps", type=int, default=3, help="timed passes over the steps (the profiled one is extra)")
    ap.add_argument("--ops", type=int, default=0, help="also list the N costliest of the training pass's other ops")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    call, sets = capture(args)
    tr = profile_training(call, sets, args.reps)
    sa = profile_sampling(call[0], sets, args.reps, args.max_new_tokens)
    ops = sum(tr["ms"].values())
    print(f"toy-{args.size}, {args.prompts} prompts x {args.group} rollouts, {args.threads} threads, fp32; "
          f"{len(sets)} steps x {args.reps} passes (ms per step; [min, max] of the passes' steps)")
    print(f"training pass      {tr['wall']:7.1f}  [{tr['spread'][0]:.0f}, {tr['spread'][1]:.0f}]")
    print(f"  matmul           {tr['ms']['matmul']:7.1f}  ({tr['gflops']:.0f} GFLOP/s in the pass)")
    for g, v in sorted(tr["ms"].items(), key=lambda kv: -kv[1]):
        if g != "matmul":
            print(f"  {g:16s} {v:7.1f}")
    for name, v in tr["other"][: args.ops]:
        print(f"    {name:40s} {v:6.2f}")
    print(f"  outside ops      {tr['profiled'] - ops:7.1f}  (Python, autograd: the profiled pass ({tr['profiled']:.0f} "
          f"ms a step, the profiler's own cost in it) less its ops ({ops:.0f}))")
    print(f"sampling call      {sa['wall']:7.1f}  [{sa['spread'][0]:.0f}, {sa['spread'][1]:.0f}], "
          f"{sa['tokens']:.0f} tokens")
    print(f"  decode matmuls   {sa['matmul']:7.1f}  (alone, at each step's rows: {sa['gflops']:.0f} GFLOP/s, incl. "
          f"each call's cost)")
    print(f"  the rest         {sa['wall'] - sa['matmul']:7.1f}  (attention, norms, SiLU, draws, prefill, packing)")


if __name__ == "__main__":
    main()
