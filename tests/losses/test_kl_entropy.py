"""KL-to-reference estimators and entropy against exact enumeration under pi."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from loss_toys import allclose, closed_kl_grads, dlogsoftmax, np_kl, np_log_softmax, toy_logits
from skillsd_jax.losses import (choice_entropy_loss, choice_positions, entropy_from_logits, entropy_loss, kl_penalty,
                                kl_penalty_loss)

Z, Z_REF = toy_logits(40, vocab=6), toy_logits(41, vocab=6)
LOGPI, LOGREF = np_log_softmax(Z), np_log_softmax(Z_REF)
PI = np.exp(LOGPI)


@functools.cache
def per_sample(kind):
    """Per-sample estimator values (sampling each token once) as a function of the logits."""
    return jax.jit(lambda z: kl_penalty(jax.nn.log_softmax(z), jnp.asarray(LOGREF, jnp.float32), kind))


@functools.cache
def per_sample_jac(kind):
    return jax.jit(jax.jacrev(per_sample(kind)))


@pytest.mark.parametrize("kind", ["k1", "k3", "k3+"])
def test_unbiased_estimators_have_expectation_kl(kind):
    values = np.asarray(per_sample(kind)(jnp.asarray(Z)), np.float64)
    allclose(PI @ values, np_kl(LOGPI, LOGREF), rtol=2e-5, atol=1e-7)


def test_k2_is_biased_but_non_negative_and_k3_non_negative():
    k2 = np.asarray(per_sample("k2")(jnp.asarray(Z)), np.float64)
    allclose(k2, 0.5 * (LOGPI - LOGREF) ** 2, rtol=1e-5, atol=1e-7)
    assert abs(PI @ k2 - np_kl(LOGPI, LOGREF)) > 1e-3  # a different quantity
    assert np.all(np.asarray(per_sample("k3")(jnp.asarray(Z))) >= 0)


def test_gradients_k2_and_k3plus_are_reverse_kl_and_identical_per_sample():
    z = jnp.asarray(Z)
    jac_k2 = np.asarray(per_sample_jac("k2")(z), np.float64)
    jac_k3p = np.asarray(per_sample_jac("k3+")(z), np.float64)
    allclose(jac_k3p, jac_k2, rtol=1e-6, atol=1e-7)
    allclose(jac_k2, (LOGPI - LOGREF)[:, None] * dlogsoftmax(Z), rtol=1e-4, atol=1e-6)
    reverse = closed_kl_grads(z, jnp.asarray(Z_REF))[0]
    allclose(PI @ jac_k2, reverse, rtol=1e-4, atol=2e-6)
    # k3+ carries k3's value.
    allclose(per_sample("k3+")(z), per_sample("k3")(z), rtol=1e-7)


def test_k3_is_clamped_like_verl_low_var_kl_and_unknown_kind_fails():
    logp = jnp.asarray([-30.0, -1.0, 0.0])
    ref = jnp.asarray([0.0, -1.0, -30.0])
    k3 = np.asarray(kl_penalty(logp, ref, "k3"))
    # exp(30) - 31 and exp(-30) + 29 both clamp to 10; equal log-probs give exactly 0.
    assert k3[0] == 10.0 and k3[1] == 0.0 and k3[2] == 10.0
    allclose(kl_penalty(jnp.asarray([-0.5]), jnp.asarray([-2.0]), "k3"), [np.exp(-1.5) - 1 + 1.5], rtol=1e-6)
    with pytest.raises(ValueError, match="KL estimator"):
        kl_penalty(logp, ref, "k4")


def test_kl_penalty_loss_aggregates_and_ignores_reference_gradient():
    logp = jnp.asarray([[-1.0, -2.0, -0.5]])
    ref = jnp.asarray([[-1.5, -1.0, -0.5]])
    mask = jnp.asarray([[1.0, 1.0, 0.0]])
    (loss, aux), (g, g_ref) = jax.jit(
        jax.value_and_grad(lambda a, b: kl_penalty_loss(a, b, mask, kind="k2"), argnums=(0, 1), has_aux=True)
    )(logp, ref)
    allclose(loss, (0.5 * 0.25 + 0.5 * 1.0) / 2, rtol=1e-6)
    allclose(g, [[0.5 / 2, -1.0 / 2, 0.0]], rtol=1e-6)
    assert np.array_equal(np.asarray(g_ref), np.zeros((1, 3)))


def test_entropy_against_enumeration_and_neg_inf_logits():
    logits = np.stack([toy_logits(s, vocab=5, scale=3.0) for s in range(4)]).reshape(2, 2, 5)
    logits[1, 1, 2] = -np.inf
    h = np.asarray(jax.jit(entropy_from_logits)(jnp.asarray(logits)))
    for idx in np.ndindex(2, 2):
        lp = np_log_softmax(logits[idx])
        p = np.exp(lp)
        allclose(h[idx], -np.sum(p * np.where(p > 0, lp, 0.0)), rtol=1e-5)
    g = jax.jit(jax.grad(lambda x: jnp.sum(entropy_from_logits(x))))(jnp.asarray(logits))
    assert np.all(np.isfinite(np.asarray(g)))
    # Huge logits stay stable (no overflow in exp).
    big = jnp.asarray([[[1e4, 1e4, -1e4]]], jnp.float32)
    allclose(entropy_from_logits(big), [[np.log(2.0)]], rtol=1e-6)


def test_entropy_loss_is_masked_mean():
    ent = jnp.asarray([[1.0, 2.0, 100.0], [3.0, 5.0, 7.0]])
    mask = jnp.asarray([[1, 1, 0], [0, 1, 1]], bool)
    losses = jax.jit(lambda e, m: [entropy_loss(e, m, agg=a)[0] for a in ("token-mean", "seq-mean-token-mean")])
    loss, loss_seq = losses(ent, mask)
    allclose(loss, (1 + 2 + 5 + 7) / 4, rtol=1e-7)
    allclose(loss_seq, (1.5 + 6.0) / 2, rtol=1e-7)


def test_choice_positions_follow_the_tag_on_trained_tokens_only():
    ids = jnp.asarray([[5, 9, 2, 9, 3, 9], [9, 1, 9, 4, 4, 4]], jnp.int32)
    loss_mask = jnp.asarray([[0, 1, 1, 1, 0, 1], [1, 1, 1, 1, 1, 1]], jnp.float32)
    # Row 0: after the 9s at 1 and 3 (position 4 is not trained); the 9 at 5 ends the row.
    # Row 1: position 0 has no predecessor; after the 9 at 2.
    want = [[0, 0, 1, 0, 0, 0], [0, 1, 0, 1, 0, 0]]
    assert np.array_equal(np.asarray(choice_positions(ids, loss_mask, 9)), want)


def test_choice_entropy_against_enumeration_and_its_gradient():
    """The entropy of softmax over the choice logits alone, averaged over the masked positions; its
    gradient dH/dz_c = -q_c (log q_c + H) there and zero elsewhere; a shift of all choice logits at
    a position (moving mass to or from the choices as a whole) changes nothing."""
    logits = np.stack([toy_logits(s, vocab=4, scale=2.0) for s in range(6)]).reshape(2, 3, 4)
    mask = np.asarray([[1, 0, 1], [0, 1, 0]], np.float32)
    loss_fn = jax.jit(lambda z: choice_entropy_loss(z, jnp.asarray(mask))[0])
    want, grads = 0.0, np.zeros_like(logits)
    for idx in zip(*np.nonzero(mask)):
        lq = np_log_softmax(logits[idx])
        q = np.exp(lq)
        h = -np.sum(q * lq)
        want += h / mask.sum()
        grads[idx] = -q * (lq + h) / mask.sum()
    allclose(loss_fn(jnp.asarray(logits)), want, rtol=1e-6)
    allclose(jax.grad(loss_fn)(jnp.asarray(logits)), grads, atol=1e-7)
    shifted = logits + np.asarray([3.0, -7.0, 0.5])[None, :, None]
    allclose(loss_fn(jnp.asarray(shifted)), want, rtol=1e-6)
    assert float(choice_entropy_loss(jnp.asarray(logits), jnp.zeros((2, 3)))[0]) == 0.0
