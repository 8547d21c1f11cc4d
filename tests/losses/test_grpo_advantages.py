"""GRPO advantages (docs/algorithm.md, "The losses") against a per-group loop reference."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from loss_toys import allclose
from skillsd_jax.losses import grpo_advantages

EPS = 1e-6
# Unsorted, arbitrary ids: group 7 (3 members), -3 (2), 100 (singleton), 42 (constant, 3 members).
IDS = np.array([7, -3, 42, 7, 100, -3, 42, 7, 42], np.int32)
REWARDS = np.array([1.0, 0.0, 0.1, 0.0, 0.7, 2.5, 0.1, 0.5, 0.1], np.float32)


@functools.partial(jax.jit, static_argnames=("norm_std",))
def adv_jit(rewards, ids, valid, norm_std=True):
    return grpo_advantages(rewards, ids, norm_std=norm_std, eps=EPS, valid_N=valid)


def reference(rewards, ids, valid, norm_std):
    """Loop over groups in float64; Bessel std; singleton -> raw reward; invalid -> 0."""
    out = np.zeros(len(rewards))
    for g in set(ids.tolist()):
        members = [i for i in range(len(ids)) if ids[i] == g and valid[i]]
        r = np.array([float(rewards[i]) for i in members])
        for j, i in enumerate(members):
            if len(members) == 1:
                out[i] = r[0]
            elif norm_std:
                out[i] = (r[j] - r.mean()) / (r.std(ddof=1) + EPS)
            else:
                out[i] = r[j] - r.mean()
    return out


@pytest.mark.parametrize("norm_std", [True, False])
def test_matches_group_loop_reference(norm_std):
    valid = np.ones(len(IDS), bool)
    adv = np.asarray(adv_jit(jnp.asarray(REWARDS), jnp.asarray(IDS), jnp.asarray(valid), norm_std=norm_std))
    allclose(adv, reference(REWARDS, IDS, valid, norm_std), rtol=1e-5, atol=1e-6)


def test_group_statistics_zero_mean_unit_unbiased_std_constant_and_singleton():
    valid = np.ones(len(IDS), bool)
    adv = np.asarray(adv_jit(jnp.asarray(REWARDS), jnp.asarray(IDS), jnp.asarray(valid)))
    for g in (7, -3):
        a = adv[IDS == g].astype(np.float64)
        assert abs(a.mean()) < 1e-6
        allclose(a.std(ddof=1), 1.0, rtol=1e-5)
    # Constant group: exactly 0 (no ulp noise amplified by 1/eps).
    assert np.array_equal(adv[IDS == 42], np.zeros(3))
    # Singleton passes its raw reward through.
    assert adv[IDS == 100][0] == np.float32(0.7)


def test_constant_groups_of_awkward_values_are_exactly_zero():
    # Group sizes / values for which a plain float32 sum / n is off by an ulp (then / eps: ~0.01).
    rewards = np.array([0.1] * 7 + [0.3] * 6 + [0.9] * 3 + [1 / 3] * 2, np.float32)
    ids = np.array([0] * 7 + [1] * 6 + [2] * 3 + [3] * 2, np.int32)
    perm = np.random.default_rng(1).permutation(len(ids))
    for norm_std in (True, False):
        adv = adv_jit(jnp.asarray(rewards[perm]), jnp.asarray(ids[perm]), jnp.ones(len(ids), bool), norm_std=norm_std)
        assert np.array_equal(np.asarray(adv), np.zeros(len(ids)))


def test_invalid_episodes_are_excluded_and_get_zero():
    valid = np.array([1, 1, 1, 0, 1, 1, 1, 1, 0], bool)
    rewards = REWARDS.copy()
    rewards[3] = np.nan  # an errored episode may carry garbage
    adv = np.asarray(adv_jit(jnp.asarray(rewards), jnp.asarray(IDS), jnp.asarray(valid)))
    assert np.all(np.isfinite(adv))
    assert adv[3] == 0.0 and adv[8] == 0.0
    allclose(adv, reference(rewards, IDS, valid, True), rtol=1e-5, atol=1e-6)
    # Group 7 now has members {0, 7}: rewards 1.0 and 0.5 -> +-1/sqrt(2) after Bessel std.
    allclose(adv[[0, 7]], [0.25 / (np.sqrt(0.125) + EPS), -0.25 / (np.sqrt(0.125) + EPS)], rtol=1e-5)


def test_relabelling_and_permuting_groups_does_not_change_advantages():
    perm = np.random.default_rng(0).permutation(len(IDS))
    relabel = {7: 0, -3: 123456, 42: -99, 100: 5}
    ids2 = np.array([relabel[i] for i in IDS[perm]], np.int32)
    valid = jnp.ones(len(IDS), bool)
    adv = np.asarray(adv_jit(jnp.asarray(REWARDS), jnp.asarray(IDS), valid))
    adv2 = np.asarray(adv_jit(jnp.asarray(REWARDS[perm]), jnp.asarray(ids2), valid))
    allclose(adv2, adv[perm], rtol=1e-6, atol=1e-7)


def test_dr_grpo_is_centering_only():
    adv = np.asarray(adv_jit(jnp.asarray(REWARDS), jnp.asarray(IDS), jnp.ones(len(IDS), bool), norm_std=False))
    allclose(adv[IDS == -3], [-1.25, 1.25], rtol=1e-6)
    allclose(adv[IDS == 7], [1.0 - 0.5, 0.0 - 0.5, 0.5 - 0.5], atol=1e-6)


def test_shape_errors_name_the_problem():
    with pytest.raises(ValueError, match="group_ids"):
        grpo_advantages(jnp.zeros(3), jnp.zeros(4, jnp.int32))
