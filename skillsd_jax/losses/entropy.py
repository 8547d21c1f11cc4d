"""Token entropy of the policy and its aggregated (bonus) term."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from skillsd_jax.losses.aggregation import TINY, aggregate_loss, as_mask, at_least_f32


def entropy_from_logits(logits: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Entropy of `softmax(logits)` over the last axis (`[B,T,V] -> [B,T]`), NaN-free for -inf logits.

    With `mask` (`[B,T]`), masked positions are computed from zero logits, so garbage there
    (NaN from fully padded attention rows, say) cannot leak NaN into the gradient.
    """
    if mask is not None:
        logits = jnp.where(jnp.asarray(mask)[..., None] > 0, logits, jnp.zeros_like(logits))
    logp = jax.nn.log_softmax(at_least_f32(logits), axis=-1)
    p = jnp.exp(logp)
    live = p > 0
    # Double `where`: a -inf logit has p = 0 and must not produce 0 * inf in value or gradient.
    logp_safe = jnp.where(live, logp, 0.0)
    return -jnp.sum(jnp.where(live, p * logp_safe, 0.0), axis=-1)


def entropy_loss(
    entropy_BxT: jax.Array,
    mask_BxT: jax.Array,
    *,
    agg: str = "token-mean",
    norm_length: float | int | None = None,
) -> tuple[jax.Array, dict[str, Any]]:
    """Aggregated entropy (positive); the trainer adds `-coef * loss` for an entropy bonus."""
    m = as_mask(mask_BxT, entropy_BxT)
    loss, total, count = aggregate_loss(entropy_BxT, m, agg, norm_length=norm_length)
    return loss, {"sum": total, "count": count, "tokens": jnp.sum(m)}


def choice_positions(input_ids_BxT: jax.Array, loss_mask_BxT: jax.Array, after_token: int) -> jax.Array:
    """`[B,T]` float mask of the trained positions that directly follow `after_token` (e.g. the token
    right after `<action>`, where an agent names its move), token-aligned like the loss mask."""
    prev = jnp.concatenate([jnp.full_like(input_ids_BxT[:, :1], -1), input_ids_BxT[:, :-1]], axis=1)
    return ((prev == after_token) & (jnp.asarray(loss_mask_BxT) > 0)).astype(jnp.float32)


def choice_entropy_loss(choice_logits_BxTxC: jax.Array, mask_BxT: jax.Array) -> tuple[jax.Array, dict[str, Any]]:
    """Entropy of the policy restricted to C choice tokens (softmax over their logits only), averaged
    over the masked positions (positive; the trainer adds `-coef * loss`).

    Unlike the token entropy bonus, its gradient moves only the choice logits relative to each other:
    it keeps the choices diverse without moving mass off them (toward invalid answers, say).
    """
    ent = entropy_from_logits(choice_logits_BxTxC, mask_BxT)
    m = as_mask(mask_BxT, ent)
    total, count = jnp.sum(ent * m), jnp.sum(m)
    return total / jnp.maximum(count, TINY), {"sum": total, "count": count}
