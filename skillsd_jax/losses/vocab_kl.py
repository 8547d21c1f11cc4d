"""Exact per-position reverse KL over the vocabulary, and a top-k + tail-bucket version.

Used when teacher logits are affordable (the `full_vocab` distillation option). The teacher is
always stop-gradient. `[B,T,V]` logits must fit in memory; chunk over T at the caller if not.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from skillsd_jax.losses.aggregation import aggregate_loss, as_mask, at_least_f32, masked_mean


def _xlogx_ratio(p: jax.Array, logp: jax.Array, logq: jax.Array) -> jax.Array:
    """`p * (logp - logq)` with the convention 0 * anything = 0, NaN-free in value and gradient."""
    live = p > 0
    # Double `where`: dead categories see finite inputs, so no 0 * inf reaches the backward pass.
    logp_safe = jnp.where(live, logp, 0.0)
    logq_safe = jnp.where(live, logq, 0.0)
    return jnp.where(live, p * (logp_safe - logq_safe), 0.0)


def _sanitize_logits(logits_BxTxV: jax.Array, on_BxT: jax.Array) -> jax.Array:
    # Masked positions get uniform logits: finite everywhere, zero gradient back to the input.
    return jnp.where(on_BxT[..., None], at_least_f32(logits_BxTxV), 0.0)


def _check_shapes(student: jax.Array, teacher: jax.Array, mask: jax.Array) -> None:
    if jnp.ndim(student) != 3 or jnp.shape(student) != jnp.shape(teacher):
        raise ValueError(f"expected equal [B,T,V] logits, got {jnp.shape(student)} and {jnp.shape(teacher)}")
    if jnp.shape(mask) != jnp.shape(student)[:2]:
        raise ValueError(f"mask shape {jnp.shape(mask)} != logits [B,T] {jnp.shape(student)[:2]}")


def reverse_kl_per_position(student_logits_BxTxV: jax.Array, teacher_logits_BxTxV: jax.Array) -> jax.Array:
    """`KL(softmax(student) || softmax(teacher))` at every position, shape `[B,T]`."""
    logp_s = jax.nn.log_softmax(at_least_f32(student_logits_BxTxV), axis=-1)
    logp_t = jax.lax.stop_gradient(jax.nn.log_softmax(at_least_f32(teacher_logits_BxTxV), axis=-1))
    return jnp.sum(_xlogx_ratio(jnp.exp(logp_s), logp_s, logp_t), axis=-1)


def full_vocab_reverse_kl(
    student_logits_BxTxV: jax.Array,
    teacher_logits_BxTxV: jax.Array,
    mask_BxT: jax.Array,
    *,
    agg: str = "token-mean",
    norm_length: float | int | None = None,
) -> tuple[jax.Array, dict[str, Any]]:
    """Aggregated exact reverse KL `KL(pi_student || pi_teacher)`; returns `(loss, aux)`."""
    return _aggregated_kl(reverse_kl_per_position, student_logits_BxTxV, teacher_logits_BxTxV, mask_BxT, agg,
                          norm_length)


def _aggregated_kl(per_position, student_logits_BxTxV, teacher_logits_BxTxV, mask_BxT, agg, norm_length):
    """`per_position(student, teacher) -> [B,T]` on sanitized logits, aggregated over the mask."""
    _check_shapes(student_logits_BxTxV, teacher_logits_BxTxV, mask_BxT)
    m = as_mask(mask_BxT, student_logits_BxTxV)
    student = _sanitize_logits(student_logits_BxTxV, m > 0)
    teacher = _sanitize_logits(teacher_logits_BxTxV, m > 0)
    kl_BxT = per_position(student, teacher)
    loss, total, count = aggregate_loss(kl_BxT, m, agg, norm_length=norm_length)
    return loss, {"sum": total, "count": count, "tokens": jnp.sum(m), "kl": masked_mean(kl_BxT, m)}


def topk_tail_reverse_kl_per_position(
    student_logits_BxTxV: jax.Array, teacher_logits_BxTxV: jax.Array, k: int
) -> jax.Array:
    """Reverse KL between the (k+1)-category coarsenings of student and teacher, `[B,T]`.

    Categories: the student's top-k tokens (kept exactly) plus one tail bucket holding the
    remaining mass of each distribution. By the log-sum inequality this is <= the full KL,
    with equality at k = V. Tokens tied with the k-th largest logit are all kept (the
    partition stays proper, only finer), which avoids a scatter of the top-k indices.
    """
    vocab = student_logits_BxTxV.shape[-1]
    if not isinstance(k, int) or not 1 <= k <= vocab:
        raise ValueError(f"top-k needs an int 1 <= k <= V={vocab}, got {k!r}")
    logp_s = jax.nn.log_softmax(at_least_f32(student_logits_BxTxV), axis=-1)
    logp_t = jax.lax.stop_gradient(jax.nn.log_softmax(at_least_f32(teacher_logits_BxTxV), axis=-1))
    student_sg = jax.lax.stop_gradient(student_logits_BxTxV)
    kth_BxTx1 = jax.lax.top_k(student_sg, k)[0][..., -1:]
    in_top = student_sg >= kth_BxTx1
    p_s, p_t = jnp.exp(logp_s), jnp.exp(logp_t)
    head = jnp.sum(jnp.where(in_top, _xlogx_ratio(p_s, logp_s, logp_t), 0.0), axis=-1)
    # Tail mass as a direct sum of the tail probabilities: 1 - sum(top) would cancel badly.
    tail_s = jnp.sum(jnp.where(in_top, 0.0, p_s), axis=-1)
    tail_t = jnp.sum(jnp.where(in_top, 0.0, p_t), axis=-1)
    log_tail_s = jnp.log(jnp.where(tail_s > 0, tail_s, 1.0))
    # Floor the teacher's tail at the smallest normal float: an underflowed tail costs a large
    # but finite penalty instead of inf.
    log_tail_t = jnp.log(jnp.maximum(tail_t, jnp.finfo(tail_t.dtype).tiny))
    return head + _xlogx_ratio(tail_s, log_tail_s, log_tail_t)


def topk_reverse_kl(
    student_logits_BxTxV: jax.Array,
    teacher_logits_BxTxV: jax.Array,
    mask_BxT: jax.Array,
    *,
    k: int,
    agg: str = "token-mean",
    norm_length: float | int | None = None,
) -> tuple[jax.Array, dict[str, Any]]:
    """Aggregated top-k + tail-bucket reverse KL (student's top-k); returns `(loss, aux)`."""
    return _aggregated_kl(lambda s, t: topk_tail_reverse_kl_per_position(s, t, k), student_logits_BxTxV,
                          teacher_logits_BxTxV, mask_BxT, agg, norm_length)
