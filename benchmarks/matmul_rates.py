"""This machine's fp32 matmul rate at a model's linear-layer shapes, for the compute bound of
``bench_trainer_vs_trl.py`` (measured there after every round)."""

from __future__ import annotations

import statistics
import time

import torch


def matmul_rate(hidden: int, inter: int, vocab: int, rows: int, threads: int, packed: bool = False) -> float:
    """fp32 GFLOP/s of the model's linear layers' shapes with ``rows`` tokens at a time (median of 5): through
    torch.mm, or with ``packed`` through the compiled kernels' matmul with the weights laid out beforehand (the
    decode step's and the prefill's, ``csrc/packed_gemm.cpp``; 0 where it is not built or not vectorised)."""
    from s2lpo.rollout.kernel import kernels

    torch.set_num_threads(threads)
    shapes = [(hidden, hidden)] * 4 + [(hidden, inter)] * 2 + [(inter, hidden), (hidden, vocab)]
    mats = [(torch.randn(rows, k), torch.randn(n, k)) for k, n in shapes]
    gemm = kernels() if packed else None
    if packed and (gemm is None or not gemm.packed_gemm_simd()):
        return 0.0
    if gemm is not None:
        mats = [(a, gemm.pack_weights([w]), len(w)) for a, w in mats]
    else:
        mats = [(a, w, len(w)) for a, w in mats]

    def product(a: torch.Tensor, w: torch.Tensor, n: int) -> torch.Tensor:
        return gemm.packed_mm(a, w, n) if gemm is not None else a @ w.T

    flops = sum(2 * rows * k * n for k, n in shapes)
    reps = max(1, int(2e9 // flops))
    for m in mats:
        product(*m)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(reps):
            for m in mats:
                product(*m)
        times.append(time.perf_counter() - t0)
    return flops * reps / statistics.median(times) / 1e9


def machine_rates(arch: list[int], args) -> tuple[float, float]:
    """The decode and training matmul rates of this machine now: the faster of torch.mm and the compiled kernels'
    packed matmul, at a decode step's rows and at 2,048 tokens (the training pass itself uses torch.mm: at its
    ~1-2 k rows the packed matmul measured 1.0-1.2x its rate forward, less with the backward's transposes)."""
    h, i, vocab = arch
    rows = args.prompts * args.group
    return (max(matmul_rate(h, i, vocab, rows, args.threads), matmul_rate(h, i, vocab, rows, args.threads, packed=True)),
            max(matmul_rate(h, i, vocab, 2048, args.threads),
                matmul_rate(h, i, vocab, 2048, args.threads, packed=True)))
