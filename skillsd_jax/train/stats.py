"""Small statistics for reporting results: binomial intervals and mean/spread over seeds."""

from __future__ import annotations

import math
from typing import Sequence

Z95 = 1.959963984540054
# Two-sided 97.5% quantiles of Student's t for 1..30 degrees of freedom (then the normal's).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval of a success rate (well-behaved at 0 and 1 and for small n)."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At 0 (or n) successes the bound is exactly 0 (or 1); rounding would leave a hair of it.
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


def t_quantile_975(dof: int) -> float:
    return _T975[dof - 1] if 1 <= dof <= len(_T975) else Z95


def mean_interval(values: Sequence[float]) -> tuple[float, float, tuple[float, float]]:
    """(mean, sample std, 95% t-interval of the mean) of per-seed values; one value gives a zero-width std
    and an unbounded interval reported as (mean, mean)."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_interval needs at least one value")
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0, (mean, mean)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile_975(n - 1) * std / math.sqrt(n)
    return mean, std, (mean - half, mean + half)
