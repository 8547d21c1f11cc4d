"""Sampler behaviour: KV-cache logits, sampling distribution, filters, stops, multi-turn, sharding, programs."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import stats

from skillsd_jax import sharding as shd
from skillsd_jax.models import KVCache, Transformer
from skillsd_jax.models.kv_cache import zero_segments
from skillsd_jax.sampling import Sampler, SamplingParams, generate
from skillsd_jax.sampling.filters import filter_logits, sample_tokens

JAXPR_TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"  # jax.monitoring: one per traced program


def test_kv_cache_decode_logits_equal_full_forward(tiny_model):
    model = tiny_model
    seq = np.random.default_rng(0).integers(0, model.config.vocab_size, 14).astype(np.int32)
    full = np.asarray(nnx.jit(lambda m, x: m(x))(model, jnp.asarray(seq[None])))[0]
    # Segments of 4 slots: the tokens span several, and the cache grows past its first capacity.
    cache = KVCache.init(model.config, 1, 2, 4)
    step = nnx.jit(lambda m, ids, valid, cache: m.forward_chunk(ids, valid, cache))
    # Prefill 6 tokens (right-padded into an 8-token chunk), then decode the rest one by one.
    ids = np.zeros((1, 8), np.int32)
    ids[0, :6] = seq[:6]
    valid = np.zeros((1, 8), bool)
    valid[0, :6] = True
    logits, cache = step(model, ids, valid, cache)
    np.testing.assert_allclose(np.asarray(logits)[0, :6], full[:6], atol=1e-4)
    assert int(cache.lengths_B[0]) == 6
    for t in range(6, 14):
        if t == 8:
            cache = cache.with_segments(*zero_segments(model.config, 1, 2, 4, jnp.float32))
        logits, cache = step(model, seq[None, t:t + 1], np.ones((1, 1), bool), cache)
        np.testing.assert_allclose(np.asarray(logits)[0, 0], full[t], atol=1e-4)


def _expected(probs, n: int) -> np.ndarray:
    probs = np.asarray(probs, np.float64)
    return probs / probs.sum() * n


def test_sampling_follows_distribution_chi_square():
    logits = jnp.asarray([[2.0, 1.0, 0.5, 0.0, -0.5, -1.0, 1.5, 0.2]])
    n = 20000
    keys = jax.random.split(jax.random.key(0), n)
    draw = jax.jit(jax.vmap(lambda k: sample_tokens(jax.random.uniform(k, (1,)), logits, temperature=0.7,
                                                    greedy=False, top_k=0, top_p=1.0, use_top_p=False)[0][0]))
    counts = np.bincount(np.asarray(draw(keys)), minlength=8)
    _, p = stats.chisquare(counts, _expected(jax.nn.softmax(logits[0] / 0.7), n))
    assert p > 1e-3, counts
    # Negative control: the same counts against the untempered distribution are rejected.
    _, p_wrong = stats.chisquare(counts, _expected(jax.nn.softmax(logits[0]), n))
    assert p_wrong < 1e-6


def test_generate_first_token_distribution(tiny_model):
    model = tiny_model
    prompt = [3, 14, 15, 9]
    rows = 512
    out = generate(model, [prompt] * rows, max_new_tokens=1, temperature=1.0, seed=7)
    counts = np.bincount([c.tokens[0] for c in out], minlength=model.config.vocab_size)
    probs = np.asarray(jax.nn.softmax(model(jnp.asarray([prompt]))[0, -1]))
    # Pool rare tokens so expected counts are >= 5 (chi-square validity).
    big = probs * rows >= 5
    obs = np.append(counts[big], counts[~big].sum())
    exp = _expected(np.append(probs[big], probs[~big].sum()), rows)
    _, p = stats.chisquare(obs, exp)
    assert p > 1e-3
    for c in out:  # sampler log-prob is the model's (temperature 1, no filters)
        assert abs(c.logprobs[0] - np.log(probs[c.tokens[0]])) < 1e-4


def test_top_k_and_top_p_exclude_exactly():
    logits = jnp.log(jnp.asarray([[0.05, 0.30, 0.10, 0.25, 0.20, 0.10]]))
    k3 = np.isfinite(np.asarray(filter_logits(logits, top_k=3, top_p=1.0, use_top_p=False)))[0]
    assert k3.tolist() == [False, True, False, True, True, False]
    # sorted probs .30 .25 .20 .10 .10 .05; mass before: 0 .30 .55 .75 .85 .95
    p60 = np.isfinite(np.asarray(filter_logits(logits, top_k=0, top_p=0.6, use_top_p=True)))[0]
    assert p60.tolist() == [False, True, False, True, True, False]
    p54 = np.isfinite(np.asarray(filter_logits(logits, top_k=0, top_p=0.54, use_top_p=True)))[0]
    assert p54.tolist() == [False, True, False, True, False, False]
    p01 = np.isfinite(np.asarray(filter_logits(logits, top_k=0, top_p=0.01, use_top_p=True)))[0]
    assert p01.tolist() == [False, True, False, False, False, False]
    # top-p acts on the top-k survivors renormalized (.30/.55 = .545, .25/.55 = .455), as in HF.
    both = np.isfinite(np.asarray(filter_logits(logits, top_k=2, top_p=0.6, use_top_p=True)))[0]
    assert both.tolist() == [False, True, False, True, False, False]
    both = np.isfinite(np.asarray(filter_logits(logits, top_k=2, top_p=0.5, use_top_p=True)))[0]
    assert both.tolist() == [False, True, False, False, False, False]
    # Draws never leave the kept set and log-probs are renormalized over it.
    keys = jax.random.split(jax.random.key(1), 4000)
    tok, lp = jax.jit(jax.vmap(lambda k: sample_tokens(jax.random.uniform(k, (1,)), logits, temperature=1.0,
                                                       greedy=False, top_k=3, top_p=1.0, use_top_p=False)))(keys)
    tok, lp = np.asarray(tok)[:, 0], np.asarray(lp)[:, 0]
    assert set(np.unique(tok)) == {1, 3, 4}
    np.testing.assert_allclose(lp[tok == 1], np.log(0.30 / 0.75), atol=1e-5)


def test_stop_token_and_stop_sequence(tiny_model):
    model = tiny_model
    prompt = [[7, 8, 9], [1, 2]]
    free = generate(model, prompt, max_new_tokens=16, temperature=0.0)
    row = free[0].tokens
    stop_tok = row[5]
    first = row.index(stop_tok)
    out = generate(model, prompt, max_new_tokens=16, temperature=0.0, stop_token_ids=[stop_tok])
    assert out[0].tokens == row[:first + 1] and out[0].stop_reason == "stop_token"
    assert len(out[0].logprobs) == first + 1
    seq = row[6:8]
    end = next(i for i in range(1, len(row)) if row[i - 1:i + 1] == seq) + 1
    out = generate(model, prompt, max_new_tokens=16, temperature=0.0, stop_sequences=[seq])
    assert out[0].tokens == row[:end] and out[0].stop_reason == "stop_sequence"
    # The other row is unaffected unless it meets the same stop.
    other = free[1].tokens
    if not any(other[i - 1:i + 1] == seq for i in range(1, len(other))):
        assert out[1].tokens == other and out[1].stop_reason == "length"


def test_multi_turn_continuation_equals_fresh_prefill(tiny_model):
    model = tiny_model
    sampler, params = Sampler.for_model(model)
    greedy = SamplingParams(temperature=0.0)
    prompts = [[4, 5, 6], [7, 8, 9, 10, 11, 12, 13], [20, 21]]
    session, turn1 = sampler.begin(params, prompts, max_new_tokens=5, sampling=greedy)
    observations = [[30, 31], None, [32, 33, 34, 35]]  # row 1 took no turn (its episode ended)
    session, turn2 = sampler.extend(params, session, observations, max_new_tokens=6, sampling=greedy)
    assert turn2[1].stop_reason == "inactive" and turn2[1].tokens == []
    for i in (0, 2):
        prefix = prompts[i] + turn1[i].tokens + observations[i]
        fresh = generate(model, [prefix], max_new_tokens=6, temperature=0.0)[0]
        assert turn2[i].tokens == fresh.tokens
        np.testing.assert_allclose(turn2[i].logprobs, fresh.logprobs, atol=1e-4)
    # Compacting to the live rows and continuing gives the same tokens as not compacting.
    small = sampler.compact(session, [0, 2])
    s_a, a = sampler.extend(params, small, [[1, 2], [3]], max_new_tokens=4, sampling=greedy)
    s_b, b = sampler.extend(params, session, [[1, 2], None, [3]], max_new_tokens=4, sampling=greedy)
    assert [a[0].tokens, a[1].tokens] == [b[0].tokens, b[2].tokens]


@pytest.mark.parametrize("devices", [1, 2], ids=["one_device", "rows_per_device"])
def test_rows_that_stop_early_continue_from_their_own_end(tiny_model, devices):
    """Rows stop at different steps of one decode loop; the next turn continues each from the tokens it
    really drew (its stop token included), not from the loop's later draws. On two devices each runs
    its own rows' loop and stops when they are done."""
    mesh = shd.make_mesh(data=devices, devices=jax.devices()[:devices]) if devices > 1 else None
    sampler, params = Sampler.for_model(tiny_model, mesh=mesh, segment_slots=16)
    greedy = SamplingParams(temperature=0.0)
    prompts = [[7, 8, 9], [1, 2], [30, 31, 32, 33]]
    free = sampler.generate(params, prompts, max_new_tokens=12, sampling=greedy)
    stop_tok = free[0].tokens[2]
    stops = SamplingParams(temperature=0.0, stop_token_ids=(stop_tok,))
    session, first = sampler.begin(params, prompts, max_new_tokens=12, sampling=stops)
    assert first[0].stop_reason == "stop_token" and len(first[0].tokens) <= 3
    assert len({len(c.tokens) for c in first}) > 1  # the rows ended at different steps
    obs = [[20, 21], [22], [23, 24, 25]]
    session, second = sampler.extend(params, session, obs, max_new_tokens=9, sampling=greedy)
    for i in range(3):
        history = prompts[i] + first[i].tokens + obs[i]
        fresh = generate(tiny_model, [history], max_new_tokens=9, temperature=0.0)[0]
        assert second[i].tokens == fresh.tokens
        np.testing.assert_allclose(second[i].logprobs, fresh.logprobs, atol=1e-4)
        assert session.lengths[i] == len(history) + len(second[i].tokens)


def test_cache_grows_across_turns(tiny_model):
    sampler, params = Sampler.for_model(tiny_model, segment_slots=64)
    greedy = SamplingParams(temperature=0.0)
    session, first = sampler.begin(params, [[1, 2, 3]], max_new_tokens=40, sampling=greedy)
    history = [1, 2, 3] + first[0].tokens
    slots = session.slots
    for turn in range(3):
        obs = [5 + turn] * 30
        session, out = sampler.extend(params, session, [obs], max_new_tokens=40, sampling=greedy)
        history += obs
        fresh = generate(tiny_model, [history], max_new_tokens=40, temperature=0.0)[0]
        assert out[0].tokens == fresh.tokens
        history += out[0].tokens
    assert session.slots > slots
    assert session.cache.num_segments == session.slots // 64


@pytest.mark.parametrize("axes", [dict(data=2, tensor=4), dict(data=4)], ids=["data2_tensor4", "rows_per_device"])
def test_sharded_sampler_equals_unsharded(tiny_model, axes):
    # data x tensor: one program over the mesh; data alone: each device runs its own rows' turn.
    mesh = shd.make_mesh(**axes, devices=jax.devices()[:math.prod(axes.values())])
    sampler, sharded_params = Sampler.for_model(tiny_model, mesh=mesh)
    prompts = [[1, 2, 3], [4, 5], [6], [7, 8, 9, 10], [11, 12]]
    sp = SamplingParams(temperature=1.0, top_k=8)
    ours = sampler.generate(sharded_params, prompts, max_new_tokens=8, sampling=sp, seed=5)
    ref_sampler, params = Sampler.for_model(tiny_model)
    ref = ref_sampler.generate(params, prompts, max_new_tokens=8, sampling=sp, seed=5)
    for a, b in zip(ours, ref):
        assert a.tokens == b.tokens
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-4)
    # A shared prefix prefilled on the mesh serves the mesh's rows.
    shared = [9, 8, 7, 6, 5, 4, 3, 2, 1, 9, 8, 7, 6, 5, 4, 3, 2]
    with_prefix = [shared + p for p in prompts]
    prefix = sampler.prefill_prefix(sharded_params, shared)
    ours = sampler.generate(sharded_params, with_prefix, max_new_tokens=8, sampling=sp, seed=5, prefix=prefix)
    ref = ref_sampler.generate(params, with_prefix, max_new_tokens=8, sampling=sp, seed=5)
    for a, b in zip(ours, ref):
        assert a.tokens == b.tokens
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-4)
    # A second call in the same buckets traces nothing: no program (the cache initializer included) is
    # rebuilt per call, which on a pod would cost a compile at every episode start.
    traces = []
    listener = lambda event, duration, **kw: traces.append(event) if event == JAXPR_TRACE_EVENT else None
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        sampler.generate(sharded_params, prompts[::-1], max_new_tokens=6, sampling=sp, seed=6)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert traces == []


def test_programs_are_bucketed(tiny_model):
    sampler, params = Sampler.for_model(tiny_model)
    rng = np.random.default_rng(0)
    sp = SamplingParams(temperature=1.0)
    for i in range(12):  # batch 5..8 -> bucket 8; prompts 3..16 -> 16; new 4..16 -> 16
        n = int(rng.integers(5, 9))
        prompts = [rng.integers(0, 40, int(rng.integers(3, 17))).tolist() for _ in range(n)]
        sampler.generate(params, prompts, max_new_tokens=int(rng.integers(4, 17)), sampling=sp, seed=i)
    assert sampler.num_compilations == 2  # one cache segment initializer + one turn (prefill + decode) program


def test_chunk_buckets_bound_padding_and_programs():
    from skillsd_jax.sampling.engine import _chunk_bucket

    sizes = {n: _chunk_bucket(n, 16) for n in range(1, 2049)}
    for n, c in sizes.items():
        assert c >= max(n, 16) and c % 8 == 0
        if n > 64:
            assert c - n < c / 8, (n, c)  # at most an eighth of a long chunk is padding
    assert sizes[67] == 72 and sizes[274] == 288  # a Sokoban observation; its shared instructions
    for lo in (64, 128, 256, 512, 1024):  # eight programs per doubling of the length
        assert len({sizes[n] for n in range(lo + 1, 2 * lo + 1)}) == 8
    assert len({sizes[n] for n in range(33, 65)}) == 4

def test_bad_requests_fail_clearly(tiny_model):
    with pytest.raises(ValueError, match="at least one token"):
        generate(tiny_model, [[1], []], max_new_tokens=2)
    with pytest.raises(ValueError, match="outside"):
        generate(tiny_model, [[1, 999]], max_new_tokens=2)
    with pytest.raises(ValueError, match="top_p"):
        generate(tiny_model, [[1]], max_new_tokens=2, top_p=0.0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(tiny_model, [[1]], max_new_tokens=0)


def test_shared_prefix_equals_full_prefill(tiny_model):
    sampler, params = Sampler.for_model(tiny_model, segment_slots=16)
    greedy = SamplingParams(temperature=0.0)
    shared = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3]
    prompts = [shared + [10, 11], shared + [12], shared + [13, 14, 15, 16, 17]]
    prefix = sampler.prefill_prefix(params, shared)
    before = dataclasses.replace(sampler.work)
    session, with_prefix = sampler.begin(params, prompts, max_new_tokens=6, sampling=greedy, prefix=prefix)
    assert sampler.work.minus(before).prefill_tokens == 8  # only the rows' own tokens
    plain = sampler.generate(params, prompts, max_new_tokens=6, sampling=greedy)
    for a, b in zip(with_prefix, plain):
        assert a.tokens == b.tokens
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-4)
    # Sampling draws the same tokens from the same seed with and without the prefix.
    sp = SamplingParams(temperature=1.0)
    a = sampler.generate(params, prompts, max_new_tokens=6, sampling=sp, seed=4, prefix=prefix)
    b = sampler.generate(params, prompts, max_new_tokens=6, sampling=sp, seed=4)
    assert [c.tokens for c in a] == [c.tokens for c in b]
    # Later turns continue after the prefix: they equal a fresh prefill of the whole history (no prefix),
    # across segment boundaries (16 slots) and a cache that grows.
    history = [p + c.tokens for p, c in zip(prompts, with_prefix)]
    for turn in range(2):
        obs = [[20 + turn] * 9, None, [30 + turn, 31]]
        session, out = sampler.extend(params, session, obs, max_new_tokens=7, sampling=greedy)
        for i in (0, 2):
            history[i] += obs[i]
            fresh = generate(tiny_model, [history[i]], max_new_tokens=7, temperature=0.0)[0]
            assert out[i].tokens == fresh.tokens
            np.testing.assert_allclose(out[i].logprobs, fresh.logprobs, atol=1e-4)
            history[i] += out[i].tokens
        assert out[1].stop_reason == "inactive"
    assert session.lengths[0] == len(history[0]) and session.own_lengths[0] == len(history[0]) - len(shared)
    with pytest.raises(ValueError, match="shared prefix"):
        sampler.begin(params, [shared[:-1] + [0, 1]], max_new_tokens=2, prefix=prefix)
    with pytest.raises(ValueError, match="shared prefix"):
        sampler.begin(params, [shared], max_new_tokens=2, prefix=prefix)  # nothing of its own


def test_bfloat16_cache_logprobs_near_trainer(tiny_model):
    """A bfloat16 cache (float32 compute) moves sampler log-probs off the trainer's float32 forward by
    the keys'/values' rounding; this bounds it (the float32 cache agrees to 1e-4)."""
    sampler, params = Sampler.for_model(tiny_model, cache_dtype=jnp.bfloat16)
    prompts = [[5, 17, 3, 8], [9, 2, 30, 31, 7, 30, 12, 8, 1]]
    out = sampler.generate(params, prompts, max_new_tokens=12, sampling=SamplingParams(temperature=1.0), seed=3)
    worst = 0.0
    for p, c in zip(prompts, out):
        logp = jax.nn.log_softmax(tiny_model(jnp.asarray([p + c.tokens]))[0, len(p) - 1:-1], axis=-1)
        want = np.take_along_axis(np.asarray(logp), np.asarray(c.tokens)[:, None], axis=-1)[:, 0]
        worst = max(worst, float(np.max(np.abs(np.asarray(c.logprobs) - want))))
    assert 0 < worst < 0.1, worst


def test_tied_head_transposed_once_samples_as_the_plain_head(tiny_model):
    """On CPU the decode loop multiplies by a tied head transposed once per call; the plain transposed
    read (what accelerators use) draws the same tokens with the same log-probs."""
    assert tiny_model.lm_head is None  # tied
    sampler, params = Sampler.for_model(tiny_model)
    assert sampler._on_cpu
    plain_sampler, _ = Sampler.for_model(tiny_model)
    plain_sampler._on_cpu = False
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8], [9]]
    sp = SamplingParams(temperature=1.0)
    ours = sampler.generate(params, prompts, max_new_tokens=10, sampling=sp, seed=2)
    plain = plain_sampler.generate(params, prompts, max_new_tokens=10, sampling=sp, seed=2)
    for a, b in zip(ours, plain):
        assert a.tokens == b.tokens
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-5)


@pytest.mark.parametrize("devices", [1, 2], ids=["one_device", "rows_per_device"])
def test_decode_kernel_continues_as_a_fresh_prefill(tiny_model, devices):
    """With the CPU decode kernel, every turn of a multi-turn session (shared prefix, segments of 16
    slots that later turns cross, rows of unequal lengths) equals a fresh full prefill of its history,
    and sampling at T=1 draws the same tokens as the XLA attention path."""
    from skillsd_jax import kernels

    if not kernels.decode_kernel_available():
        pytest.skip("no C++ compiler here to build the CPU decode kernel")
    mesh = shd.make_mesh(data=devices, devices=jax.devices()[:devices]) if devices > 1 else None
    sampler, params = Sampler.for_model(tiny_model, mesh=mesh, segment_slots=16, decode_kernel=True)
    plain, _ = Sampler.for_model(tiny_model, mesh=mesh, segment_slots=16)
    greedy = SamplingParams(temperature=0.0)
    shared = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3]
    prompts = [shared + [10, 11], shared + [12], shared + [13, 14, 15, 16, 17]]
    prefix = sampler.prefill_prefix(params, shared)
    session, out = sampler.begin(params, prompts, max_new_tokens=6, sampling=greedy, prefix=prefix)
    history = [p + c.tokens for p, c in zip(prompts, out)]
    for turn in range(3):
        obs = [[20 + turn] * 9, [25] if turn != 1 else None, [30 + turn, 31]]
        session, out = sampler.extend(params, session, obs, max_new_tokens=7, sampling=greedy)
        for i in range(3):
            if obs[i] is None:
                assert out[i].stop_reason == "inactive"
                continue
            history[i] += obs[i]
            fresh = generate(tiny_model, [history[i]], max_new_tokens=7, temperature=0.0)[0]
            assert out[i].tokens == fresh.tokens
            np.testing.assert_allclose(out[i].logprobs, fresh.logprobs, atol=1e-4)
            history[i] += out[i].tokens
    sp = SamplingParams(temperature=1.0)
    a = sampler.generate(params, prompts, max_new_tokens=20, sampling=sp, seed=7)
    b = plain.generate(params, prompts, max_new_tokens=20, sampling=sp, seed=7)
    assert [c.tokens for c in a] == [c.tokens for c in b]
    for x, y in zip(a, b):
        np.testing.assert_allclose(x.logprobs, y.logprobs, atol=1e-5)


def test_decode_kernel_refuses_what_it_cannot_serve(tiny_model):
    from skillsd_jax.models import ModelConfig

    with pytest.raises(ValueError, match="float32 KV cache"):
        Sampler.for_model(tiny_model, cache_dtype=jnp.bfloat16, decode_kernel=True)
    bf16 = Transformer(tiny_model.config, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="computes in float32"):
        Sampler.for_model(bf16, cache_dtype=jnp.float32, decode_kernel=True)
    graphdef, _ = nnx.split(tiny_model)
    three = ModelConfig(model_type="qwen3", vocab_size=40, hidden_size=48, intermediate_size=64, num_layers=1,
                        num_heads=6, num_kv_heads=2, head_dim=8)
    with pytest.raises(ValueError, match="query heads per kv head"):
        Sampler(graphdef, three, decode_kernel=True)
