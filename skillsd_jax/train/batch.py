"""The training batch: student rows and the per-token constants computed for them.

Everything is token-aligned: entry `[b, t]` describes token `input_ids[b, t]` (its log-prob is that
of predicting it from tokens `< t`). Rows are right-padded; `loss_mask` is 1 exactly on tokens the
model generated, so prompts, observations and padding never get a gradient.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class TrainBatch:
    input_ids: Any  # [B, T] int32 student rows (plain prompt + response tokens)
    attention_mask: Any  # [B, T] int32, 1 on real tokens
    loss_mask: Any  # [B, T] float32, 1 on model-generated tokens
    old_logp: Any  # [B, T] float32, behaviour-policy log-prob of each token (sampler or recomputed)
    teacher_logp: Any  # [B, T] float32, teacher log-prob of the same token under the teacher prompt
    advantages: Any  # [B] or [B, T] float32
    sdl_mask: Any  # [B] float32, 1 where the row's task has a teacher signal (a skill / privileged info)
    ref_logp: Any = None  # [B, T] float32 reference-policy log-probs, only with a KL-to-reference term
    # Rollout correction (train/rollout_correction.py): per-token weights on the policy loss for the
    # sampler/trainer mismatch, only when old log-probs are recomputed by the trainer.
    rollout_weights: Any = None  # [B, T] float32
    # Teacher rows, only for the full-vocabulary SDL kinds (the step computes the teacher's logits):
    teacher_ids: Any = None  # [B, Tt] int32 skill block + prompt + the same response tokens
    teacher_attention_mask: Any = None  # [B, Tt] int32
    teacher_index: Any = None  # [B, T] int32: position in the teacher row of student token [b, t] (0 off-mask)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.input_ids.shape)

    def validate(self) -> None:
        """Host-side checks with messages naming the field (run before the jitted step)."""
        b, t = np.shape(self.input_ids)
        for name in ("attention_mask", "loss_mask", "old_logp", "teacher_logp"):
            if np.shape(getattr(self, name)) != (b, t):
                raise ValueError(f"TrainBatch.{name} has shape {np.shape(getattr(self, name))}, expected {(b, t)}")
        if np.shape(self.advantages) not in ((b,), (b, t)):
            raise ValueError(f"TrainBatch.advantages has shape {np.shape(self.advantages)}, expected {(b,)} or {(b, t)}")
        if np.shape(self.sdl_mask) != (b,):
            raise ValueError(f"TrainBatch.sdl_mask has shape {np.shape(self.sdl_mask)}, expected {(b,)}")
        for name in ("ref_logp", "rollout_weights"):
            value = getattr(self, name)
            if value is not None and np.shape(value) != (b, t):
                raise ValueError(f"TrainBatch.{name} has shape {np.shape(value)}, expected {(b, t)}")
        lm, am = np.asarray(self.loss_mask), np.asarray(self.attention_mask)
        if np.any((lm > 0) & (am == 0)):
            raise ValueError("TrainBatch.loss_mask is 1 on padding (attention_mask 0)")
        if np.any(lm[:, 0] > 0):
            raise ValueError("TrainBatch.loss_mask is 1 on the first token, which has no context to predict it")
        for name in ("old_logp", "teacher_logp", "advantages"):
            if not np.all(np.isfinite(np.asarray(getattr(self, name)))):
                raise ValueError(f"TrainBatch.{name} has non-finite values")

    def split(self, parts: int) -> "TrainBatch":
        """Reshapes every array `[B, ...]` to `[parts, B/parts, ...]` for micro-batch accumulation."""
        b = self.shape[0]
        if b % parts:
            raise ValueError(f"batch of {b} rows is not divisible into {parts} micro-batches")
        return jax.tree.map(lambda x: x.reshape((parts, b // parts) + x.shape[1:]), self)
