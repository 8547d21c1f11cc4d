"""GRPO: group-relative advantages and the PPO clipped policy-gradient loss."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from skillsd_jax.losses.aggregation import (
    aggregate_loss,
    as_mask,
    at_least_f32,
    broadcast_advantages,
    masked_mean,
    masked_min_max,
)

# Log-ratio clamp shared with the distillation loss: exp(20) ~ 4.9e8 stays finite in float32.
LOG_RATIO_CLAMP = 20.0


def grpo_advantages(
    rewards_N: jax.Array,
    group_ids_N: jax.Array,
    *,
    norm_std: bool = True,
    eps: float = 1e-6,
    valid_N: jax.Array | None = None,
) -> jax.Array:
    """Group-relative advantages `(R_i - mean_g) / (std_g + eps)`, shape `(N,)`.

    `group_ids_N` are arbitrary ints (any order, any values); groups are found with an
    N x N equality matrix so the function is jittable with a static N. `std_g` is the
    unbiased (Bessel, n-1) standard deviation, as in verl / verl-agent (torch.std).
    `norm_std=False` is Dr.GRPO (no division). A group with a single valid member passes
    its raw reward through unchanged (the spec). Episodes with `valid_N == False` (errored)
    are excluded from every group's statistics and get advantage 0; their reward may be NaN.
    """
    rewards_N = jnp.asarray(rewards_N)
    if not jnp.issubdtype(rewards_N.dtype, jnp.floating):
        rewards_N = rewards_N.astype(jnp.float32)
    if rewards_N.ndim != 1 or jnp.shape(group_ids_N) != rewards_N.shape:
        raise ValueError(
            f"rewards and group_ids must both be (N,), got {rewards_N.shape} and {jnp.shape(group_ids_N)}"
        )
    if valid_N is None:
        valid_N = jnp.ones(rewards_N.shape, bool)
    valid_N = jnp.asarray(valid_N).astype(bool)
    if valid_N.shape != rewards_N.shape:
        raise ValueError(f"valid must be (N,) like rewards, got {valid_N.shape}")
    rewards_N = jax.lax.stop_gradient(jnp.where(valid_N, rewards_N, 0.0))
    ids = jnp.asarray(group_ids_N)
    same_NxN = (ids[:, None] == ids[None, :]) & valid_N[:, None] & valid_N[None, :]
    same = same_NxN.astype(rewards_N.dtype)
    n_N = jnp.sum(same, axis=-1)
    # Center on a group member's reward first: a constant group then gives exactly 0
    # (a plain float mean of equal values can be off by an ulp, which /eps would amplify).
    ref_N = jnp.max(jnp.where(same_NxN, rewards_N[None, :], -jnp.inf), axis=-1)
    ref_N = jnp.where(valid_N, ref_N, 0.0)
    centered_NxN = jnp.where(same_NxN, rewards_N[None, :] - ref_N[:, None], 0.0)
    safe_n = jnp.where(n_N > 0, n_N, 1.0)
    shift_N = jnp.sum(centered_NxN, axis=-1) / safe_n
    diff_N = (rewards_N - ref_N) - shift_N
    if norm_std:
        dev_NxN = jnp.where(same_NxN, centered_NxN - shift_N[:, None], 0.0)
        var_N = jnp.sum(dev_NxN**2, axis=-1) / jnp.where(n_N > 1, n_N - 1.0, 1.0)
        adv_N = diff_N / (jnp.sqrt(var_N) + eps)
    else:
        adv_N = diff_N
    adv_N = jnp.where(n_N == 1, rewards_N, adv_N)
    return jnp.where(valid_N, adv_N, 0.0)


def ppo_clip_loss(
    logp_BxT: jax.Array,
    logp_old_BxT: jax.Array,
    advantages: jax.Array,
    mask_BxT: jax.Array,
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    dual_clip: float | None = None,
    agg: str = "token-mean",
    norm_length: float | int | None = None,
    token_weights_BxT: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, Any]]:
    """PPO clipped surrogate `-min(r A, clip(r, 1-eps_low, 1+eps_high) A)`, aggregated.

    `token_weights_BxT` (constants) multiply each token's surrogate: the rollout-correction weight
    `w = pi_old_trainer / pi_sampler` (truncated or masked) when old log-probs were recomputed.

    `r = exp(clamp(logp - logp_old, -20, 20))`. With `dual_clip=c` (c > 1) the per-token
    loss of tokens with `A < 0` is further capped at `-c A` (verl semantics), which removes
    their gradient when `r > c`. `advantages` is `[B]` or `[B,T]`. Returns `(loss, aux)`
    with aux `sum`/`count` for exact micro-batch accumulation and masked-token metrics.
    """
    if dual_clip is not None and isinstance(dual_clip, (int, float)) and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
    logp_BxT, logp_old_BxT = at_least_f32(logp_BxT), at_least_f32(logp_old_BxT)
    m = as_mask(mask_BxT, logp_BxT)
    on = m > 0
    # Sanitize padding first: masked positions then carry exact zeros through value and gradient.
    logp = jnp.where(on, logp_BxT, 0.0)
    logp_old = jax.lax.stop_gradient(jnp.where(on, logp_old_BxT, 0.0))
    adv = jax.lax.stop_gradient(broadcast_advantages(advantages, logp.shape).astype(logp.dtype))
    adv = jnp.where(on, adv, 0.0)

    log_ratio = jnp.clip(logp - logp_old, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = jnp.exp(log_ratio)
    unclipped = -adv * ratio
    clipped = -adv * jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high)
    per_token = jnp.maximum(unclipped, clipped)
    dual_active = jnp.zeros_like(on)
    if dual_clip is not None:
        cap = -adv * dual_clip
        dual_active = (adv < 0) & (cap < per_token)
        per_token = jnp.where(adv < 0, jnp.minimum(per_token, cap), per_token)
    if token_weights_BxT is not None:
        per_token = per_token * jax.lax.stop_gradient(jnp.where(on, token_weights_BxT, 0.0))

    loss, total, count = aggregate_loss(per_token, m, agg, norm_length=norm_length)
    ratio_sg = jax.lax.stop_gradient(ratio)
    clip_high = ((adv > 0) & (ratio_sg > 1.0 + eps_high)).astype(m.dtype)
    clip_low = ((adv < 0) & (ratio_sg < 1.0 - eps_low)).astype(m.dtype)
    r_min, r_max = masked_min_max(ratio_sg, m)
    neg_log_ratio = -jax.lax.stop_gradient(log_ratio)
    aux = {
        "sum": total,
        "count": count,
        "tokens": jnp.sum(m),
        "clip_frac_high": masked_mean(clip_high, m),
        "clip_frac_low": masked_mean(clip_low, m),
        "clip_frac": masked_mean(clip_high + clip_low, m),
        "dual_clip_frac": masked_mean(dual_active.astype(m.dtype), m),
        "ratio_min": r_min,
        "ratio_mean": masked_mean(ratio_sg, m),
        "ratio_max": r_max,
        # KL(old || new) on samples from old: k1 (can be negative) and k3 (non-negative).
        "ppo_kl": masked_mean(neg_log_ratio, m),
        "approx_kl": masked_mean(jnp.expm1(-neg_log_ratio) + neg_log_ratio, m),
    }
    return loss, aux
