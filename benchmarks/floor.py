"""The floor of sampling work at this machine's limits, measured in the same run as the benchmark.

Each decode step must read the weights and every live row's cached keys/values once: those bytes at the
measured memory bandwidth (the bytes a large array copy moves per second, read + write). A prefill must
do its FLOPs (matrix products of the real tokens, their attention over the live context, one logit row
per sequence): those at the measured matrix-product peak. The sum is the floor; measured / floor says
how far above it the sampler runs.

The copy probe counts a byte read and a byte written alike, so its rate can exceed what a pass that only
reads reaches; `read_bandwidth_gbs` probes that second limit (a jitted sum over a large array), and a
floor priced at it says how far the decode's reads are from what this machine's XLA reads at all.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np


def memory_bandwidth_gbs(megabytes: int = 256, repeats: int = 5) -> float:
    """Best-of-`repeats` GB/s (read + write) of a jitted elementwise pass over a `megabytes` float32 array."""
    import jax
    import jax.numpy as jnp

    if megabytes < 1 or repeats < 1:
        raise ValueError(f"bandwidth probe needs megabytes >= 1 and repeats >= 1, got {megabytes}, {repeats}")
    x = jnp.ones((megabytes * 2**20 // 4,), jnp.float32)
    nbytes = x.nbytes
    # One read and one write of every byte (a bare copy can be elided); donated, so the output reuses the
    # input's pages instead of faulting in a fresh buffer at every call.
    copy = jax.jit(lambda a: a + 1.0, donate_argnums=0)
    x = copy(x).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        x = copy(x).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2 * nbytes / best / 1e9


def read_bandwidth_gbs(megabytes: int = 256, repeats: int = 5) -> float:
    """Best-of-`repeats` GB/s read by a jitted sum over a `megabytes` float32 array (reads only, a scalar out)."""
    import jax
    import jax.numpy as jnp

    if megabytes < 1 or repeats < 1:
        raise ValueError(f"read probe needs megabytes >= 1 and repeats >= 1, got {megabytes}, {repeats}")
    from benchmarks.shapes import best_of

    x = jnp.ones((megabytes * 2**20 // 4,), jnp.float32)
    total = jax.jit(jnp.sum)
    total(x).block_until_ready()
    return x.nbytes / best_of(lambda _: total(x).block_until_ready(), repeats) / 1e9


def matmul_params_per_token(config: Any) -> int:
    """Weights of the per-token matrix products (projections and MLP; not the embedding or the head)."""
    d, h, k, dh, f = (config.hidden_size, config.num_heads, config.num_kv_heads, config.head_dim,
                      config.intermediate_size)
    return config.num_layers * (2 * d * h * dh + 2 * d * k * dh + 3 * d * f)


def kv_bytes_per_token(config: Any, cache_itemsize: int) -> int:
    return config.num_layers * 2 * config.num_kv_heads * config.head_dim * cache_itemsize


def floor_seconds(work: Any, config: Any, params: Any, cache_itemsize: int, bandwidth_gbs: float,
                  matmul_gflops: float) -> dict[str, float]:
    """(`floor_decode_s`, `floor_prefill_s`, `floor_s`) of `work` (a `SamplerWork`) for a model of
    `config` whose parameters are `params` (their bytes are what a decode step reads)."""
    import jax

    weight_bytes = sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(params))
    decode_bytes = work.decode_steps * weight_bytes + work.decode_kv_tokens * kv_bytes_per_token(config, cache_itemsize)
    attn_flops_per_pair = 4 * config.num_layers * config.num_heads * config.head_dim  # q.k and p.v
    prefill_flops = (2 * matmul_params_per_token(config) * work.prefill_tokens
                     + attn_flops_per_pair * work.prefill_attention_pairs
                     + 2 * config.hidden_size * config.vocab_size * work.prefill_logit_rows)
    decode_s = decode_bytes / (bandwidth_gbs * 1e9)
    prefill_s = prefill_flops / (matmul_gflops * 1e9)
    return {"floor_decode_s": decode_s, "floor_prefill_s": prefill_s, "floor_s": decode_s + prefill_s,
            "decode_bytes": float(decode_bytes), "prefill_gflop": prefill_flops / 1e9}
