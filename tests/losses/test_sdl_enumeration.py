"""Skill-SD distillation loss against exact enumeration on toy categoricals (docs/algorithm.md, "The losses").

Each vocabulary item is one sample (one [1,1] call of the loss); expectations weight the
per-sample values / gradients by the sampling distribution. float32, tolerances ~1e-5.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from loss_toys import allclose, closed_kl_grads, dlogsoftmax, np_kl, np_log_softmax, toy_logits
from skillsd_jax.losses import kl_penalty, sdl_loss

V = 5
ONE = jnp.ones((1, 1), jnp.float32)


@functools.partial(jax.jit, static_argnames=("is_clip",))
def per_sample_sdl(z, logp_old_V, logp_teacher_V, is_clip=None):
    """Per-sample SDL value when token v is sampled, as a function of the student logits z."""
    logp_V = jax.nn.log_softmax(z)

    def one(lp, lo, lt):
        return sdl_loss(lp[None, None], lo[None, None], lt[None, None], ONE, is_clip=is_clip)[0]

    return jax.vmap(one)(logp_V, logp_old_V, logp_teacher_V)


per_sample_sdl_jac = jax.jit(jax.jacrev(per_sample_sdl), static_argnames=("is_clip",))


@functools.partial(jax.jit, static_argnames=("is_clip",))
def sdl_value_grads(logp, logp_old, logp_teacher, mask, is_clip=None):
    """((loss, aux), (d/dlogp, d/dlogp_old, d/dlogp_teacher)) of the SDL loss."""
    fn = lambda x, o, t: sdl_loss(x, o, t, mask, is_clip=is_clip)
    return jax.value_and_grad(fn, argnums=(0, 1, 2), has_aux=True)(logp, logp_old, logp_teacher)


def toy(seed: int, on_policy: bool = False):
    z, zt, zm = toy_logits(3 * seed), toy_logits(3 * seed + 1), toy_logits(3 * seed + 2)
    if on_policy:
        zm = z
    return z, zt, zm, np_log_softmax(z), np_log_softmax(zt), np_log_softmax(zm)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_1_importance_weighted_k3_is_unbiased_reverse_kl_value_and_gradient(seed):
    z, zt, zm, logpi, logT, logmu = toy(seed)
    mu = np.exp(logmu)
    assert np.abs(np.exp(logpi) - mu).max() > 0.05  # genuinely off-policy
    f32 = lambda a: jnp.asarray(a, jnp.float32)
    values_V = per_sample_sdl(f32(z), f32(logmu), f32(logT))
    allclose(np.dot(mu, values_V), np_kl(logpi, logT), rtol=2e-5)

    grads_VxV = per_sample_sdl_jac(f32(z), f32(logmu), f32(logT))
    expected = closed_kl_grads(f32(z), f32(zt))[0]
    allclose(mu @ np.asarray(grads_VxV, np.float64), expected, rtol=1e-4, atol=2e-6)


@pytest.mark.parametrize("on_policy", [False, True])
def test_2_per_sample_gradient_is_rho_times_gap(on_policy):
    z, zt, zm, logpi, logT, logmu = toy(3, on_policy=on_policy)
    rho = np.exp(logpi - logmu)
    gap = logpi - logT
    if on_policy:
        allclose(rho, np.ones(V), atol=1e-12)
    logp = jnp.asarray(logpi, jnp.float32)[:, None]
    lo = jnp.asarray(logmu, jnp.float32)[:, None]
    lt = jnp.asarray(logT, jnp.float32)[:, None]
    mask = jnp.ones((V, 1))
    # token-mean over V tokens: d loss / d logp_v = rho_v * l_v / V.
    _, (g, _, _) = sdl_value_grads(logp, lo, lt, mask)
    allclose(np.asarray(g)[:, 0], rho * gap / V, rtol=1e-5, atol=1e-7)
    # Chain rule to the logits: row v is rho_v l_v (e_v - pi).
    jac = per_sample_sdl_jac(jnp.asarray(z), jnp.asarray(logmu, jnp.float32), jnp.asarray(logT, jnp.float32))
    allclose(jac, (rho * gap)[:, None] * dlogsoftmax(z), rtol=1e-4, atol=1e-6)


def test_2b_straight_through_matches_autograd_of_naive_rho_k3():
    """Autograd of rho*k3 with rho differentiated through logp gives the same rho*l*grad logp."""
    z, zt, zm, logpi, logT, logmu = toy(4)

    def naive(z):
        logp = jax.nn.log_softmax(z)
        gap = logp - logT.astype(np.float32)
        rho = jnp.exp(logp - logmu.astype(np.float32))
        return rho * (jnp.exp(-gap) - 1.0 + gap)

    jac_naive = jax.jit(jax.jacrev(naive))(jnp.asarray(z))
    jac = per_sample_sdl_jac(jnp.asarray(z), jnp.asarray(logmu, jnp.float32), jnp.asarray(logT, jnp.float32))
    allclose(jac, jac_naive, rtol=1e-4, atol=1e-6)
    allclose(per_sample_sdl(jnp.asarray(z), jnp.asarray(logmu, jnp.float32), jnp.asarray(logT, jnp.float32)),
             naive(jnp.asarray(z)), rtol=1e-5)


@pytest.mark.parametrize("seed", [5, 6])
def test_3_negative_controls_k3_without_rho_is_forward_kl_and_k1_has_zero_gradient(seed):
    z, zt, zm, logpi, logT, logmu = toy(seed)
    pi = np.exp(logpi)
    lt = jnp.asarray(logT, jnp.float32)

    def per_sample(kind):
        return lambda z: kl_penalty(jax.nn.log_softmax(z), lt, kind)

    def naive_k3(z):  # the k3 term with plain autograd and no importance weight
        gap = jax.nn.log_softmax(z) - lt
        return jnp.exp(-gap) - 1.0 + gap

    reverse = np.asarray(closed_kl_grads(jnp.asarray(z), jnp.asarray(zt))[0], np.float64)
    forward = np.asarray(closed_kl_grads(jnp.asarray(zt), jnp.asarray(z))[1], np.float64)
    for fn in (naive_k3, per_sample("k3")):
        expected_grad = pi @ np.asarray(jax.jit(jax.jacrev(fn))(jnp.asarray(z)), np.float64)
        allclose(expected_grad, forward, rtol=1e-4, atol=2e-6)
        assert np.linalg.norm(expected_grad - reverse) > 0.05 * np.linalg.norm(reverse)
    k1_grad = pi @ np.asarray(jax.jit(jax.jacrev(per_sample("k1")))(jnp.asarray(z)), np.float64)
    allclose(k1_grad, np.zeros(V), atol=2e-6)
    # ... while the SDL gradient on-policy is the reverse-KL one (positive control).
    sdl_grad = pi @ np.asarray(per_sample_sdl_jac(jnp.asarray(z), jnp.asarray(logpi, jnp.float32), lt), np.float64)
    allclose(sdl_grad, reverse, rtol=1e-4, atol=2e-6)


def test_4_teacher_and_old_policy_get_zero_gradient_and_self_teacher_gives_zero():
    rng = np.random.default_rng(7)
    logp = jnp.asarray(np.log(rng.uniform(0.05, 1, (3, 4))), jnp.float32)
    lo = jnp.asarray(np.log(rng.uniform(0.05, 1, (3, 4))), jnp.float32)
    lt = jnp.asarray(np.log(rng.uniform(0.05, 1, (3, 4))), jnp.float32)
    mask = jnp.ones((3, 4))
    _, (_, g_old, g_teacher) = sdl_value_grads(logp, lo, lt, mask)
    assert np.array_equal(np.asarray(g_old), np.zeros((3, 4)))
    assert np.array_equal(np.asarray(g_teacher), np.zeros((3, 4)))
    # Teacher identical to the student: loss 0 and gradient 0, whatever the sampler.
    (loss, _), (g, _, _) = sdl_value_grads(logp, lo, jnp.array(logp), mask)
    assert float(loss) == 0.0
    assert np.array_equal(np.asarray(g), np.zeros((3, 4)))


def test_5_is_clip_truncates_weight_where_rho_exceeds_c():
    z, zt, _, logpi, logT, _ = toy(8)
    # A sampler that under-samples half the vocabulary, so rho = pi/mu > c there.
    logmu = np_log_softmax(np.asarray(z, np.float64) + np.array([-2.0, 2.0, -2.0, 2.0, 0.0]))
    rho = np.exp(logpi - logmu)
    gap = logpi - logT
    c = 1.5
    assert (rho > c).any() and (rho < c).any()
    f32 = lambda a: jnp.asarray(a, jnp.float32)
    jac = per_sample_sdl_jac(f32(z), f32(logmu), f32(logT), is_clip=c)
    expected_w = np.where(rho > c, c, rho)
    allclose(jac, (expected_w * gap)[:, None] * dlogsoftmax(z), rtol=1e-4, atol=1e-6)
    clipped_rows = np.asarray(jac)[rho > c]
    allclose(clipped_rows, (c * gap[rho > c])[:, None] * dlogsoftmax(z)[rho > c], rtol=1e-4, atol=1e-6)
    _, aux = sdl_loss(f32(logpi)[:, None], f32(logmu)[:, None], f32(logT)[:, None], jnp.ones((V, 1)), is_clip=c)
    allclose(aux["is_clip_frac"], np.mean(rho > c), atol=1e-7)


@pytest.mark.parametrize("is_clip", [None, 2.0])
def test_5_extreme_gaps_and_ratios_are_finite(is_clip):
    logp = jnp.asarray([[-1.0, -2.0, -0.5, -3.0]], jnp.float32)
    lt = logp - jnp.asarray([[50.0, -50.0, 50.0, -50.0]])  # l = +-50
    lo = logp - jnp.asarray([[100.0, -100.0, 0.0, 0.0]])  # log rho = +-100 (clamped to +-20)
    mask = jnp.ones((1, 4))
    (loss, aux), (g, _, _) = sdl_value_grads(logp, lo, lt, mask, is_clip=is_clip)
    assert np.isfinite(float(loss)) and np.all(np.isfinite(np.asarray(g)))
    assert all(np.all(np.isfinite(np.asarray(v))) for v in aux.values())
    rho = np.exp(np.clip([100.0, -100.0, 0.0, 0.0], -20, 20))
    w = rho if is_clip is None else np.minimum(rho, is_clip)
    allclose(np.asarray(g)[0], w * np.array([50.0, -50.0, 50.0, -50.0]) / 4, rtol=1e-5)
