"""Where a decode step's attention time goes: the KV cache's two products, alone and in the cache's
segment step, against the memory bandwidth of one core and of every core, probed in the same run.

    python -m benchmarks.decode_attention [--rows 8] [--segments 28] [--repeats 20] [--one-core] [--json]

A decode step attends each row's one new query per head to every filled segment of every layer
(`models/kv_cache.py`). The defaults are one device's share of the rollout benchmark's long turns:
8 rows (16 over two devices), the `tiny` shape's 2 kv heads x 2 query heads x 64, segments of 256
slots, 28 of them (7 filled segments x 4 layers: a ~1,700-token context). Each figure is the bytes of
keys and/or values the timed program reads over its wall time (best of `--repeats`):

- `scores_gbs`: `segment_scores` (q.k: 2 query rows, a 64-deep contraction) over the key segments;
- `values_gbs`: `weighted_values` (p.v: 2 rows, a 256-deep contraction) over the value segments;
- `segment_gbs`: `segment_part` (both products, the mask and the softmax pieces) over both.

They are set against the bandwidth probe the rollout floor uses (`floor.memory_bandwidth_gbs`,
every core) and the same probe with the process pinned to one core (Linux), which is what one of
the rollout's per-core devices has. `--one-core` runs the products pinned too.
"""

from __future__ import annotations

import argparse
import os
from contextlib import contextmanager, nullcontext
from typing import Iterator, Sequence


@contextmanager
def pinned_to_one_core() -> Iterator[bool]:
    """Pins every thread of this process to its first allowed CPU for the block; yields whether it
    could (Linux only). Afterwards each thread gets its affinity back, and threads started inside
    the block (which inherit the one core) get the process's original set."""
    if not hasattr(os, "sched_setaffinity"):
        yield False
        return
    allowed = os.sched_getaffinity(0)
    before = {}
    for tid in _threads():
        try:
            before[tid] = os.sched_getaffinity(tid)
        except OSError:  # a thread that ended meanwhile
            continue
    for tid in before:
        try:
            os.sched_setaffinity(tid, {min(allowed)})
        except OSError:
            pass
    try:
        yield True
    finally:
        for tid in _threads():
            try:
                os.sched_setaffinity(tid, before.get(tid, allowed))
            except OSError:
                pass


def _threads() -> list[int]:
    return [int(t) for t in os.listdir("/proc/self/task")]


def _best_seconds(fn, args, repeats: int) -> float:
    import jax

    from benchmarks.shapes import best_of

    jax.block_until_ready(fn(*args))  # compile
    return best_of(lambda _: jax.block_until_ready(fn(*args)), repeats)


def measure(rows: int, segments: int, repeats: int, kv_heads: int = 2, group: int = 2, head_dim: int = 64,
            segment_slots: int = 256) -> dict:
    """Seconds and GB/s of the three programs over `segments` key and value segments of `rows` rows."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from skillsd_jax.models.kv_cache import segment_part, segment_scores, weighted_values

    rng = np.random.default_rng(0)
    keys = [jnp.asarray(rng.normal(size=(rows, kv_heads, head_dim, segment_slots)), jnp.float32)
            for _ in range(segments)]
    values = [jnp.asarray(rng.normal(size=(rows, kv_heads, segment_slots, head_dim)), jnp.float32)
              for _ in range(segments)]
    q = jnp.asarray(rng.normal(size=(rows, kv_heads, group, 1, head_dim)), jnp.float32)
    weights = jax.nn.softmax(jnp.asarray(rng.normal(size=(rows, kv_heads, group, segment_slots)), jnp.float32))
    mask = jnp.ones((rows, group, 1, segment_slots), bool)
    q_rows = q.reshape(rows, kv_heads, group, head_dim)

    scores = jax.jit(lambda q, ks: [segment_scores(q, k) for k in ks])
    weighted = jax.jit(lambda p, vs: [weighted_values(p, v) for v in vs])
    # Every piece of every segment is summed, so none is dead code; the sums read only the small outputs.
    part = jax.jit(lambda q, ks, vs: sum(sum(jnp.sum(x) for x in segment_part(q, k, v, mask))
                                         for k, v in zip(ks, vs)))

    key_bytes = sum(k.nbytes for k in keys)
    value_bytes = sum(v.nbytes for v in values)
    t_scores = _best_seconds(scores, (q_rows, keys), repeats)
    t_values = _best_seconds(weighted, (weights, values), repeats)
    t_part = _best_seconds(part, (q, keys, values), repeats)
    return {"rows": rows, "kv_heads": kv_heads, "query_heads_per_kv": group, "head_dim": head_dim,
            "segment_slots": segment_slots, "segments": segments, "key_bytes": key_bytes, "value_bytes": value_bytes,
            "scores_s": t_scores, "scores_gbs": key_bytes / t_scores / 1e9,
            "values_s": t_values, "values_gbs": value_bytes / t_values / 1e9,
            "segment_s": t_part, "segment_gbs": (key_bytes + value_bytes) / t_part / 1e9}


def main(argv: Sequence[str] | None = None) -> dict:
    from benchmarks.floor import memory_bandwidth_gbs
    from benchmarks.shapes import cpu_threads, emit, host_load

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--segments", type=int, default=28)
    ap.add_argument("--segment-slots", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--probe-megabytes", type=int, default=256)
    ap.add_argument("--one-core", action="store_true", help="time the products with the process on one core")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    for name in ("rows", "segments", "segment_slots", "repeats", "probe_megabytes"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")

    import jax

    load_start = host_load()
    all_cores = memory_bandwidth_gbs(args.probe_megabytes)
    with pinned_to_one_core() as pinned:
        one_core = memory_bandwidth_gbs(args.probe_megabytes) if pinned else None
    products_pinned = bool(args.one_core and pinned)
    with pinned_to_one_core() if products_pinned else nullcontext():
        figures = measure(args.rows, args.segments, args.repeats, segment_slots=args.segment_slots)
    result = {"benchmark": "decode_attention", "device": str(jax.devices()[0].device_kind), **figures,
              "products_pinned_to_one_core": products_pinned,
              "bandwidth_all_cores_gbs": all_cores, "bandwidth_one_core_gbs": one_core,
              "cpu_threads": cpu_threads(), "load_avg_1m_start": load_start, "load_avg_1m_end": host_load(),
              "reference": None}
    emit(result, args.json)
    return result


if __name__ == "__main__":
    main()
