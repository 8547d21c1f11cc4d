"""Decode throughput: our jitted sampler vs PyTorch `generate` on the same random model (docs/benchmarks.md).

    python -m benchmarks.sampler [--shape tiny] [--batch 16] [--prompt 128] [--new 64] [--host-devices N] [--json]

`--host-devices N` (CPU) splits the host into N XLA devices and shards the batch over them (a `data`
mesh, parameters replicated): each core then runs its own rows' small decode ops instead of both
cores synchronizing on every one: on 2 cores the decode loop runs ~1.35x faster.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Sequence

import numpy as np

from benchmarks.shapes import best_of


def bench_ours(model, prompts, new_tokens: int, repeats: int, data_devices: int = 1) -> tuple[float, float, float]:
    """(generate seconds, prefill-only seconds, first-call compile seconds)."""
    from benchmarks.shapes import sampler_for
    from skillsd_jax.sampling import SamplingParams

    sampler, params = sampler_for(model, data_devices)
    sp = SamplingParams(temperature=1.0)  # no stop tokens: every row generates `new_tokens`
    t0 = time.perf_counter()
    out = sampler.generate(params, prompts, max_new_tokens=new_tokens, sampling=sp, seed=0)
    compile_s = time.perf_counter() - t0
    assert all(len(c.tokens) == new_tokens for c in out)
    full = best_of(lambda s: sampler.generate(params, prompts, max_new_tokens=new_tokens, sampling=sp, seed=s),
                   repeats)
    one = best_of(lambda s: sampler.generate(params, prompts, max_new_tokens=1, sampling=sp, seed=s), repeats)
    return full, one, compile_s


def bench_torch(model, prompts, new_tokens: int, repeats: int) -> tuple[float, float]:
    """(generate seconds, prefill-only seconds) of HF `generate`."""
    import torch

    ids = torch.tensor(prompts, dtype=torch.long)

    def run(n: int):
        kw = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, min_new_tokens=n, max_new_tokens=n,
                  pad_token_id=0)
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), **kw)
        assert out.shape[1] == ids.shape[1] + n

    run(new_tokens)  # warm-up
    return best_of(lambda _: run(new_tokens), repeats), best_of(lambda _: run(1), repeats)


def main(argv: Sequence[str] | None = None) -> dict:
    from benchmarks.shapes import SHAPES, emit, jax_model_like, torch_model

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shape", default="tiny", choices=sorted(SHAPES))
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--host-devices", type=int, default=1,
                    help="CPU: split the host into N devices and shard the batch over them")
    ap.add_argument("--no-reference", action="store_true", help="skip the PyTorch reference")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.host_devices < 1 or args.batch % args.host_devices:
        ap.error(f"--host-devices must be >= 1 and divide --batch {args.batch}, got {args.host_devices}")
    if args.host_devices > 1 and "jax" not in sys.modules:  # the CPU client reads its device count once
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + f" --xla_force_host_platform_device_count={args.host_devices}")

    import jax
    import jax.numpy as jnp

    if len(jax.devices()) < args.host_devices:
        ap.error(f"--host-devices {args.host_devices}: jax already started with {len(jax.devices())} devices")
    ref_model = None if args.no_reference else torch_model(args.shape)
    model = jax_model_like(ref_model, args.shape, dtype=jnp.dtype(args.dtype))
    vocab = model.config.vocab_size
    prompts = np.random.default_rng(0).integers(1, vocab, (args.batch, args.prompt)).tolist()
    generated = args.batch * args.new
    # tokens_per_s: whole generate call (prefill included), like timing HF generate.
    # decode_tokens_per_s: tokens after the first, (t(new) - t(1)), the decode loop alone.
    full, one, compile_s = bench_ours(model, prompts, args.new, args.repeats, args.host_devices)
    result = {"benchmark": "decode", "shape": args.shape, "device": str(jax.devices()[0].device_kind),
              "devices": args.host_devices,
              "batch": args.batch, "prompt": args.prompt, "new_tokens": args.new, "dtype": args.dtype,
              "tokens_per_s": generated / full, "decode_tokens_per_s": args.batch * (args.new - 1) / (full - one),
              "prefill_s": one, "compile_s": compile_s}
    if ref_model is not None:
        ref_full, ref_one = bench_torch(ref_model, prompts, args.new, args.repeats)
        result.update(reference="pytorch-generate", reference_tokens_per_s=generated / ref_full,
                      reference_decode_tokens_per_s=args.batch * (args.new - 1) / (ref_full - ref_one),
                      reference_prefill_s=ref_one, ratio=ref_full / full, decode_ratio=(ref_full - ref_one) / (full - one))
    emit(result, args.json)
    return result


if __name__ == "__main__":
    main()
