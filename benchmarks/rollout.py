"""Rollout throughput: multi-turn Sokoban episodes through the sampler, and where the time goes.

    python -m benchmarks.rollout [--layout per_step|trajectory] [--tasks 8] [--group 8] [--turns 15]
                                 [--max-response-tokens 128] [--backend thread|process] [--no-shared-prefix]
                                 [--cache-dtype float32|bfloat16] [--host-devices N] [--json]
    python -m benchmarks.rollout --synthetic [--tasks 4 --group 4] [--turns 15] [--max-response-tokens 32]
                                 [--prompt-tokens 333] [--observation-tokens 70] [--shared-prefix-tokens 0]
                                 [--repeats 2] [--host-devices N] [--segment-slots S]

Sokoban (verl_agent preset: 6x6, 1 box), `tasks x group` episodes, the tiny benchmark shape with random
weights over the project tokenizer (vocab 4096), up to `turns` turns. A random policy writes garbage,
so nearly every episode runs all turns with invalid actions: the worst case for turn count.

Figures: environment steps per second and the shares of the rollout's wall time spent sampling, in
the environments and in host glue (prompt building, tokenization, bookkeeping), from `RolloutStats`.
One warm-up rollout compiles the sampler's programs (`compile_s` = its extra time over the timed
rollout: compilation, plus worker start-up with `--backend process`); the timed rollout replays it
(same tasks and seed, so the same shapes: `timed_compilations` should be 0). There is no PyTorch
reference for this workload (`reference: null`).

`--synthetic` runs the same sampler calls without environments: `tasks x group` rows begin with
`--prompt-tokens` random tokens (the first `--shared-prefix-tokens` shared), then `turns - 1` times
append `--observation-tokens` and generate `--max-response-tokens` each (no stops: every row generates
them all), the trajectory layout's calls at fixed sizes.

Floor (`benchmarks/floor.py`): the sampler's counted work (live lengths, not padded shapes) priced at
the memory bandwidth and matrix-product peak probed in this run, before and after the timed work (the
better of the two: the machine's limits, not its load of the moment); `sample_floor_ratio` = sampler
wall time / floor. The copy probe counts a byte read and a byte written alike, so it can exceed what a pass
that only reads (as a decode step's reads of weights and cache) reaches; `sample_read_floor_ratio` prices the
decode's bytes at a read-only probe (a jitted sum, `read_bandwidth_gbs`) instead, the limit this
machine's XLA reads at. On a shared machine take the best of several runs (`--repeats` for `--synthetic`).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import sys
from typing import Any, Sequence


def build_engine(layout: str, num_envs: int, turns: int, max_response_tokens: int, backend: str,
                 shape: str = "tiny", seed: int = 0, share_prefix: bool = True, cache_dtype: str = "float32",
                 host_devices: int = 1, decode_kernel: bool = False):
    """(engine, params, pool) for `num_envs` Sokoban environments and a random model of `shape`, its
    batch sharded over the first `host_devices` devices when that is more than one."""
    from flax import nnx

    from benchmarks.shapes import model_config, sampler_for
    from skillsd_jax.agent import PromptBuilder, PromptConfig, RolloutConfig, RolloutEngine
    from skillsd_jax.envs import make
    from skillsd_jax.envs.pool import EnvPool
    from skillsd_jax.models import Transformer
    from skillsd_jax.models.tokenizer import load_tokenizer

    tok = load_tokenizer()
    cfg = model_config(shape)
    if cfg.vocab_size != len(tok):
        raise SystemExit(f"shape {shape!r} has vocab {cfg.vocab_size}, the project tokenizer {len(tok)}")
    import jax.numpy as jnp

    model = Transformer(cfg, rngs=nnx.Rngs(seed))
    sampler, params = sampler_for(model, host_devices, cache_dtype=jnp.dtype(cache_dtype), decode_kernel=decode_kernel)
    env_fn = functools.partial(make, "sokoban", preset="verl_agent")
    pool = EnvPool([env_fn] * num_envs, backend=backend)
    env = env_fn()
    prompts = PromptBuilder(tok, env.instructions(), PromptConfig())
    rcfg = RolloutConfig(layout=layout, max_turns=turns, max_response_tokens=max_response_tokens, temperature=1.0,
                         share_prefix=share_prefix)
    return RolloutEngine(sampler, tok, pool, prompts, "sokoban", env.max_turns, rcfg), params, pool


def synthetic_turns(sampler, params, rows: int, prompt_tokens: int, turns: int, observation_tokens: int,
                    new_tokens: int, shared_prefix_tokens: int, seed: int) -> int:
    """The trajectory layout's sampler calls on random tokens; returns the tokens generated."""
    import numpy as np

    from skillsd_jax.sampling import SamplingParams

    rng = np.random.default_rng(seed)
    vocab = sampler.config.vocab_size
    common = rng.integers(0, vocab, shared_prefix_tokens).tolist()
    prompts = [common + rng.integers(0, vocab, prompt_tokens - shared_prefix_tokens).tolist() for _ in range(rows)]
    sp = SamplingParams(temperature=1.0)
    prefix = sampler.prefill_prefix(params, common) if shared_prefix_tokens else None
    reserve = min(4096, turns * (new_tokens + 64))  # as the rollout engine reserves
    session, out = sampler.begin(params, prompts, max_new_tokens=new_tokens, sampling=sp, seed=seed, prefix=prefix,
                                 reserve_slots=reserve)
    generated = sum(len(c.tokens) for c in out)
    for k in range(1, turns):
        obs = [rng.integers(0, vocab, observation_tokens).tolist() for _ in range(rows)]
        session, out = sampler.extend(params, session, obs, max_new_tokens=new_tokens, sampling=sp, seed=seed + k)
        generated += sum(len(c.tokens) for c in out)
    return generated


def _synthetic(args) -> tuple[dict, Any, Any]:
    import time

    import jax.numpy as jnp
    from flax import nnx

    from benchmarks.shapes import model_config, sampler_devices, sampler_for
    from skillsd_jax.models import Transformer

    if not 0 <= args.shared_prefix_tokens < args.prompt_tokens:
        raise SystemExit("--shared-prefix-tokens must be in [0, --prompt-tokens)")
    model = Transformer(model_config("tiny"), rngs=nnx.Rngs(0))
    segments = {} if args.segment_slots is None else {"segment_slots": args.segment_slots}  # else the sampler's own
    sampler, params = sampler_for(model, args.host_devices, cache_dtype=jnp.dtype(args.cache_dtype),
                                  decode_kernel=args.decode_kernel, **segments)
    rows = args.tasks * args.group
    call = lambda seed: synthetic_turns(sampler, params, rows, args.prompt_tokens, args.turns, args.observation_tokens,
                                        args.max_response_tokens, args.shared_prefix_tokens, seed)
    t0 = time.perf_counter()
    call(1)  # compiles every program
    first = time.perf_counter() - t0
    probes = _probes()
    elapsed = float("inf")
    for _ in range(args.repeats):  # the best of the repeats: the least disturbed by other work
        before = dataclasses.replace(sampler.work)
        t0 = time.perf_counter()
        generated = call(1)
        elapsed = min(elapsed, time.perf_counter() - t0)
        work = sampler.work.minus(before)
    result = {"benchmark": "rollout", "workload": "synthetic", "rows": rows, "turns": args.turns,
              "prompt_tokens": args.prompt_tokens, "observation_tokens": args.observation_tokens,
              "max_response_tokens": args.max_response_tokens, "shared_prefix_tokens": args.shared_prefix_tokens,
              "generated_tokens": generated, "sample_s": elapsed, "generated_tokens_per_s": generated / elapsed,
              "first_call_s": first, "repeats": args.repeats,
              "host_devices": sampler_devices(sampler), "decode_kernel": sampler.decode_kernel,
              "segment_slots": sampler.segment_slots,
              "num_compilations": sampler.num_compilations}
    return result, sampler, (params, work, probes)


def _probes(rounds: int = 3) -> tuple[float, float, float]:
    """(copy bandwidth GB/s, matmul peak GFLOP/s, read bandwidth GB/s) probed now, each the best of
    `rounds` interleaved rounds (on a virtual machine a probe can read far less than the cores deliver
    at another moment; the floor is the machine's limit, so the best reading counts)."""
    from benchmarks.floor import memory_bandwidth_gbs, read_bandwidth_gbs
    from benchmarks.matmul_peak import jax_matmul_gflops

    best = (0.0, 0.0, 0.0)
    for _ in range(rounds):
        now = (memory_bandwidth_gbs(), jax_matmul_gflops(1024), read_bandwidth_gbs())
        best = tuple(max(b, n) for b, n in zip(best, now))
    return best


def _floor_figures(sampler, params, work, sample_s: float, cache_dtype: str,
                   probes_before: tuple[float, float, float]) -> dict:
    """The floor at the copy probe (the issue's definition: `sample_floor_ratio`) and, beside it, the same
    work with the decode's bytes priced at the read-only probe (`sample_read_floor_ratio`)."""
    import jax.numpy as jnp

    from benchmarks.floor import floor_seconds

    after = _probes()
    bandwidth, peak, reads = (max(b, a) for b, a in zip(probes_before, after))
    itemsize = jnp.dtype(cache_dtype).itemsize
    floor = floor_seconds(work, sampler.config, params, itemsize, bandwidth, peak)
    at_reads = floor_seconds(work, sampler.config, params, itemsize, reads, peak)
    return {"memory_bandwidth_gbs": bandwidth, "matmul_peak_gflops": peak, **floor,
            "sample_floor_ratio": sample_s / max(floor["floor_s"], 1e-12), "decode_steps": work.decode_steps,
            "prefill_tokens": work.prefill_tokens, "read_bandwidth_gbs": reads,
            # Both probes as taken: on a virtual machine they can differ by 2x from one moment to the next.
            "probes_before": list(probes_before), "probes_after": list(after),
            "floor_read_s": at_reads["floor_s"],
            "sample_read_floor_ratio": sample_s / max(at_reads["floor_s"], 1e-12)}


def main(argv: Sequence[str] | None = None) -> dict:
    from benchmarks.shapes import cpu_threads, emit, host_load, sampler_devices

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layout", default="per_step", choices=["per_step", "trajectory"])
    ap.add_argument("--tasks", type=int, default=8)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--turns", type=int, default=15)
    ap.add_argument("--max-response-tokens", type=int, default=128)
    ap.add_argument("--backend", default="thread", choices=["thread", "process"], help="EnvPool backend")
    ap.add_argument("--no-shared-prefix", action="store_true", help="prefill the instructions in every row")
    ap.add_argument("--cache-dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--synthetic", action="store_true", help="the sampler calls alone, on random tokens")
    ap.add_argument("--prompt-tokens", type=int, default=333)
    ap.add_argument("--observation-tokens", type=int, default=70)
    ap.add_argument("--shared-prefix-tokens", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=2, help="timed repeats of --synthetic (the best counts)")
    ap.add_argument("--host-devices", type=int, default=1,
                    help="on CPU: split the host into N devices and shard the batch over them")
    ap.add_argument("--segment-slots", type=int, default=None,
                    help="--synthetic: the KV cache's growth and skip unit (slots a segment; default: the sampler's)")
    ap.add_argument("--decode-kernel", action="store_true",
                    help="the sampler's CPU kernels: attention, decode products (Sampler(decode_kernel=True))")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    load_start = host_load()
    for name in ("tasks", "group", "turns", "max_response_tokens", "prompt_tokens", "observation_tokens", "repeats",
                 "host_devices", "segment_slots"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.host_devices > 1:
        if (args.tasks * args.group) % args.host_devices:
            ap.error("--host-devices needs a row count (tasks x group) it divides")
        if "jax" not in sys.modules:  # the CPU client reads its device count once
            os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                       + f" --xla_force_host_platform_device_count={args.host_devices}")

    import jax

    if len(jax.devices()) < args.host_devices:
        ap.error(f"--host-devices {args.host_devices}: jax already started with {len(jax.devices())} devices")
    if args.synthetic:
        result, sampler, (params, work, probes) = _synthetic(args)
        result.update(device=str(jax.devices()[0].device_kind), cache_dtype=args.cache_dtype, reference=None)
        result.update(_floor_figures(sampler, params, work, result["sample_s"], args.cache_dtype, probes))
        result.update(cpu_threads=cpu_threads(), load_avg_1m_start=load_start, load_avg_1m_end=host_load())
        emit(result, args.json)
        return result

    n = args.tasks * args.group
    engine, params, pool = build_engine(args.layout, n, args.turns, args.max_response_tokens, args.backend,
                                        share_prefix=not args.no_shared_prefix, cache_dtype=args.cache_dtype,
                                        host_devices=args.host_devices, decode_kernel=args.decode_kernel)
    seeds = list(range(args.tasks))
    try:
        _, warm = engine.run(params, seeds, args.group, seed=1)  # compiles every program the rollout needs
        programs = engine.sampler.num_compilations
        probes = _probes()
        before = dataclasses.replace(engine.sampler.work)
        episodes, stats = engine.run(params, seeds, args.group, seed=1)
        work = engine.sampler.work.minus(before)
    finally:
        pool.close()
    if stats.env_steps == 0:
        raise RuntimeError("the timed rollout made no environment steps")
    total = max(stats.total_s, 1e-9)
    result: dict[str, Any] = {
        "benchmark": "rollout", "env": "sokoban/verl_agent", "shape": "tiny", "layout": args.layout,
        "device": str(jax.devices()[0].device_kind), "tasks": args.tasks, "group": args.group, "turns": args.turns,
        "max_response_tokens": args.max_response_tokens, "backend": args.backend,
        "episodes": len(episodes), "env_steps": stats.env_steps, "generated_tokens": stats.generated_tokens,
        "rollout_s": stats.total_s, "env_steps_per_s": stats.env_steps / total,
        "generated_tokens_per_s": stats.generated_tokens / total,
        "sample_share": stats.sample_s / total, "env_share": stats.env_s / total, "glue_share": stats.glue_s / total,
        "first_call_s": warm.total_s, "compile_s": max(warm.total_s - stats.total_s, 0.0),
        "num_compilations": engine.sampler.num_compilations, "env_errors": stats.env_errors,
        "shared_prefix": not args.no_shared_prefix, "cache_dtype": args.cache_dtype,
        "host_devices": sampler_devices(engine.sampler), "decode_kernel": engine.sampler.decode_kernel,
        "reference": None,  # no PyTorch equivalent of this workload
    }
    result.update(_floor_figures(engine.sampler, params, work, stats.sample_s, args.cache_dtype, probes),
                  timed_compilations=engine.sampler.num_compilations - programs)
    # Load before this run started (other work on the cores disturbs the figures) and at its end (ours included).
    result.update(cpu_threads=cpu_threads(), load_avg_1m_start=load_start, load_avg_1m_end=host_load())
    emit(result, args.json)
    return result


if __name__ == "__main__":
    main()
