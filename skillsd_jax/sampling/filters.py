"""Temperature, top-k and top-p filtering, and drawing a token with its log-prob."""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array
NEG_INF = -jnp.inf


def filter_logits(logits_BxV: Array, *, top_k: int, top_p: Array | float, use_top_p: bool) -> Array:
    """Sets excluded tokens' logits to -inf. `top_k` (static) keeps exactly the k best (ties broken by
    index); `top_p` keeps the smallest prefix of tokens sorted by probability whose mass reaches top_p."""
    if top_k > 0 and top_k < logits_BxV.shape[-1]:
        _, idx = jax.lax.top_k(logits_BxV, top_k)
        keep = jnp.zeros(logits_BxV.shape, bool).at[jnp.arange(logits_BxV.shape[0])[:, None], idx].set(True)
        logits_BxV = jnp.where(keep, logits_BxV, NEG_INF)
    if use_top_p:
        order = jnp.argsort(-logits_BxV, axis=-1)
        sorted_logits = jnp.take_along_axis(logits_BxV, order, axis=-1)
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs
        keep_sorted = mass_before < top_p  # the top token always stays (mass_before = 0)
        keep = jnp.zeros(logits_BxV.shape, bool).at[jnp.arange(logits_BxV.shape[0])[:, None], order].set(keep_sorted)
        logits_BxV = jnp.where(keep, logits_BxV, NEG_INF)
    return logits_BxV


def categorical_two_level(uniform_B: Array, logits_BxV: Array, block: int = 64) -> Array:
    """One draw per row from softmax(logits) by inverse CDF of the given uniforms in [0, 1).

    The vocabulary is split into blocks: pick a block from the cumulative block masses, then a
    token inside it. This reads the logits a couple of times instead of drawing V Gumbel variates
    (`jax.random.categorical`), which dominates a decode step on CPU. Tokens with -inf logits
    have zero mass and are never drawn.
    """
    b, v = logits_BxV.shape
    nb = -(-v // block)
    m = jnp.max(logits_BxV, axis=-1, keepdims=True)
    p = jnp.exp(logits_BxV - m)  # unnormalized, max entry 1
    p = jnp.pad(p, ((0, 0), (0, nb * block - v))).reshape(b, nb, block)
    block_mass = p.sum(-1)  # [B, nb]
    block_cdf = jnp.cumsum(block_mass, axis=-1)
    u = uniform_B.astype(jnp.float32)[:, None] * block_cdf[:, -1:]
    bi = jnp.minimum(jnp.sum(block_cdf <= u, axis=-1), nb - 1)  # first block whose cdf exceeds u
    below = jnp.take_along_axis(block_cdf - block_mass, bi[:, None], axis=-1)
    rows = jnp.take_along_axis(p, bi[:, None, None], axis=1)[:, 0]  # [B, block]
    inner = jnp.cumsum(rows, axis=-1)
    j = jnp.minimum(jnp.sum(inner <= (u - below), axis=-1), block - 1)
    idx = bi * block + j
    # Rounding at a block's end can land on a zero-mass token; fall back to the mode there.
    picked = jnp.take_along_axis(logits_BxV, jnp.minimum(idx, v - 1)[:, None], axis=-1)[:, 0]
    return jnp.where((idx < v) & (picked > -jnp.inf), idx, argmax_fast(logits_BxV)).astype(jnp.int32)


def argmax_fast(x_BxV: Array) -> Array:
    """First index of the row maximum, as two plain reductions (faster than a variadic argmax on CPU)."""
    m = jnp.max(x_BxV, axis=-1, keepdims=True)
    iota = jax.lax.broadcasted_iota(jnp.int32, x_BxV.shape, 1)
    return jnp.min(jnp.where(x_BxV == m, iota, x_BxV.shape[-1]), axis=-1)


def sample_tokens(uniform_B: Array, logits_BxV: Array, *, temperature: Array | float, greedy: bool, top_k: int,
                  top_p: Array | float, use_top_p: bool) -> tuple[Array, Array]:
    """Draws one token per row from its uniform in [0, 1); returns (tokens [B], logprobs [B]).

    Callers draw the uniforms of a whole generation up front, which keeps the PRNG (small rolled
    threefry loops on CPU) out of the decode loop.

    The log-prob is that of the distribution actually sampled from (temperature and filters applied).
    Greedy decoding has a degenerate distribution, so it reports the model's plain log-softmax instead.
    """
    logits_BxV = logits_BxV.astype(jnp.float32)
    if greedy:
        dist = logits_BxV
        tokens = argmax_fast(dist)
    else:
        dist = filter_logits(logits_BxV / temperature, top_k=top_k, top_p=top_p, use_top_p=use_top_p)
        tokens = categorical_two_level(uniform_B, dist)
    lse = jax.nn.logsumexp(dist, axis=-1)
    picked = jnp.take_along_axis(dist, tokens[:, None], axis=-1)[:, 0] - lse
    return tokens.astype(jnp.int32), picked
