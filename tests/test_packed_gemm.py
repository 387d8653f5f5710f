"""The compiled kernels' small-row matmul (``csrc/packed_gemm.cpp``): ``x @ W.T`` against a weight laid out once,
for the decode step and the prefill (``s2lpo.rollout.decode.FastDecoder``)."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from s2lpo.rollout.kernel import kernels

pytestmark = pytest.mark.skipif(shutil.which(os.environ.get("CXX", "c++")) is None, reason="no C++ compiler")


@pytest.fixture(scope="module")
def k():
    module = kernels()
    assert module is not None, "the compiled kernels were not built on a machine with a compiler"
    return module


@pytest.mark.parametrize("rows", [1, 5, 6, 7, 13, 64])
@pytest.mark.parametrize("parts,inner", [((24,), 16), ((8, 4, 4), 33), ((264,), 256), ((5,), 7)],
                         ids=["one panel and a half", "q k v of odd width", "toy-l's head", "less than a panel"])
def test_the_product_is_x_times_the_weights_transposed(k, rows, parts, inner):
    """Every row count the 6-row tiles leave a remainder of, output widths that end inside a panel, weights given
    in parts (q, k, v): the product of the concatenated weight, and added in place where asked."""
    torch.manual_seed(rows)
    ws = [torch.randn(n, inner) for n in parts]
    w = torch.cat(ws)
    x = torch.randn(rows, inner)
    packed = k.pack_weights(ws)
    assert packed.shape == (-(-len(w) // 16), inner, 16)
    assert torch.equal(packed.transpose(1, 2).reshape(-1, inner)[: len(w)], w)  # a layout of the same numbers
    assert not packed.transpose(1, 2).reshape(-1, inner)[len(w) :].any()  # the last panel padded with zeros
    ref = x.double() @ w.double().T
    tol = 1e-6 * inner  # float32 rounding of a sum of `inner` products (torch.mm's is as large: 1.8e-5 at 256)
    out = k.packed_mm(x, packed, len(w))
    assert out.shape == (rows, len(w)) and torch.allclose(out.double(), ref, rtol=1e-5, atol=tol)
    h = torch.randn(rows, len(w))
    expect = h.double() + ref
    k.packed_addmm_(h, x, packed)
    assert torch.allclose(h.double(), expect, rtol=1e-5, atol=tol)


def test_the_result_does_not_depend_on_the_thread_count(k):
    """Each output is one sum over the inner dimension in order, whichever thread computes its panel."""
    torch.manual_seed(0)
    w, x = torch.randn(1024, 256), torch.randn(64, 256)
    packed = k.pack_weights([w])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = k.packed_mm(x, packed, 1024)
        torch.set_num_threads(2)
        two = k.packed_mm(x, packed, 1024)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)


def test_shapes_that_do_not_fit_are_refused(k):
    packed = k.pack_weights([torch.randn(20, 8)])
    with pytest.raises(RuntimeError, match=r"x is \[rows, 8\] float32"):
        k.packed_mm(torch.randn(3, 9), packed, 20)
    with pytest.raises(RuntimeError, match="40 output columns do not fit a weight of 2 panels"):
        k.packed_mm(torch.randn(3, 8), packed, 40)
    with pytest.raises(RuntimeError, match="not one of pack_weights'"):
        k.packed_mm(torch.randn(3, 8), torch.randn(20, 8), 20)
    with pytest.raises(RuntimeError, match=r"float32 \[out, 8\] weights"):
        k.pack_weights([torch.randn(4, 8), torch.randn(4, 9)])
