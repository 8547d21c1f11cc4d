"""The success rate's 95% Wilson interval (train/stats.py), as evaluations report it."""

from __future__ import annotations

import numpy as np
import pytest

from skillsd_jax.train.stats import wilson_interval


@pytest.mark.parametrize("wins,n,lo,hi", [(0, 10, 0.0, 0.2775), (5, 10, 0.2366, 0.7634), (10, 10, 0.7225, 1.0),
                                          (1, 1, 0.2065, 1.0)])
def test_wilson_interval_known_values(wins, n, lo, hi):
    got = wilson_interval(wins, n)
    np.testing.assert_allclose(got, (lo, hi), atol=1e-4)


def test_wilson_interval_covers_the_true_rate_about_95_percent():
    rng = np.random.default_rng(0)
    p, n, trials = 0.3, 40, 4000
    wins = rng.binomial(n, p, trials)
    covered = np.mean([lo <= p <= hi for lo, hi in (wilson_interval(int(w), n) for w in wins)])
    assert 0.93 <= covered <= 0.97


def test_wilson_interval_edges():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(0, 3)[0] == 0.0 and wilson_interval(3, 3)[1] == 1.0
