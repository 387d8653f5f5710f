"""Uncertainty over seeds: the mean with a 95 % percentile-bootstrap interval (``scipy.stats.bootstrap``,
10,000 resamples, a fixed generator so the same runs give the same bytes), and when a difference is
outside the noise."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

LEVEL, RESAMPLES = 0.95, 10_000


@dataclass(frozen=True)
class Estimate:
    mean: float
    low: float | None  # None with one seed: no interval
    high: float | None
    n: int


def estimate(values: list[float]) -> Estimate | None:
    """The mean of ``values`` (one per seed) and its 95 % bootstrap interval (from two seeds on)."""
    vals = [float(v) for v in values]
    if not vals:
        return None
    mean = float(np.mean(vals))
    if len(vals) < 2:
        return Estimate(mean, None, None, 1)
    if max(vals) == min(vals):
        return Estimate(mean, mean, mean, len(vals))
    from scipy.stats import bootstrap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few seeds: scipy warns that the interval may be rough
        ci = bootstrap((np.asarray(vals),), np.mean, confidence_level=LEVEL, n_resamples=RESAMPLES,
                       method="percentile", rng=np.random.default_rng(0)).confidence_interval
    return Estimate(mean, float(ci.low), float(ci.high), len(vals))


def clearly_best(best: Estimate, others: list[Estimate], higher: bool = True) -> bool:
    """``best`` is better than every other beyond the noise: every cell has an interval (two seeds or
    more) and ``best``'s lies wholly above (or below, ``higher=False``) each other's."""
    if best.low is None or any(o.low is None for o in others):
        return False
    return all(best.low > o.high if higher else best.high < o.low for o in others)
