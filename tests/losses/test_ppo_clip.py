"""PPO clipped loss (docs/algorithm.md, "The losses"): per-token values and gradients in each clipping regime.

Each case is one token with a chosen advantage A and ratio r; the expected per-token loss and
gradient wrt logp are written from the case analysis of -min(rA, clip(r) A) by hand.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from loss_toys import allclose
from skillsd_jax.losses import ppo_clip_loss

LOGP_OLD = float(np.log(0.3))

# (A, r, expected per-token loss, expected d loss / d logp), eps_low = eps_high = 0.2, no dual clip.
SYMMETRIC = [
    (+1.0, 1.5, -1.2, 0.0),  # A > 0, r > 1 + eps_high: clipped, no gradient
    (-2.0, 0.5, +1.6, 0.0),  # A < 0, r < 1 - eps_low: clipped, no gradient
    (+1.0, 1.1, -1.1, -1.1),  # inside the trust region: d(-rA)/dlogp = -rA
    (-2.0, 0.9, +1.8, +1.8),
    (+0.5, 0.5, -0.25, -0.25),  # A > 0, r small: the unclipped (pessimistic) term is active
    (-1.0, 1.5, +1.5, +1.5),  # A < 0, r large: unclipped term active (dual clip off)
    (-1.0, 5.0, +5.0, +5.0),
]


@functools.partial(jax.jit, static_argnames=("eps_low", "eps_high", "dual_clip"))
def ppo_value_grad(logp, logp_old, adv, mask, eps_low=0.2, eps_high=0.2, dual_clip=None):
    fn = lambda x: ppo_clip_loss(x, logp_old, adv, mask, eps_low=eps_low, eps_high=eps_high, dual_clip=dual_clip)
    return jax.value_and_grad(fn, has_aux=True)(logp)


def run_cases(cases, **kw):
    a = np.array([c[0] for c in cases], np.float32)
    r = np.array([c[1] for c in cases], np.float64)
    n = len(cases)
    logp = jnp.asarray((LOGP_OLD + np.log(r))[None, :], jnp.float32)
    logp_old = jnp.full((1, n), LOGP_OLD, jnp.float32)
    (loss, aux), g = ppo_value_grad(logp, logp_old, jnp.asarray(a)[None, :], jnp.ones((1, n)), **kw)
    return float(loss), aux, np.asarray(g)[0] * n  # token-mean over n tokens: undo the 1/n


def test_symmetric_clip_regimes():
    loss, aux, grad = run_cases(SYMMETRIC)
    allclose(loss, np.mean([c[2] for c in SYMMETRIC]), rtol=1e-5)
    allclose(grad, [c[3] for c in SYMMETRIC], rtol=1e-5, atol=1e-6)
    n = len(SYMMETRIC)
    allclose(aux["clip_frac_high"], 1 / n, atol=1e-7)
    allclose(aux["clip_frac_low"], 1 / n, atol=1e-7)
    allclose(aux["clip_frac"], 2 / n, atol=1e-7)
    assert float(aux["dual_clip_frac"]) == 0.0
    allclose([aux["ratio_min"], aux["ratio_max"]], [0.5, 5.0], rtol=1e-5)
    allclose(aux["ratio_mean"], np.mean([c[1] for c in SYMMETRIC]), rtol=1e-5)
    log_r = np.log([c[1] for c in SYMMETRIC])
    allclose(aux["ppo_kl"], np.mean(-log_r), rtol=1e-5, atol=1e-6)
    allclose(aux["approx_kl"], np.mean(np.exp(log_r) - 1 - log_r), rtol=1e-5)


def test_dual_clip_caps_negative_advantage_loss_and_removes_gradient():
    c = 3.0
    cases = [
        (-1.0, 5.0, +3.0, 0.0),  # r > c: capped at -cA, no gradient
        (-1.0, 2.0, +2.0, +2.0),  # 1 + eps < r < c: unclipped term, gradient present
        (+1.0, 5.0, -1.2, 0.0),  # A > 0 untouched by the dual clip
        (-2.0, 0.5, +1.6, 0.0),
    ]
    loss, aux, grad = run_cases(cases, dual_clip=c)
    allclose(loss, np.mean([x[2] for x in cases]), rtol=1e-5)
    allclose(grad, [x[3] for x in cases], rtol=1e-5, atol=1e-6)
    allclose(aux["dual_clip_frac"], 1 / len(cases), atol=1e-7)


def test_asymmetric_eps():
    cases = [
        (+1.0, 1.25, -1.25, -1.25),  # inside [1 - 0.1, 1 + 0.3]: gradient present (would clip at 0.2)
        (+1.0, 1.35, -1.3, 0.0),  # above 1 + eps_high
        (-1.0, 0.85, +0.9, 0.0),  # below 1 - eps_low = 0.9: clipped (would be inside at 0.2)
        (-1.0, 0.95, +0.95, +0.95),
    ]
    loss, aux, grad = run_cases(cases, eps_low=0.1, eps_high=0.3)
    allclose(loss, np.mean([x[2] for x in cases]), rtol=1e-5)
    allclose(grad, [x[3] for x in cases], rtol=1e-5, atol=1e-6)
    allclose([aux["clip_frac_high"], aux["clip_frac_low"]], [0.25, 0.25], atol=1e-7)


def test_sequence_advantages_broadcast_like_token_advantages():
    rng = np.random.default_rng(3)
    logp = jnp.asarray(np.log(rng.uniform(0.1, 1, (3, 4))), jnp.float32)
    logp_old = logp + jnp.asarray(rng.normal(scale=0.3, size=(3, 4)), jnp.float32)
    adv_B = jnp.asarray([1.0, -0.5, 2.0])
    mask = jnp.ones((3, 4))
    (l1, _), g1 = ppo_value_grad(logp, logp_old, adv_B, mask)
    (l2, _), g2 = ppo_value_grad(logp, logp_old, jnp.broadcast_to(adv_B[:, None], (3, 4)), mask)
    assert float(l1) == float(l2) and np.array_equal(np.asarray(g1), np.asarray(g2))


def test_extreme_log_ratio_is_clamped_and_finite():
    logp = jnp.asarray([[0.0, -200.0]], jnp.float32)
    logp_old = jnp.asarray([[-200.0, 0.0]], jnp.float32)
    (loss, aux), g = ppo_value_grad(logp, logp_old, jnp.asarray([-1.0]), jnp.ones((1, 2)))
    assert np.isfinite(float(loss)) and np.all(np.isfinite(np.asarray(g)))
    allclose(aux["ratio_max"], np.exp(20.0), rtol=1e-5)


def test_bad_dual_clip_is_rejected():
    with pytest.raises(ValueError, match="dual_clip"):
        ppo_clip_loss(jnp.zeros((1, 1)), jnp.zeros((1, 1)), jnp.ones(1), jnp.ones((1, 1)), dual_clip=1.0)
