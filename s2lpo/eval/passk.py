"""Unbiased pass@k (Chen et al., 2021) and mean@k, numerically stable."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """``1 - C(n-c, k) / C(n, k)``: probability that at least one of k samples (of n, c correct) is correct.

    Computed as ``1 - prod_{i=n-c+1}^{n} (1 - k/i)``, which never forms a large binomial.
    """
    if n < 1 or k < 1:
        raise ValueError(f"n={n} and k={k} must be >= 1")
    if not 0 <= c <= n:
        raise ValueError(f"c={c} must be in [0, n={n}]")
    if k > n:
        raise ValueError(f"k={k} > n={n}: pass@k needs at least k samples per problem")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def mean_pass_at_k(ns: Iterable[int], cs: Iterable[int], k: int) -> float:
    """pass@k averaged over problems."""
    vals = [pass_at_k(n, c, k) for n, c in zip(ns, cs, strict=True)]
    if not vals:
        raise ValueError("no problems to average over")
    return float(np.mean(vals))
