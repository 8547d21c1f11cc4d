"""Jitted batched generation with a KV cache, returning sampler log-probs; multi-turn continuation."""

from __future__ import annotations

import weakref
from typing import Sequence

from flax import nnx

from skillsd_jax.sampling.engine import INACTIVE, STOP_REASONS, Completion, DecodeSession, DecodeState, Prefix, Sampler
from skillsd_jax.sampling.params import SamplingParams

__all__ = ["Completion", "DecodeSession", "DecodeState", "INACTIVE", "Prefix", "STOP_REASONS", "Sampler", "SamplingParams",
           "generate"]

# One Sampler per model object, so repeated `generate` calls reuse compiled programs.
_SAMPLERS: "weakref.WeakKeyDictionary[nnx.Module, Sampler]" = weakref.WeakKeyDictionary()


def generate(model: nnx.Module, prompts: Sequence[Sequence[int]], *, max_new_tokens: int, temperature: float = 1.0,
             top_k: int = 0, top_p: float = 1.0, stop_token_ids: Sequence[int] = (),
             stop_sequences: Sequence[Sequence[int]] = (), seed: int = 0) -> list[Completion]:
    """Generates up to `max_new_tokens` per prompt. `temperature=0` is greedy.

    Returns one `Completion` per prompt: `tokens` (ending with the stop token / sequence when one
    occurred), `logprobs` (of each token under the distribution it was sampled from) and `stop_reason`
    ("stop_token", "stop_sequence" or "length").
    """
    sampler = _SAMPLERS.get(model)
    if sampler is None:
        sampler, _ = Sampler.for_model(model)
        _SAMPLERS[model] = sampler
    params = nnx.state(model)
    sampling = SamplingParams.make(temperature, top_k, top_p, stop_token_ids, stop_sequences)
    return sampler.generate(params, prompts, max_new_tokens=max_new_tokens, sampling=sampling, seed=seed)
