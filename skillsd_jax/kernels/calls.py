"""The CPU kernels as JAX functions (XLA FFI custom calls into the library `cpu_build` builds); each
builds and registers the library on its first use."""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from skillsd_jax.kernels.cpu_build import register_cpu_kernels

QUERY_HEADS_PER_KV_HEAD = (1, 2, 4, 8)  # the decode attention kernel's compiled variants


def _prefix_or_empty(k: int, dh: int, prefix_keys, prefix_values, prefix_length):
    if prefix_keys is None:
        return jnp.zeros((k, dh, 0), jnp.float32), jnp.zeros((k, 0, dh), jnp.float32), jnp.int32(0)
    return prefix_keys.astype(jnp.float32), prefix_values.astype(jnp.float32), jnp.asarray(prefix_length, jnp.int32)


def _check_cache(keys: Sequence[jax.Array], values: Sequence[jax.Array]) -> None:
    if any(x.dtype != jnp.float32 for x in (*keys, *values)):
        raise ValueError("the CPU attention kernels read a float32 cache")


def decode_attention(q_BxKxGxDh: jax.Array, q_slot_B: jax.Array, keys: Sequence[jax.Array],
                     values: Sequence[jax.Array], prefix_keys_KxDhxP: jax.Array | None = None,
                     prefix_values_KxPxDh: jax.Array | None = None,
                     prefix_length: jax.Array | None = None) -> jax.Array:
    """One query per row (the G query heads of each kv head) attending to the shared prefix (its first
    `prefix_length` slots) and to its cache segments (`keys[j] [B,K,Dh,S]`, `values[j] [B,K,S,Dh]`),
    slots `0..q_slot_B[b]` visible: the normalized output `[B,K,G,Dh]`, float32 (`decode_attention.cc`)."""
    register_cpu_kernels()
    _check_cache(keys, values)
    b, k, g, dh = q_BxKxGxDh.shape
    prefix = _prefix_or_empty(k, dh, prefix_keys_KxDhxP, prefix_values_KxPxDh, prefix_length)
    call = jax.ffi.ffi_call("skillsd_decode_attention", jax.ShapeDtypeStruct((b, k, g, dh), jnp.float32),
                            vmap_method="sequential")
    return call(q_BxKxGxDh.astype(jnp.float32), q_slot_B.astype(jnp.int32), prefix[2], prefix[0], prefix[1],
                *keys, *values, scale=np.float32(1.0 / np.sqrt(dh)))


def prefill_attention(q_BxKxGxTxDh: jax.Array, q_slot_BxT: jax.Array, keys: Sequence[jax.Array],
                      values: Sequence[jax.Array], prefix_keys_KxDhxP: jax.Array | None = None,
                      prefix_values_KxPxDh: jax.Array | None = None,
                      prefix_length: jax.Array | None = None) -> jax.Array:
    """`decode_attention` for a chunk of T tokens a row, token `t` of row `b` at slot `q_slot_BxT[b, t]`
    seeing its row's slots up to its own: the normalized output `[B,K,G,T,Dh]` (`prefill_attention.cc`)."""
    register_cpu_kernels()
    _check_cache(keys, values)
    b, k, g, t, dh = q_BxKxGxTxDh.shape
    prefix = _prefix_or_empty(k, dh, prefix_keys_KxDhxP, prefix_values_KxPxDh, prefix_length)
    call = jax.ffi.ffi_call("skillsd_prefill_attention", jax.ShapeDtypeStruct((b, k, g, t, dh), jnp.float32),
                            vmap_method="sequential")
    return call(q_BxKxGxTxDh.astype(jnp.float32), q_slot_BxT.astype(jnp.int32), prefix[2], prefix[0], prefix[1],
                *keys, *values, scale=np.float32(1.0 / np.sqrt(dh)))


def rows_matmul(x: jax.Array, w_KxN: jax.Array) -> jax.Array:
    """`x @ w_KxN` (float32) for the few rows of a decode step (`x [..., K]`, all leading dims as rows),
    reading `w_KxN` once in its own layout (`decode_matmul.cc`)."""
    register_cpu_kernels()
    if x.dtype != jnp.float32 or w_KxN.dtype != jnp.float32:
        raise ValueError(f"the CPU decode matmul takes float32 operands, got {x.dtype} and {w_KxN.dtype}")
    k, n = w_KxN.shape
    if x.shape[-1] != k:
        raise ValueError(f"the CPU decode matmul: x {x.shape} does not match w {w_KxN.shape}")
    rows = x.reshape(-1, k)
    out = jax.ffi.ffi_call("skillsd_rows_matmul", jax.ShapeDtypeStruct((rows.shape[0], n), jnp.float32),
                           vmap_method="sequential")(rows, w_KxN)
    return out.reshape(*x.shape[:-1], n)
