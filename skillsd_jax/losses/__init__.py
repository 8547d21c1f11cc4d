"""Pure JAX losses for GRPO + Skill-SD. Every loss returns `(loss, aux)` with `aux["sum"]` and
`aux["count"]` from `aggregate`, so micro-batches accumulate to the exact full-batch value:
`loss = sum(sums) / max(sum(counts), TINY)`.
"""

from skillsd_jax.losses.aggregation import (
    AGG_MODES,
    TINY,
    aggregate,
    aggregate_loss,
    finalize,
    masked_mean,
)
from skillsd_jax.losses.distill import sdl_loss
from skillsd_jax.losses.entropy import choice_entropy_loss, choice_positions, entropy_from_logits, entropy_loss
from skillsd_jax.losses.grpo import LOG_RATIO_CLAMP, grpo_advantages, ppo_clip_loss
from skillsd_jax.losses.kl import KL_KINDS, kl_penalty, kl_penalty_loss
from skillsd_jax.losses.vocab_kl import (
    full_vocab_reverse_kl,
    reverse_kl_per_position,
    topk_reverse_kl,
    topk_tail_reverse_kl_per_position,
)

__all__ = [
    "AGG_MODES",
    "KL_KINDS",
    "LOG_RATIO_CLAMP",
    "TINY",
    "aggregate",
    "choice_entropy_loss",
    "choice_positions",
    "aggregate_loss",
    "entropy_from_logits",
    "entropy_loss",
    "finalize",
    "full_vocab_reverse_kl",
    "grpo_advantages",
    "kl_penalty",
    "kl_penalty_loss",
    "masked_mean",
    "ppo_clip_loss",
    "reverse_kl_per_position",
    "sdl_loss",
    "topk_reverse_kl",
    "topk_tail_reverse_kl_per_position",
]
