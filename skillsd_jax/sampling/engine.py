"""Jitted batched generation over a preallocated KV cache, with multi-turn continuation.

Layout: every row's tokens occupy cache slots in time order; a chunk of new tokens (a prompt, an
observation) is written left-padded into slots `[cursor, cursor + C)` for all rows at once, and decoding
writes one slot per step. Per-slot validity masks padding and the slots after a row stopped, and each
token carries its own RoPE position, so rows of unequal lengths share one cache and one program.

Shapes are padded to buckets (batch: powers of two; chunk and new-token counts: powers of two >= 16;
cache slots: multiples of 64), so a training run compiles a handful of programs. Each new program is
counted and logged (`Sampler.num_compilations`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from skillsd_jax import sharding as shd
from skillsd_jax.models.transformer import KVCache
from skillsd_jax.sampling.filters import sample_tokens
from skillsd_jax.sampling.params import (MAX_STOP_SEQUENCE_LEN, MAX_STOP_SEQUENCES, MAX_STOP_TOKENS,
                                         SamplingParams)

log = logging.getLogger(__name__)

STOP_REASONS = ("length", "stop_token", "stop_sequence")
INACTIVE = "inactive"  # a row given no new tokens in `extend` (its episode already ended)
SLOT_QUANTUM = 64


def _pow2_bucket(n: int, minimum: int) -> int:
    return max(minimum, 1 << max(0, math.ceil(math.log2(max(n, 1)))))


@dataclasses.dataclass
class Completion:
    """One row's generated tokens, their sampler log-probs and why generation stopped."""

    tokens: list[int]
    logprobs: list[float]
    stop_reason: str


@dataclasses.dataclass
class DecodeSession:
    """Device-side state of a batch of ongoing sequences (one per episode) between turns."""

    cache: KVCache
    cursor: int  # next free cache slot (shared by all rows)
    lengths: np.ndarray  # [batch_bucket] tokens so far per row = next RoPE position
    num_rows: int  # real rows; the rest of the bucket is padding

    @property
    def slots(self) -> int:
        return self.cache.slots


# ---------------------------------------------------------------------------- device programs


def _prefill(graphdef, params, cache: KVCache, ids, positions, valid, start):
    model = nnx.merge(graphdef, params)
    b, c = ids.shape
    logits, cache = model.forward_chunk(ids, positions, valid, cache, start, logits_at=jnp.full((b,), c - 1))
    return logits, cache


def _decode(graphdef, params, cache: KVCache, logits, lengths, active, start, rng, temperature, top_p,
            stop_ids, stop_seqs, stop_seq_mask, max_steps, *, max_new: int, greedy: bool, top_k: int,
            use_top_p: bool):
    """Samples up to `max_steps` (<= max_new) tokens per active row in a `lax.while_loop`."""
    model = nnx.merge(graphdef, params)
    b = logits.shape[0]
    lmax = stop_seqs.shape[1]
    # Generated tokens, left-padded by lmax-1 sentinels so stop-sequence windows never index < 0.
    buf = jnp.full((b, max_new + lmax - 1), -1, jnp.int32)
    logps = jnp.zeros((b, max_new), jnp.float32)
    done = ~active
    reason = jnp.zeros((b,), jnp.int32)
    n_gen = jnp.zeros((b,), jnp.int32)
    uniforms = jax.random.uniform(rng, (max_new, b), jnp.float32)  # all draws at once (see sample_tokens)

    def cond(carry):
        step, _, _, done, *_ = carry
        return (step < max_steps) & ~jnp.all(done)

    def body(carry):
        step, buf, logps, done, reason, n_gen, cache, logits, lengths = carry
        tok, lp = sample_tokens(uniforms[step], logits, temperature=temperature, greedy=greedy, top_k=top_k,
                                top_p=top_p, use_top_p=use_top_p)
        live = ~done
        tok = jnp.where(live, tok, 0)
        buf = jax.lax.dynamic_update_slice_in_dim(buf, tok[:, None], step + lmax - 1, axis=1)
        logps = jax.lax.dynamic_update_slice_in_dim(logps, jnp.where(live, lp, 0.0)[:, None], step, axis=1)
        hit_tok = jnp.any((tok[:, None] == stop_ids[None, :]) & (stop_ids[None, :] >= 0), axis=1)
        window = jax.lax.dynamic_slice_in_dim(buf, step, lmax, axis=1)  # last lmax generated tokens
        seq_hit = jnp.all((window[:, None, :] == stop_seqs[None]) | ~stop_seq_mask[None], axis=2)
        hit_seq = jnp.any(seq_hit & jnp.any(stop_seq_mask, axis=1)[None, :], axis=1)
        newly = live & (hit_tok | hit_seq)
        reason = jnp.where(newly, jnp.where(hit_tok, 1, 2), reason)
        n_gen = n_gen + live
        logits, cache = model.forward_chunk(tok[:, None], lengths[:, None], live[:, None], cache, start + step,
                                            logits_at=jnp.zeros((b,), jnp.int32))
        lengths = lengths + live
        return step + 1, buf, logps, done | newly, reason, n_gen, cache, logits, lengths

    carry = (jnp.int32(0), buf, logps, done, reason, n_gen, cache, logits, lengths)
    steps, buf, logps, done, reason, n_gen, cache, _, lengths = jax.lax.while_loop(cond, body, carry)
    return buf[:, lmax - 1:], logps, n_gen, reason, steps, cache, lengths


def _grow_cache(cache: KVCache, new_slots: int) -> KVCache:
    pad = new_slots - cache.slots
    grow_k = lambda x: jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, pad)))
    grow_v = lambda x: jnp.pad(x, ((0, 0), (0, 0), (0, pad), (0, 0)))
    return KVCache(k=tuple(map(grow_k, cache.k)), v=tuple(map(grow_v, cache.v)),
                   valid=jnp.pad(cache.valid, ((0, 0), (0, pad))))


# ---------------------------------------------------------------------------- host driver


class Sampler:
    """Batched generation for one model architecture; parameters are passed per call (they change
    every training step) so one Sampler and its compiled programs serve a whole run."""

    def __init__(self, graphdef: Any, config: Any, *, mesh: Mesh | None = None, cache_dtype: Any = None,
                 min_chunk: int = 16, min_new_tokens_bucket: int = 16, warn_after_programs: int = 48):
        self.graphdef = graphdef
        self.config = config
        self.mesh = mesh
        self.cache_dtype = cache_dtype
        self.min_chunk = min_chunk
        self.min_new = min_new_tokens_bucket
        self.warn_after_programs = warn_after_programs
        self._programs: set[tuple] = set()
        self._cache_inits: dict[tuple[int, int], Any] = {}
        self._prefill = jax.jit(_prefill, static_argnums=0, donate_argnums=2)
        self._decode = jax.jit(_decode, static_argnums=0, donate_argnums=2,
                               static_argnames=("max_new", "greedy", "top_k", "use_top_p"))

    @classmethod
    def for_model(cls, model: nnx.Module, **kwargs) -> tuple["Sampler", Any]:
        """A Sampler for `model` and its parameters (`nnx.split`)."""
        graphdef, params = nnx.split(model)
        dtype = kwargs.pop("cache_dtype", None) or model.dtype
        return cls(graphdef, model.config, cache_dtype=dtype, **kwargs), params

    @property
    def num_compilations(self) -> int:
        """Distinct programs compiled so far (cache initializer, prefill and decode shapes)."""
        return len(self._programs)

    def _note_program(self, key: tuple) -> None:
        if key not in self._programs:
            self._programs.add(key)
            level = logging.WARNING if len(self._programs) > self.warn_after_programs else logging.INFO
            log.log(level, "sampler compiles program #%d: %s", len(self._programs), key)

    # ------------------------------------------------------------------ shapes

    def _batch_bucket(self, n: int) -> int:
        b = _pow2_bucket(n, 1)
        if self.mesh is not None:
            data = math.prod(self.mesh.shape[a] for a in shd.BATCH_AXES)
            b = -(-b // data) * data
        return b

    def _slot_bucket(self, n: int) -> int:
        return -(-n // SLOT_QUANTUM) * SLOT_QUANTUM

    def _batch_sharding(self, ndim: int) -> NamedSharding | None:
        return None if self.mesh is None else shd.batch_sharding(self.mesh, ndim)

    def _put(self, x: np.ndarray) -> jax.Array:
        sharding = self._batch_sharding(x.ndim)
        return jnp.asarray(x) if sharding is None else jax.device_put(x, sharding)

    def _new_cache(self, batch: int, slots: int) -> KVCache:
        """A zeroed cache, made on device by one jitted program per (batch, slots) bucket (kept: a fresh
        `jax.jit` per call would recompile at every `begin`, ~70 ms on a CPU mesh)."""
        key = (batch, slots)
        self._note_program(("cache_init", *key))
        if key not in self._cache_inits:
            init = functools.partial(KVCache.init, self.config, batch, slots, self.cache_dtype or jnp.float32)
            self._cache_inits[key] = jax.jit(init, out_shardings=self._cache_shardings(batch, slots))
        return self._cache_inits[key]()

    def _cache_shardings(self, batch: int, slots: int) -> KVCache | None:
        if self.mesh is None:
            return None
        kv_spec = shd.logical_to_pspec(("batch", "kv_heads", None, None),
                                       (batch, self.config.num_kv_heads, slots, self.config.head_dim), self.mesh)
        # keys are [B, K, Dh, S]: the same spec (batch, kv heads) applies
        valid_spec = shd.logical_to_pspec(("batch", None), (batch, slots), self.mesh)
        return KVCache(k=(NamedSharding(self.mesh, kv_spec),) * self.config.num_layers,
                       v=(NamedSharding(self.mesh, kv_spec),) * self.config.num_layers,
                       valid=NamedSharding(self.mesh, valid_spec))

    # ------------------------------------------------------------------ public API

    def generate(self, params: Any, prompts: Sequence[Sequence[int]], *, max_new_tokens: int,
                 sampling: SamplingParams = SamplingParams(), seed: int = 0) -> list[Completion]:
        """Completions for independent prompts (a fresh cache)."""
        _, completions = self.begin(params, prompts, max_new_tokens=max_new_tokens, sampling=sampling, seed=seed)
        return completions

    def begin(self, params: Any, prompts: Sequence[Sequence[int]], *, max_new_tokens: int,
              sampling: SamplingParams = SamplingParams(), seed: int = 0,
              reserve_slots: int = 0) -> tuple[DecodeSession, list[Completion]]:
        """Prefills `prompts` into a new cache and generates; the session continues with `extend`.

        `reserve_slots` sizes the cache for later turns up front, avoiding a regrow.
        """
        if not prompts:
            raise ValueError("generate needs at least one prompt")
        if any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        n = len(prompts)
        b = self._batch_bucket(n)
        chunk = _pow2_bucket(max(len(p) for p in prompts), self.min_chunk)
        new_bucket = _pow2_bucket(max_new_tokens, self.min_new)
        slots = self._slot_bucket(chunk + new_bucket + reserve_slots)
        session = DecodeSession(cache=self._new_cache(b, slots), cursor=0, lengths=np.zeros(b, np.int64), num_rows=n)
        rows: list[Sequence[int] | None] = list(prompts) + [None] * (b - n)
        return self._turn(params, session, rows, chunk, max_new_tokens, sampling, seed)

    def extend(self, params: Any, session: DecodeSession, new_tokens: Sequence[Sequence[int] | None], *,
               max_new_tokens: int, sampling: SamplingParams = SamplingParams(),
               seed: int = 0) -> tuple[DecodeSession, list[Completion]]:
        """Continues every row from its cached prefix: appends `new_tokens[i]` (e.g. the next observation,
        token-in/token-out) and generates. `None` (or empty) marks a row that takes no turn."""
        if len(new_tokens) != session.num_rows:
            raise ValueError(f"extend got {len(new_tokens)} rows for a session of {session.num_rows}")
        b = session.lengths.shape[0]
        rows = [t if t else None for t in new_tokens] + [None] * (b - session.num_rows)
        chunk = _pow2_bucket(max((len(t) for t in rows if t), default=1), self.min_chunk)
        need = session.cursor + chunk + _pow2_bucket(max_new_tokens, self.min_new)
        if need > session.slots:
            new_slots = self._slot_bucket(need)
            log.info("sampler cache grows from %d to %d slots", session.slots, new_slots)
            session = dataclasses.replace(session, cache=_grow_cache(session.cache, new_slots))
        return self._turn(params, session, rows, chunk, max_new_tokens, sampling, seed)

    def compact(self, session: DecodeSession, keep: Sequence[int]) -> DecodeSession:
        """A session holding only rows `keep` (in that order), in a smaller batch bucket when possible."""
        if not keep:
            raise ValueError("compact needs at least one row to keep")
        b = self._batch_bucket(len(keep))
        index = np.asarray(list(keep) + [keep[0]] * (b - len(keep)))
        take = lambda x: jnp.take(x, jnp.asarray(index), axis=0)
        cache = KVCache(k=tuple(map(take, session.cache.k)), v=tuple(map(take, session.cache.v)),
                        valid=take(session.cache.valid).at[len(keep):].set(False))
        lengths = session.lengths[index].copy()
        return DecodeSession(cache=cache, cursor=session.cursor, lengths=lengths, num_rows=len(keep))

    # ------------------------------------------------------------------ one turn

    def _turn(self, params, session: DecodeSession, rows: list[Sequence[int] | None], chunk: int,
              max_new_tokens: int, sampling: SamplingParams, seed: int) -> tuple[DecodeSession, list[Completion]]:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        b = len(rows)
        ids = np.zeros((b, chunk), np.int32)
        valid = np.zeros((b, chunk), bool)
        vocab = self.config.vocab_size
        for i, toks in enumerate(rows):
            if toks:
                if len(toks) > chunk:
                    raise ValueError(f"row {i} has {len(toks)} tokens for a chunk of {chunk}")
                arr = np.asarray(toks, np.int64)
                if arr.min() < 0 or arr.max() >= vocab:
                    raise ValueError(f"row {i} has token ids outside [0, {vocab}): {arr.min()}..{arr.max()}")
                ids[i, chunk - len(toks):] = arr
                valid[i, chunk - len(toks):] = True
        active = valid.any(axis=1)
        positions = session.lengths[:, None] + np.cumsum(valid, axis=1) - 1
        positions = np.maximum(positions, 0).astype(np.int32)

        self._note_program(("prefill", b, chunk, session.slots))
        logits, cache = self._prefill(self.graphdef, params, session.cache, self._put(ids), self._put(positions),
                                      self._put(valid), session.cursor)
        lengths = session.lengths + valid.sum(axis=1)
        cursor = session.cursor + chunk

        new_bucket = _pow2_bucket(max_new_tokens, self.min_new)
        stop_ids, stop_seqs, stop_mask = _stop_arrays(sampling)
        statics = dict(max_new=new_bucket, greedy=sampling.greedy, top_k=sampling.top_k,
                       use_top_p=sampling.top_p < 1.0)
        self._note_program(("decode", b, session.slots, *statics.values()))
        tokens, logps, n_gen, reason, steps, cache, new_lengths = self._decode(
            self.graphdef, params, cache, logits, self._put(lengths.astype(np.int32)), self._put(active), cursor,
            jax.random.key(seed), jnp.float32(max(sampling.temperature, 1e-6)), jnp.float32(sampling.top_p),
            stop_ids, stop_seqs, stop_mask, jnp.int32(max_new_tokens), **statics)
        tokens, logps, n_gen, reason = map(np.asarray, (tokens, logps, n_gen, reason))
        steps = int(steps)
        completions = []
        for i in range(session.num_rows):
            if not active[i]:
                completions.append(Completion([], [], INACTIVE))
                continue
            n = int(n_gen[i])
            completions.append(Completion(tokens[i, :n].tolist(), logps[i, :n].tolist(), STOP_REASONS[int(reason[i])]))
        new_session = DecodeSession(cache=cache, cursor=cursor + steps, lengths=np.asarray(new_lengths).astype(np.int64),
                                    num_rows=session.num_rows)
        return new_session, completions


def _stop_arrays(sampling: SamplingParams) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Fixed-size stop-id and right-aligned stop-sequence arrays (-1 = unused), never a new program."""
    ids = np.full((MAX_STOP_TOKENS,), -1, np.int32)
    ids[: len(sampling.stop_token_ids)] = sampling.stop_token_ids
    seqs = np.full((MAX_STOP_SEQUENCES, MAX_STOP_SEQUENCE_LEN), -2, np.int32)
    mask = np.zeros((MAX_STOP_SEQUENCES, MAX_STOP_SEQUENCE_LEN), bool)
    for j, seq in enumerate(sampling.stop_sequences):
        seqs[j, MAX_STOP_SEQUENCE_LEN - len(seq):] = seq
        mask[j, MAX_STOP_SEQUENCE_LEN - len(seq):] = True
    return jnp.asarray(ids), jnp.asarray(seqs), jnp.asarray(mask)
