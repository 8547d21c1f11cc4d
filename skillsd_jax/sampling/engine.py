"""Jitted batched generation over a ragged, segmented KV cache, with multi-turn continuation.

Layout (`models/kv_cache.py`): every row holds its own tokens in its own slots, in order; a chunk of new
tokens (a prompt, an observation) is appended right-padded at each row's length, and decoding appends one
token per live row per step. Attention reads only the filled segments (up to the longest row), the cache
grows by appending segments, and an optional shared prefix (an environment's instructions) is prefilled
once and attended by every row.

Shapes are padded to buckets (batch: powers of two; chunks: four sizes per doubling, >= 16; new
tokens: powers of two >= 16; cache: whole segments), so a training run compiles a handful of programs.
Each new program is counted and logged (`Sampler.num_compilations`).
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

from skillsd_jax import kernels, sharding as shd
from skillsd_jax.models.kv_cache import KVCache, SharedPrefix, zero_segments
from skillsd_jax.models.layers import computed_once
from skillsd_jax.sampling.filters import sample_tokens
from skillsd_jax.sampling.params import (MAX_STOP_SEQUENCE_LEN, MAX_STOP_SEQUENCES, MAX_STOP_TOKENS,
                                         SamplingParams)
from skillsd_jax.sampling.work import SamplerWork

log = logging.getLogger(__name__)

STOP_REASONS = ("length", "stop_token", "stop_sequence")
INACTIVE = "inactive"  # a row given no new tokens in `extend` (its episode already ended)
SEGMENT_SLOTS = 256


def _pow2_bucket(n: int, minimum: int) -> int:
    return max(minimum, 1 << max(0, math.ceil(math.log2(max(n, 1)))))


def _chunk_bucket(n: int, minimum: int) -> int:
    """The smallest of {2^k * (1 + j/8), j = 1..8} >= max(n, minimum) that is a multiple of 8: at most
    an eighth of a chunk is padding (prefill FLOPs, and for a shared prefix every later attention to
    it, follow the chunk), at eight programs per doubling of the length (four from 33 to 64, powers of
    two below)."""
    p = _pow2_bucket(n, minimum)
    if p <= minimum or p < 64:
        return p
    step = max(8, p // 16)
    return next(c for c in range(p // 2 + step, p + 1, step) if c >= n)


@dataclasses.dataclass
class Completion:
    """One row's generated tokens, their sampler log-probs and why generation stopped."""

    tokens: list[int]
    logprobs: list[float]
    stop_reason: str


@dataclasses.dataclass(frozen=True)
class Prefix:
    """A token prefix shared by every row of a call (its KV prefilled once): `begin(..., prefix=)`."""

    tokens: tuple[int, ...]
    cache: SharedPrefix


@dataclasses.dataclass
class DecodeSession:
    """Device-side state of a batch of ongoing sequences (one per episode) between turns."""

    cache: KVCache
    lengths: np.ndarray  # [batch_bucket] context tokens per row (shared prefix included) = next RoPE position
    num_rows: int  # real rows; the rest of the bucket is padding
    prefix: Prefix | None = None

    @property
    def slots(self) -> int:
        return self.cache.slots

    @property
    def own_lengths(self) -> np.ndarray:
        """Tokens each row holds in its own cache slots (the shared prefix excluded)."""
        return self.lengths - (len(self.prefix.tokens) if self.prefix else 0)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class DecodeState:
    """What the decode loop carries from one step to the next."""

    step: jax.Array  # scalar: tokens drawn so far
    tokens_BxN: jax.Array  # drawn tokens, left-padded by (stop-sequence length - 1) sentinels (-1)
    logprobs_BxN: jax.Array
    done_B: jax.Array
    stop_reason_B: jax.Array  # index into STOP_REASONS
    num_generated_B: jax.Array
    logits_BxV: jax.Array  # next-token logits
    cache: KVCache


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class DecodeInputs:
    """Per-call values the decode loop reads but never changes."""

    rng: jax.Array
    temperature: jax.Array
    top_p: jax.Array
    stop_ids_S: jax.Array  # -1 = unused
    stop_seqs_QxL: jax.Array  # right-aligned stop sequences
    stop_seq_mask_QxL: jax.Array
    max_steps: jax.Array  # scalar <= max_new


@dataclasses.dataclass(frozen=True)
class DecodeStatics:
    """Compile-time settings of a decode program (part of its key)."""

    max_new: int
    greedy: bool
    top_k: int
    use_top_p: bool
    transpose_head: bool = False  # a tied head transposed once per call (CPU: see _decode)
    decode_kernel: bool = False  # the CPU kernels (Sampler(decode_kernel=True)): attention, decode products


# ---------------------------------------------------------------------------- device programs


def _prefill(graphdef, params, cache: KVCache, prefix: SharedPrefix | None, ids_BxC, valid_BxC,
             decode_kernel: bool = False):
    model = nnx.merge(graphdef, params)
    last = jnp.maximum(jnp.sum(valid_BxC, axis=1, dtype=jnp.int32) - 1, 0)  # each row's last real token
    return model.forward_chunk(ids_BxC, valid_BxC, cache, prefix, logits_at=last, decode_kernel=decode_kernel)


def _decode(graphdef, params, state: DecodeState, inputs: DecodeInputs, prefix: SharedPrefix | None,
            statics: DecodeStatics, uniforms_NxB: jax.Array) -> DecodeState:
    """Samples up to `inputs.max_steps` (<= statics.max_new) tokens per live row in a `lax.while_loop`,
    step `n` of row `b` drawing with `uniforms_NxB[n, b]` (see sample_tokens)."""
    model = nnx.merge(graphdef, params)
    b = state.logits_BxV.shape[0]
    lmax = inputs.stop_seqs_QxL.shape[1]
    seq_used_Q = jnp.any(inputs.stop_seq_mask_QxL, axis=1)
    # XLA:CPU reads a tied head transposed at every step (~1.4x slower than a plain product): transpose
    # it once for the whole loop. Accelerators' matmuls take the transpose for free, so they keep no copy.
    head = (computed_once(lambda e: e.T, model.embed_tokens[...])
            if statics.transpose_head and model.lm_head is None else None)

    def cond(s: DecodeState):
        return (s.step < inputs.max_steps) & ~jnp.all(s.done_B)

    def body(s: DecodeState) -> DecodeState:
        tok, lp = sample_tokens(uniforms_NxB[s.step], s.logits_BxV, temperature=inputs.temperature,
                                greedy=statics.greedy, top_k=statics.top_k, top_p=inputs.top_p,
                                use_top_p=statics.use_top_p)
        live = ~s.done_B
        tok = jnp.where(live, tok, 0)
        tokens = jax.lax.dynamic_update_slice_in_dim(s.tokens_BxN, tok[:, None], s.step + lmax - 1, axis=1)
        logps = jax.lax.dynamic_update_slice_in_dim(s.logprobs_BxN, jnp.where(live, lp, 0.0)[:, None], s.step,
                                                    axis=1)
        stop_ids = inputs.stop_ids_S
        hit_tok = jnp.any((tok[:, None] == stop_ids[None, :]) & (stop_ids[None, :] >= 0), axis=1)
        window = jax.lax.dynamic_slice_in_dim(tokens, s.step, lmax, axis=1)  # last lmax drawn tokens
        seq_hit = jnp.all((window[:, None, :] == inputs.stop_seqs_QxL[None]) | ~inputs.stop_seq_mask_QxL[None], axis=2)
        hit_seq = jnp.any(seq_hit & seq_used_Q[None, :], axis=1)
        newly = live & (hit_tok | hit_seq)
        # A finished row's token is not appended: its length stays, its slot is overwritten later.
        logits, cache = model.forward_chunk(tok[:, None], live[:, None], s.cache, prefix,
                                            logits_at=jnp.zeros((b,), jnp.int32), unembedding=head,
                                            decode_kernel=statics.decode_kernel)
        return DecodeState(step=s.step + 1, tokens_BxN=tokens, logprobs_BxN=logps, done_B=s.done_B | newly,
                           stop_reason_B=jnp.where(newly, jnp.where(hit_tok, 1, 2), s.stop_reason_B),
                           num_generated_B=s.num_generated_B + live, logits_BxV=logits, cache=cache)

    return jax.lax.while_loop(cond, body, state)


def _initial_state(logits_BxV, cache: KVCache, active_B, max_new: int, lmax: int) -> DecodeState:
    b = logits_BxV.shape[0]
    return DecodeState(step=jnp.int32(0), tokens_BxN=jnp.full((b, max_new + lmax - 1), -1, jnp.int32),
                       logprobs_BxN=jnp.zeros((b, max_new), jnp.float32), done_B=~active_B,
                       stop_reason_B=jnp.zeros((b,), jnp.int32), num_generated_B=jnp.zeros((b,), jnp.int32),
                       logits_BxV=logits_BxV, cache=cache)


def _turn_rows(graphdef, params, cache, prefix, ids_BxC, valid_BxC, inputs: DecodeInputs, uniforms_NxB,
               statics: DecodeStatics):
    """One turn of some rows: append the chunk, then sample. Returns (tokens, logprobs, counts, reasons, cache)."""
    logits, cache = _prefill(graphdef, params, cache, prefix, ids_BxC, valid_BxC, statics.decode_kernel)
    state = _initial_state(logits, cache, jnp.any(valid_BxC, axis=1), statics.max_new, inputs.stop_seqs_QxL.shape[1])
    state = _decode(graphdef, params, state, inputs, prefix, statics, uniforms_NxB)
    lmax = inputs.stop_seqs_QxL.shape[1]
    return (state.tokens_BxN[:, lmax - 1:], state.logprobs_BxN, state.num_generated_B, state.stop_reason_B,
            state.cache)


def _prefill_and_decode(graphdef, params, cache, prefix, ids_BxC, valid_BxC, inputs: DecodeInputs,
                        statics: DecodeStatics, row_mesh: Mesh | None = None):
    """One turn of every row. With `row_mesh` (a mesh whose only axis of size > 1 is `data`, parameters
    replicated) each device runs the turn on its own rows with no communication: its decode loop
    stops when its rows are done and skips the cache segments its rows have not filled, instead of
    agreeing with the other devices at every step. The draws are made for the whole batch first, so
    a row samples the same tokens however the batch is split."""
    uniforms_NxB = jax.random.uniform(inputs.rng, (statics.max_new, ids_BxC.shape[0]), jnp.float32)
    turn = functools.partial(_turn_rows, graphdef, statics=statics)
    if row_mesh is None:
        return turn(params, cache, prefix, ids_BxC, valid_BxC, inputs, uniforms_NxB)
    rows, shared = P("data"), P()
    # check_vma off: the cache's segment skip (`lax.cond`) has one branch computed from the rows and
    # one of constants, which that check types as varying and replicated.
    return jax.shard_map(turn, mesh=row_mesh, in_specs=(shared, rows, shared, rows, rows, shared, P(None, "data")),
                         out_specs=rows, check_vma=False)(params, cache, prefix, ids_BxC, valid_BxC, inputs,
                                                           uniforms_NxB)


# ---------------------------------------------------------------------------- host driver


class Sampler:
    """Batched generation for one model architecture; parameters are passed per call (they change
    every training step) so one Sampler and its compiled programs serve a whole run.

    `cache_dtype` stores keys/values in another dtype than the compute (e.g. bfloat16 with float32
    compute: half the cache memory and reads); `segment_slots` is the cache's growth and skip unit.
    `decode_kernel` (XLA:CPU, float32 model and cache): the sampler's hand-written CPU kernels
    (`skillsd_jax.kernels`, built on first use): every chunk's attention to the cache reads only the
    slots each query sees (a decode step's in one call a layer), and a decode step's matrix products
    read the weights in place; their float results differ from XLA's in the last bits, so sampled
    tokens can too.
    """

    def __init__(self, graphdef: Any, config: Any, *, mesh: Mesh | None = None, cache_dtype: Any = None,
                 min_chunk: int = 16, min_new_tokens_bucket: int = 16, segment_slots: int = SEGMENT_SLOTS,
                 warn_after_programs: int = 48, decode_kernel: bool = False):
        if segment_slots < 1:
            raise ValueError(f"segment_slots must be >= 1, got {segment_slots}")
        self.graphdef = graphdef
        self.config = config
        self.mesh = mesh
        self.cache_dtype = cache_dtype
        self.min_chunk = min_chunk
        self.min_new = min_new_tokens_bucket
        self.segment_slots = segment_slots
        self.warn_after_programs = warn_after_programs
        self._programs: set[tuple] = set()
        self.work = SamplerWork()  # what the calls so far had to do (live lengths), for benchmark floors
        self._segment_inits: dict[tuple[int, int], Any] = {}
        self._on_cpu = (mesh.devices.flat[0] if mesh is not None else jax.devices()[0]).platform == "cpu"
        if decode_kernel:
            _check_decode_kernel(self._on_cpu, cache_dtype, config)
        self.decode_kernel = decode_kernel
        self._prefill_only = jax.jit(_prefill, static_argnums=(0, 6), donate_argnums=2)
        row_mesh = mesh if mesh is not None and mesh.size == mesh.shape.get("data", 1) > 1 else None
        self._turn_program = jax.jit(functools.partial(_prefill_and_decode, row_mesh=row_mesh),
                                     static_argnums=(0, 7), donate_argnums=2)

    @classmethod
    def for_model(cls, model: nnx.Module, *, mesh: Mesh | None = None, **kwargs) -> tuple["Sampler", Any]:
        """A Sampler for `model` and its parameters (`nnx.split`), placed on `mesh` when one is given."""
        graphdef, params = nnx.split(model)
        dtype = kwargs.pop("cache_dtype", None) or model.dtype
        if kwargs.get("decode_kernel") and jnp.dtype(model.dtype) != jnp.float32:
            raise ValueError(f"decode_kernel=True computes in float32, this model in {jnp.dtype(model.dtype)}")
        if mesh is not None:
            params = shd.shard_state(params, mesh)
        return cls(graphdef, model.config, mesh=mesh, cache_dtype=dtype, **kwargs), params

    @property
    def num_compilations(self) -> int:
        """Distinct programs compiled so far (cache segment initializers, prefix prefill and turn shapes)."""
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

    def _batch_sharding(self, ndim: int) -> NamedSharding | None:
        return None if self.mesh is None else shd.batch_sharding(self.mesh, ndim)

    def _put(self, x: np.ndarray) -> jax.Array:
        sharding = self._batch_sharding(x.ndim)
        return jnp.asarray(x) if sharding is None else jax.device_put(x, sharding)

    def _new_segments(self, batch: int, slots: int) -> tuple[tuple, tuple]:
        """One zeroed segment per layer, made on device by one jitted program per (batch, slots) (kept:
        a fresh `jax.jit` per call would recompile at every `begin`, ~70 ms on a CPU mesh)."""
        key = (batch, slots)
        self._note_program(("segment_init", *key))
        if key not in self._segment_inits:
            init = functools.partial(zero_segments, self.config, batch, 1, slots, self.cache_dtype or jnp.float32)
            self._segment_inits[key] = jax.jit(init, out_shardings=self._segment_shardings(batch, slots))
        return self._segment_inits[key]()

    def _segment_shardings(self, batch: int, slots: int) -> tuple | None:
        if self.mesh is None:
            return None
        cfg = self.config
        spec = shd.logical_to_pspec(("batch", "kv_heads", None, None), (batch, cfg.num_kv_heads, slots, cfg.head_dim),
                                    self.mesh)
        per_layer = ((NamedSharding(self.mesh, spec),),) * cfg.num_layers  # keys [B,K,Dh,S]: same spec
        return per_layer, per_layer

    def _new_cache(self, batch: int, slots_needed: int, slots: int | None = None) -> KVCache:
        slots = slots or self.segment_slots
        cache = KVCache(keys=((),) * self.config.num_layers, values=((),) * self.config.num_layers,
                        lengths_B=self._put(np.zeros(batch, np.int32)))
        return self._grow(cache, slots_needed, slots)

    def _grow(self, cache: KVCache, slots_needed: int, slots: int | None = None) -> KVCache:
        """Appends zeroed segments until `slots_needed` fit; the filled segments are not copied."""
        slots = slots or self.segment_slots
        have = cache.slots if cache.keys[0] else 0
        while have < slots_needed:
            cache = cache.with_segments(*self._new_segments(cache.batch, slots))
            have += slots
        return cache

    # ------------------------------------------------------------------ public API

    def prefill_prefix(self, params: Any, tokens: Sequence[int]) -> Prefix:
        """Prefills `tokens` once, for every row of later `begin(..., prefix=)` calls to attend."""
        tokens = tuple(int(t) for t in tokens)
        if not tokens:
            raise ValueError("a shared prefix needs at least one token")
        self._check_ids(tokens, "the prefix")
        b = self._batch_bucket(1)  # one row (a mesh needs a row per data shard: the copies are identical)
        p = _chunk_bucket(len(tokens), self.min_chunk)
        ids = np.zeros((b, p), np.int32)
        ids[:, :len(tokens)] = tokens
        valid = np.zeros((b, p), bool)
        valid[:, :len(tokens)] = True
        self._note_program(("prefix_prefill", b, p))
        _, cache = self._prefill_only(self.graphdef, params, self._new_cache(b, p, p), None, self._put(ids),
                                      self._put(valid), self.decode_kernel)
        self.work.add_prefill(np.zeros(1), np.asarray([len(tokens)]))
        shared = SharedPrefix(keys=tuple(k[0][0] for k in cache.keys), values=tuple(v[0][0] for v in cache.values),
                              length=jnp.int32(len(tokens)))
        return Prefix(tokens=tokens, cache=shared)

    def generate(self, params: Any, prompts: Sequence[Sequence[int]], *, max_new_tokens: int,
                 sampling: SamplingParams = SamplingParams(), seed: int = 0,
                 prefix: Prefix | None = None) -> list[Completion]:
        """Completions for independent prompts (a fresh cache)."""
        _, completions = self.begin(params, prompts, max_new_tokens=max_new_tokens, sampling=sampling, seed=seed,
                                    prefix=prefix)
        return completions

    def begin(self, params: Any, prompts: Sequence[Sequence[int]], *, max_new_tokens: int,
              sampling: SamplingParams = SamplingParams(), seed: int = 0, reserve_slots: int = 0,
              prefix: Prefix | None = None) -> tuple[DecodeSession, list[Completion]]:
        """Prefills `prompts` into a new cache and generates; the session continues with `extend`.

        With `prefix` (from `prefill_prefix`), every prompt must start with its tokens and have at least
        one more: only the rest is prefilled per row. `reserve_slots` sizes the cache for later turns up
        front (fewer distinct programs; empty segments cost no attention reads).
        """
        if not prompts:
            raise ValueError("generate needs at least one prompt")
        if any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        shared = len(prefix.tokens) if prefix else 0
        if prefix:
            for i, p in enumerate(prompts):
                if len(p) <= shared or tuple(p[:shared]) != prefix.tokens:
                    raise ValueError(f"prompt {i} does not extend the shared prefix of {shared} tokens")
        n = len(prompts)
        b = self._batch_bucket(n)
        own = [list(p[shared:]) for p in prompts]
        chunk = _chunk_bucket(max(map(len, own)), self.min_chunk)
        cache = self._new_cache(b, max(map(len, own)) + max_new_tokens + reserve_slots)
        lengths = np.zeros(b, np.int64)
        lengths[:] = shared
        session = DecodeSession(cache=cache, lengths=lengths, num_rows=n, prefix=prefix)
        rows: list[Sequence[int] | None] = own + [None] * (b - n)
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
        chunk = _chunk_bucket(max((len(t) for t in rows if t), default=1), self.min_chunk)
        own = session.own_lengths
        need = int(max(own[i] + (len(t) if t else 0) for i, t in enumerate(rows))) + max_new_tokens
        if need > session.slots:
            log.info("sampler cache grows from %d to >= %d slots", session.slots, need)
            session = dataclasses.replace(session, cache=self._grow(session.cache, need))
        return self._turn(params, session, rows, chunk, max_new_tokens, sampling, seed)

    def compact(self, session: DecodeSession, keep: Sequence[int]) -> DecodeSession:
        """A session holding only rows `keep` (in that order), in a smaller batch bucket when possible."""
        if not keep:
            raise ValueError("compact needs at least one row to keep")
        b = self._batch_bucket(len(keep))
        index = np.asarray(list(keep) + [keep[0]] * (b - len(keep)))
        cache = session.cache.take_rows(jnp.asarray(index))
        return DecodeSession(cache=cache, lengths=session.lengths[index].copy(), num_rows=len(keep),
                             prefix=session.prefix)

    # ------------------------------------------------------------------ one turn

    def _check_ids(self, toks: Sequence[int], what: str) -> np.ndarray:
        arr = np.asarray(toks, np.int64)
        vocab = self.config.vocab_size
        if arr.min() < 0 or arr.max() >= vocab:
            raise ValueError(f"{what} has token ids outside [0, {vocab}): {arr.min()}..{arr.max()}")
        return arr

    def _turn(self, params, session: DecodeSession, rows: list[Sequence[int] | None], chunk: int,
              max_new_tokens: int, sampling: SamplingParams, seed: int) -> tuple[DecodeSession, list[Completion]]:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        b = len(rows)
        ids = np.zeros((b, chunk), np.int32)
        valid = np.zeros((b, chunk), bool)
        for i, toks in enumerate(rows):
            if toks:
                if len(toks) > chunk:
                    raise ValueError(f"row {i} has {len(toks)} tokens for a chunk of {chunk}")
                ids[i, :len(toks)] = self._check_ids(toks, f"row {i}")
                valid[i, :len(toks)] = True
        active = valid.any(axis=1)

        stop_ids, stop_seqs, stop_mask = _stop_arrays(sampling)
        statics = DecodeStatics(max_new=_pow2_bucket(max_new_tokens, self.min_new), greedy=sampling.greedy,
                                top_k=sampling.top_k, use_top_p=sampling.top_p < 1.0, transpose_head=self._on_cpu,
                                decode_kernel=self.decode_kernel)
        inputs = DecodeInputs(rng=jax.random.key(seed), temperature=jnp.float32(max(sampling.temperature, 1e-6)),
                              top_p=jnp.float32(sampling.top_p), stop_ids_S=stop_ids, stop_seqs_QxL=stop_seqs,
                              stop_seq_mask_QxL=stop_mask, max_steps=jnp.int32(max_new_tokens))
        prefix = session.prefix.cache if session.prefix else None
        self._note_program(("turn", b, chunk, session.cache.num_segments, session.cache.segment_slots,
                            prefix.slots if prefix else 0, dataclasses.astuple(statics)))
        tokens, logps, n_gen, reason, cache = self._turn_program(
            self.graphdef, params, session.cache, prefix, self._put(ids), self._put(valid), inputs, statics)
        tokens, logps, n_gen, reason = jax.device_get((tokens, logps, n_gen, reason))  # the call's one transfer
        completions = []
        for i in range(session.num_rows):
            if not active[i]:
                completions.append(Completion([], [], INACTIVE))
                continue
            n = int(n_gen[i])
            completions.append(Completion(tokens[i, :n].tolist(), logps[i, :n].tolist(), STOP_REASONS[int(reason[i])]))
        prefilled = session.lengths + valid.sum(axis=1)
        self.work.add_prefill(session.lengths, valid.sum(axis=1))
        self.work.add_decode(prefilled[active], n_gen[active])
        lengths = prefilled + n_gen
        new_session = DecodeSession(cache=cache, lengths=lengths.astype(np.int64), num_rows=session.num_rows,
                                    prefix=session.prefix)
        return new_session, completions


def _check_decode_kernel(on_cpu: bool, cache_dtype: Any, config: Any) -> None:
    """A clear error where the CPU kernels cannot serve this sampler."""
    if not on_cpu:
        raise ValueError("decode_kernel=True is for XLA:CPU devices; accelerators attend with XLA's own kernels")
    if jnp.dtype(cache_dtype or jnp.float32) != jnp.float32:
        raise ValueError(f"decode_kernel=True reads a float32 KV cache, got cache_dtype={jnp.dtype(cache_dtype)}")
    group = config.num_heads // config.num_kv_heads
    if group not in kernels.QUERY_HEADS_PER_KV_HEAD:
        raise ValueError(f"decode_kernel=True serves {kernels.QUERY_HEADS_PER_KV_HEAD} query heads per kv head, "
                         f"this model has {group}")
    kernels.register_cpu_kernels()  # builds and registers them now, or raises KernelUnavailable saying why


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
