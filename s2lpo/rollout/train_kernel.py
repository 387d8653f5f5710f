"""The training pass's element-wise parts as autograd functions over the compiled ops (``csrc/train_ops.cpp``,
``csrc/train_attention.cpp``, built with the decode step by :mod:`s2lpo.rollout.kernel`).

Between a layer's matmuls the lean training forward (:mod:`s2lpo.rollout.train_forward`) is ~40 small tensor
operations forward and more backward: on toy-l they cost as much as a third of the training pass, its matmuls the
rest (measured: RMSNorm 2.5 ms a call forward and backward, q/k norms with RoPE 7.3 ms, attention 6.1 ms, SiLU·up
2.7 ms, against 30 ms of matmuls a layer). Here each is one call forward and one backward, with the gradients
written out by hand — the matmuls stay with autograd and MKL. A training pass of 48 rows of toy-l on 2 cores:
0.28 s against 0.36 s through the tensor operations (1.28x; its matmuls alone ~0.21 s). ``tests/test_train_kernel.py``
checks every gradient against finite differences (float64) and the whole pass against the Python operations
(float32).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import torch

from s2lpo.rollout.kernel import kernels


@dataclass(frozen=True)
class Layout:
    """Where the tokens of the flat matrix sit (``train_forward``): ``prompts`` × ``P`` prompt tokens, then each
    row's ``row_len[b]`` response tokens (at most ``R1``, one row after the other); which are real (``preal``
    [prompts, P], ``rreal`` [rows, P + R1], bool) and each row's prompt (``row_prompt`` [rows], int64)."""

    row_prompt: torch.Tensor
    row_len: torch.Tensor
    preal: torch.Tensor
    rreal: torch.Tensor
    P: int
    heads: int
    kv_heads: int

    @property
    def R1(self) -> int:
        return self.rreal.shape[1] - self.P


def ops_for(x: torch.Tensor) -> ModuleType | None:
    """The compiled ops when they serve ``x``: float32 on the CPU, outside autocast (bf16 keeps the Python ops)."""
    if x.dtype != torch.float32 or x.device.type != "cpu" or torch.is_autocast_enabled("cpu"):
        return None
    return kernels()


class RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
        y, r = kernels().rms_norm_fwd(x.contiguous(), w.contiguous(), eps)
        ctx.save_for_backward(x, w, r)
        return y

    @staticmethod
    def backward(ctx, gy: torch.Tensor):
        x, w, r = ctx.saved_tensors
        gx, gw = kernels().rms_norm_bwd(gy, x.contiguous(), w.contiguous(), r)
        return gx, gw, None


class SiluMul(torch.autograd.Function):
    """``silu(gate) · up`` of ``gu = [gate | up]`` (the last dimension halved)."""

    @staticmethod
    def forward(ctx, gu: torch.Tensor) -> torch.Tensor:
        gu = gu.contiguous()
        ctx.save_for_backward(gu)
        return kernels().silu_mul_fwd(gu)

    @staticmethod
    def backward(ctx, ga: torch.Tensor):
        (gu,) = ctx.saved_tensors
        return kernels().silu_mul_bwd(ga, gu)


class Attention(torch.autograd.Function):
    """A layer's attention block from the qkv matmul's output ([tokens, (H + 2·KV)·head_dim]) to the o matmul's
    input ([tokens, H·head_dim]): q/k RMSNorm (weights ``wq``, ``wk``), RoPE (``cos``, sign-folded ``sin``, one row
    per token) and grouped-query attention over ``layout``."""

    @staticmethod
    def forward(ctx, qkv: torch.Tensor, wq: torch.Tensor, wk: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                lay: Layout, eps: float, scale: float) -> torch.Tensor:
        args = (qkv.contiguous(), wq.contiguous(), wk.contiguous(), cos.contiguous(), sin.contiguous(),
                lay.row_prompt, lay.row_len, lay.preal, lay.rreal, lay.P, lay.heads, lay.kv_heads)
        out, qk, rstd, probs = kernels().attention_fwd(*args, eps, scale)
        ctx.save_for_backward(*args[:5], qk, rstd, probs, out)
        ctx.lay, ctx.scale = lay, scale
        return out

    @staticmethod
    def backward(ctx, gout: torch.Tensor):
        qkv, wq, wk, cos, sin, qk, rstd, probs, out = ctx.saved_tensors
        lay = ctx.lay
        gqkv, gwq, gwk = kernels().attention_bwd(gout, qkv, wq, wk, cos, sin, lay.row_prompt, lay.row_len, lay.preal,
                                                 lay.rreal, lay.P, lay.heads, lay.kv_heads, ctx.scale, qk, rstd, probs,
                                                 out)
        return gqkv, gwq, gwk, None, None, None, None, None
