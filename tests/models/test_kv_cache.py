"""Pieces of the sampler's cached attention checked on their own: the masked softmax, the shared-prefix
block against the per-row block it replaces, and `computed_once`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from skillsd_jax.models import kv_cache
from skillsd_jax.models.layers import computed_once


def test_masked_exp_zeroes_masked_entries_and_survives_fully_masked_rows():
    scores = jnp.asarray([[1.0, 3.0, -2.0, 0.5], [4.0, -1.0, 2.0, 7.0]])
    mask = jnp.asarray([[True, False, True, True], [False, False, False, False]])
    m, p = kv_cache._masked_exp(scores, mask)
    np.testing.assert_allclose(m[0, 0], 1.0)  # the masked 3.0 does not set the max
    np.testing.assert_allclose(p[0], [1.0, 0.0, np.exp(-3.0), np.exp(-0.5)], rtol=1e-6)
    assert np.all(np.asarray(p[1]) == 0.0)  # a fully masked row: no weight, no NaN
    assert np.isfinite(np.asarray(m)).all()


def test_shared_prefix_block_equals_the_per_row_block_over_copied_keys():
    b, kh, g, dh, p = 3, 2, 2, 8, 11
    rng = np.random.default_rng(0)
    for t in (1, 5):  # a decode step and a prefill chunk
        q = jnp.asarray(rng.normal(size=(b, kh, g, t, dh)), jnp.float32)
        k = jnp.asarray(rng.normal(size=(kh, dh, p)), jnp.float32)
        v = jnp.asarray(rng.normal(size=(kh, p, dh)), jnp.float32)
        valid = jnp.arange(p) < 7
        shared = kv_cache._shared_part(q, k, v, valid)
        rows = lambda x: jnp.broadcast_to(x[None], (b, *x.shape))
        per_row = kv_cache.segment_part(q, rows(k), rows(v), jnp.broadcast_to(valid, (b, g, t, p)))
        for a, want in zip(shared, per_row):
            assert a.shape == want.shape
            np.testing.assert_allclose(a, want, rtol=1e-5, atol=1e-6)


def test_computed_once_is_fn_whatever_its_predicate():
    fn = lambda x: (jnp.cos(x) * 2.0, jnp.sin(x))
    for x in (jnp.linspace(0.0, 3.0, 12).reshape(3, 4), jnp.linspace(-3.0, 0.0, 12).reshape(3, 4)):
        got = jax.jit(lambda x: computed_once(fn, x))(x)
        for a, want in zip(got, fn(x)):
            np.testing.assert_array_equal(a, want)
