"""Rollout-correction weights: exact arithmetic, truncation, masking, metrics."""

import numpy as np
import pytest

from skillsd_jax.train.rollout_correction import RolloutCorrectionConfig, rollout_weights


def _case():
    mask = np.array([[0, 1, 1, 0], [0, 1, 1, 1]], np.float32)
    sampler = np.array([[0, -1.0, -2.0, 0], [0, -1.0, -1.0, -1.0]], np.float32)
    trainer = np.array([[0, -0.5, -2.0, 0], [0, -3.0, -3.0, -3.0]], np.float32)
    return trainer, sampler, mask


def test_none_mode_reports_mismatch_only():
    w, m = rollout_weights(*_case(), RolloutCorrectionConfig())
    assert w is None
    log_w = np.array([0.5, 0.0, -2.0, -2.0, -2.0])
    assert m["rollout_correction/abs_log_ratio_mean"] == pytest.approx(np.abs(log_w).mean())
    assert m["rollout_correction/abs_log_ratio_max"] == pytest.approx(2.0)
    assert m["rollout_correction/kl_k3"] == pytest.approx(np.mean(np.exp(log_w) - 1 - log_w), rel=1e-5)


def test_tis_truncates_per_token():
    w, m = rollout_weights(*_case(), RolloutCorrectionConfig(mode="tis", threshold=1.5))
    np.testing.assert_allclose(w[0], [0, 1.5, 1.0, 0], rtol=1e-6)  # exp(0.5)=1.65 -> 1.5
    np.testing.assert_allclose(w[1, 1:], np.exp(-2.0), rtol=1e-5)
    assert m["rollout_correction/truncated_frac"] == pytest.approx(1 / 5)


def test_mis_masks_rows_outside_the_band():
    w, m = rollout_weights(*_case(), RolloutCorrectionConfig(mode="mis", threshold=2.0))
    np.testing.assert_array_equal(w, [[0, 1, 1, 0], [0, 0, 0, 0]])  # row 2: mean log w = -2 < -ln 2
    assert m["rollout_correction/masked_row_frac"] == pytest.approx(0.5)


def test_bad_config():
    with pytest.raises(ValueError, match="mode"):
        RolloutCorrectionConfig(mode="x")
    with pytest.raises(ValueError, match="threshold"):
        RolloutCorrectionConfig(mode="tis", threshold=1.0)
