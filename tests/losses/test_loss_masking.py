"""Masking (docs/algorithm.md: only generated tokens are trained) for every loss and mode, plus jit == eager.

Masked positions are filled with NaN / inf garbage: they must not change the value, must get
exactly zero gradient, and an all-zero mask must give loss 0 with zero, finite gradients.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from loss_toys import allclose
from skillsd_jax.losses import (
    AGG_MODES,
    entropy_from_logits,
    entropy_loss,
    full_vocab_reverse_kl,
    kl_penalty_loss,
    ppo_clip_loss,
    sdl_loss,
    topk_reverse_kl,
)

B, T, V = 3, 4, 5
RNG = np.random.default_rng(5)
MASK = np.array([[1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 1, 1]], np.float32)
OFF = MASK == 0


def _with_garbage(x: np.ndarray) -> np.ndarray:
    """Copy of x with NaN / +inf / -inf written into every masked position."""
    x = x.copy()
    garbage = np.array([np.nan, np.inf, -np.inf], np.float32)
    x[OFF] = garbage[np.arange(int(OFF.sum())) % 3][:, None] if x.ndim == 3 else garbage[np.arange(int(OFF.sum())) % 3]
    return x


TOKENS = {name: np.log(RNG.uniform(0.05, 1.0, (B, T))).astype(np.float32) for name in ("logp", "old", "teacher")}
LOGITS = {name: RNG.normal(size=(B, T, V)).astype(np.float32) for name in ("student", "teacher")}
ADV = np.array([1.0, -1.0, 0.5], np.float32)

# name -> (differentiable input key, fn(x, others, mask, mode) -> (loss, aux))
LOSSES = {
    "ppo": ("logp", lambda x, o, m, a: ppo_clip_loss(x, o["old"], ADV, m, agg=a, dual_clip=3.0)),
    "sdl": ("logp", lambda x, o, m, a: sdl_loss(x, o["old"], o["teacher"], m, agg=a, is_clip=2.0)),
    "kl_k3+": ("logp", lambda x, o, m, a: kl_penalty_loss(x, o["teacher"], m, kind="k3+", agg=a)),
    "entropy": ("student", lambda x, o, m, a: entropy_loss(entropy_from_logits(x, m), m, agg=a)),
    "full_vocab": ("student", lambda x, o, m, a: full_vocab_reverse_kl(x, o["teacher"], m, agg=a)),
    "topk": ("student", lambda x, o, m, a: topk_reverse_kl(x, o["teacher"], m, k=2, agg=a)),
}


def _inputs(name: str, garbage: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
    key, _ = LOSSES[name]
    source = LOGITS if key == "student" else TOKENS
    arrays = {k: jnp.asarray(_with_garbage(v) if garbage else v) for k, v in source.items()}
    return arrays.pop(key), arrays


def _value_grad(name: str, x, others, mask, mode):
    fn = LOSSES[name][1]
    return jax.value_and_grad(lambda x: fn(x, others, mask, mode), has_aux=True)(x)


def _all_modes(name, x, others, x_clean, others_clean, mask):
    """Per mode: (garbage-padded, all-zero mask); plus the clean-padded token-mean reference."""
    out = {
        mode: (_value_grad(name, x, others, mask, mode), _value_grad(name, x, others, jnp.zeros_like(mask), mode))
        for mode in AGG_MODES
    }
    return out, _value_grad(name, x_clean, others_clean, mask, "token-mean")


_all_modes_jit = jax.jit(_all_modes, static_argnums=0)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_masked_garbage_is_ignored_and_empty_mask_is_zero(name):
    x, others = _inputs(name, garbage=True)
    x_clean, others_clean = _inputs(name, garbage=False)
    results, ((loss_c, _), g_c) = _all_modes_jit(name, x, others, x_clean, others_clean, jnp.asarray(MASK))
    (loss_tm, _), g_tm = results["token-mean"][0]
    allclose(loss_tm, loss_c, rtol=1e-6, atol=1e-7)
    allclose(g_tm, g_c, rtol=1e-6, atol=1e-8)
    for mode, (((loss, aux), g), ((loss_e, aux_e), g_e)) in results.items():
        assert np.isfinite(float(loss)), mode
        g = np.asarray(g)
        assert np.all(np.isfinite(g)), mode
        assert np.all(g[OFF] == 0), mode
        assert np.abs(g[~OFF]).max() > 0, mode
        assert all(np.all(np.isfinite(np.asarray(v))) for v in aux.values()), mode
        # Empty mask: loss 0, gradient exactly 0, metrics finite.
        assert float(loss_e) == 0.0 and float(aux_e["count"]) == 0.0, mode
        assert np.array_equal(np.asarray(g_e), np.zeros_like(g_e)), mode
        assert all(np.all(np.isfinite(np.asarray(v))) for v in aux_e.values()), mode


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_jit_matches_eager(name):
    """The no-jit path (forward only, op by op) agrees with the jitted one used everywhere else."""
    x, others = _inputs(name, garbage=False)
    mask = jnp.asarray(MASK)
    fn = LOSSES[name][1]
    loss, aux = fn(x, others, mask, "seq-mean-token-mean")
    loss_j, aux_j = jax.jit(fn, static_argnums=3)(x, others, mask, "seq-mean-token-mean")
    allclose(loss_j, loss, rtol=1e-6, atol=1e-7)
    assert set(aux) == set(aux_j)
    for key in aux:
        allclose(aux_j[key], aux[key], rtol=1e-5, atol=1e-7)
