"""Per-token log-probs of given targets without materializing `[B,T,V]` logits at once.

The unembedding and log-softmax run over chunks of the sequence; when all chunks' logits together
would exceed `REMAT_ABOVE_BYTES`, each chunk runs under `jax.checkpoint`, so the backward pass also
holds at most `[B, chunk, V]` logits: long agent trajectories fit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from skillsd_jax.models.transformer import Transformer

Array = jax.Array
REMAT_ABOVE_BYTES = 256 * 1024**2  # float32 logits of every chunk together
DEFAULT_CHUNK = 256


def chunked_logprobs(hidden_BxTxD: Array, unembed_DxV: Array, targets_BxT: Array, *, chunk_size: int = 0,
                     with_entropy: bool = False, compute_dtype=None,
                     temperature: float = 1.0) -> tuple[Array, Array | None]:
    """log softmax(h @ W / temperature)[target] per position (float32), and the entropy when asked.

    `temperature` is the sampler's: a token drawn at temperature T must be scored under the same
    tempered distribution, or importance ratios against the sampler's log-probs are biased.

    Work is split into ceil(T / chunk_size) chunks (`chunk_size=0`: automatic); padding added to the
    last chunk is dropped.
    """
    b, t, d = hidden_BxTxD.shape
    if chunk_size <= 0:  # auto: one chunk (no loop) when every logit fits, else 256 positions
        chunk_size = t if b * t * unembed_DxV.shape[1] * 4 <= REMAT_ABOVE_BYTES else DEFAULT_CHUNK
    chunk = max(1, min(chunk_size, t))
    n = -(-t // chunk)
    pad = n * chunk - t
    h = jnp.pad(hidden_BxTxD, ((0, 0), (0, pad), (0, 0)))
    y = jnp.pad(targets_BxT.astype(jnp.int32), ((0, 0), (0, pad)))
    # [n, B, chunk, ...] so lax.map walks the chunks.
    h = h.reshape(b, n, chunk, d).transpose(1, 0, 2, 3)
    y = y.reshape(b, n, chunk).transpose(1, 0, 2)
    dtype = compute_dtype or hidden_BxTxD.dtype
    w = unembed_DxV.astype(dtype)
    # Recompute chunk logits in the backward pass only when keeping them all would be large.
    keep_all_bytes = b * n * chunk * unembed_DxV.shape[1] * 4
    maybe_remat = jax.checkpoint if keep_all_bytes > REMAT_ABOVE_BYTES else (lambda f: f)

    @maybe_remat
    def one(args):
        h_c, y_c = args
        logits = jnp.einsum("bcd,dv->bcv", h_c.astype(dtype), w, preferred_element_type=jnp.float32)
        if temperature != 1.0:
            logits = logits / temperature
        lse = jax.nn.logsumexp(logits, axis=-1)
        picked = jnp.take_along_axis(logits, y_c[..., None], axis=-1)[..., 0]
        logp = picked - lse
        if not with_entropy:
            return logp, jnp.zeros_like(logp)
        probs = jnp.exp(logits - lse[..., None])
        entropy = lse - jnp.sum(probs * logits, axis=-1)
        return logp, entropy

    logp, ent = jax.lax.map(one, (h, y))
    logp = logp.transpose(1, 0, 2).reshape(b, n * chunk)[:, :t]
    ent = ent.transpose(1, 0, 2).reshape(b, n * chunk)[:, :t]
    return logp, (ent if with_entropy else None)


def token_logprobs(model: Transformer, input_ids: Array, targets: Array | None = None, *,
                   positions: Array | None = None, attention_mask: Array | None = None,
                   segment_ids: Array | None = None, chunk_size: int = 0,
                   with_entropy: bool = False) -> tuple[Array, Array | None]:
    """Log-prob `[B,T]` of `targets` at each position (default: the next input token, last position 0).

    `logp[:, t]` scores `targets[:, t]` given tokens `<= t`.
    """
    h = model.hidden_states(input_ids, positions, attention_mask, segment_ids)
    if targets is None:
        targets = jnp.concatenate([input_ids[:, 1:], jnp.zeros_like(input_ids[:, :1])], axis=1)
    logp, ent = chunked_logprobs(h, model.unembedding(), targets, chunk_size=chunk_size,
                                 with_entropy=with_entropy, compute_dtype=model.dtype)
    return logp, ent
