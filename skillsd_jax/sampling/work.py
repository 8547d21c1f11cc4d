"""What a sampler's calls had to do, counted from the live lengths (not the padded shapes), so a
benchmark can price it at the machine's measured limits and report how far above that floor it runs."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class SamplerWork:
    """Totals over calls. Padding (chunk and batch buckets, finished rows) is never counted."""

    prefill_tokens: int = 0  # real tokens prefilled (a shared prefix once)
    prefill_attention_pairs: int = 0  # sum over prefilled tokens of the context each attends (itself included)
    prefill_logit_rows: int = 0  # rows whose next-token logits a prefill produced
    decode_steps: int = 0  # decode loop iterations (each reads the weights once)
    decode_kv_tokens: int = 0  # sum over steps and live rows of the cached tokens the step reads
    generated_tokens: int = 0

    def add_prefill(self, context_before: np.ndarray, new_tokens: np.ndarray) -> None:
        """Rows that had `context_before` tokens and appended `new_tokens` each."""
        c, n = context_before.astype(np.int64), new_tokens.astype(np.int64)
        self.prefill_tokens += int(n.sum())
        self.prefill_attention_pairs += int((n * c + n * (n + 1) // 2).sum())
        self.prefill_logit_rows += int((n > 0).sum())

    def add_decode(self, context_before: np.ndarray, generated: np.ndarray) -> None:
        """Rows that held `context_before` tokens and then drew (and appended) `generated` each."""
        c, g = context_before.astype(np.int64), generated.astype(np.int64)
        self.decode_steps += int(g.max(initial=0))
        self.decode_kv_tokens += int((g * c + g * (g + 1) // 2).sum())
        self.generated_tokens += int(g.sum())

    def minus(self, other: "SamplerWork") -> "SamplerWork":
        """The work done since `other` (a copy taken earlier)."""
        return SamplerWork(**{f.name: getattr(self, f.name) - getattr(other, f.name)
                              for f in dataclasses.fields(self)})
