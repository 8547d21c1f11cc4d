"""Rollout correction: importance weights for the gap between the sampler's and the trainer's numerics.

The sampler (KV-cached decode, maybe another dtype or kernel) and the trainer (full forward) do not
produce bit-identical log-probs for the same parameters. When the trainer recomputes the old
log-probs (`config.recompute_old_logp=True`), the PPO ratio is taken against the trainer's
`pi_old`, but the tokens were drawn from the sampler's `mu`; the per-token weight
`w = pi_old / mu = exp(old_logp_trainer - sampler_logp)` corrects for it. Modes
(`config.rollout_correction.mode`):

  - ``none``: no weight (w = 1); mismatch metrics are still logged.
  - ``tis``: truncated IS per token, `min(w, threshold)` (bounded variance, slightly biased).
  - ``mis``: masked IS per sequence: a row whose geometric-mean weight leaves
    `[1/threshold, threshold]` gets weight 0 (dropped from the policy loss), others 1.

Host-side numpy, computed once per batch; the weights travel in `TrainBatch.rollout_weights`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

MODES = ("none", "tis", "mis")
LOG_CLAMP = 20.0


@dataclasses.dataclass(frozen=True)
class RolloutCorrectionConfig:
    mode: str = "none"  # none | tis | mis
    threshold: float = 2.0  # tis: truncation C; mis: rows outside [1/C, C] are masked

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"rollout_correction.mode must be one of {MODES}, got {self.mode!r}")
        if not self.threshold > 1.0:
            raise ValueError(f"rollout_correction.threshold must be > 1, got {self.threshold}")


def rollout_weights(trainer_logp: np.ndarray, sampler_logp: np.ndarray, loss_mask: np.ndarray,
                    config: RolloutCorrectionConfig) -> tuple[np.ndarray | None, dict[str, float]]:
    """(weights `[B,T]` or None for mode none, mismatch metrics) for one batch.

    Metrics (over trained tokens): mean and max |log w|, the k1 and k3 estimates of
    KL(mu || pi_old), and the fraction of tokens (tis) or rows (mis) the correction touched.
    """
    mask = np.asarray(loss_mask, np.float32)
    log_w = np.clip((np.asarray(trainer_logp) - np.asarray(sampler_logp)) * mask, -LOG_CLAMP, LOG_CLAMP)
    n = max(float(mask.sum()), 1.0)
    w = np.exp(log_w)
    metrics = {
        "rollout_correction/abs_log_ratio_mean": float(np.abs(log_w).sum() / n),
        "rollout_correction/abs_log_ratio_max": float(np.abs(log_w).max()) if mask.any() else 0.0,
        "rollout_correction/kl_k1": float((-log_w * mask).sum() / n),
        "rollout_correction/kl_k3": float(((w - 1.0 - log_w) * mask).sum() / n),
    }
    if config.mode == "none":
        return None, metrics
    if config.mode == "tis":
        weights = np.minimum(w, config.threshold) * mask
        metrics["rollout_correction/truncated_frac"] = float(((w > config.threshold) * mask).sum() / n)
    else:
        row_tokens = mask.sum(axis=1)
        row_log = log_w.sum(axis=1) / np.maximum(row_tokens, 1.0)
        bound = np.log(config.threshold)
        keep = (np.abs(row_log) <= bound) | (row_tokens == 0)
        weights = mask * keep[:, None].astype(np.float32)
        real = row_tokens > 0
        metrics["rollout_correction/masked_row_frac"] = float((~keep & real).sum() / max(real.sum(), 1))
    return weights.astype(np.float32), metrics
