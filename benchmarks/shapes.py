"""Benchmark model shapes (docs/benchmarks.md) and building the same random model in PyTorch and JAX."""

from __future__ import annotations

import json
import os
import tempfile
import time
from typing import Any

SHAPES: dict[str, dict[str, Any]] = {
    # Qwen3 architecture, tied embeddings, rope_theta 10000, max positions 2048.
    "tiny": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                 intermediate_size=768, vocab_size=4096),
    "small": dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=4, head_dim=64,
                  intermediate_size=1536, vocab_size=8192),
    # Accelerator shapes (bf16): Qwen3-0.6B / 1.7B / 4B-like.
    "qwen3-0.6b": dict(hidden_size=1024, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
                       head_dim=128, intermediate_size=3072, vocab_size=151936),
    "qwen3-1.7b": dict(hidden_size=2048, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
                       head_dim=128, intermediate_size=6144, vocab_size=151936),
    "qwen3-4b": dict(hidden_size=2560, num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8,
                     head_dim=128, intermediate_size=9728, vocab_size=151936),
}


def hf_config_dict(shape: str) -> dict[str, Any]:
    if shape not in SHAPES:
        raise SystemExit(f"unknown shape {shape!r}; choose from {sorted(SHAPES)}")
    return dict(model_type="qwen3", tie_word_embeddings=True, rope_theta=10000.0, max_position_embeddings=2048,
                rms_norm_eps=1e-6, **SHAPES[shape])


def model_config(shape: str):
    from skillsd_jax.models import ModelConfig

    return ModelConfig.from_hf_config({**hf_config_dict(shape), "num_hidden_layers": SHAPES[shape]["num_hidden_layers"]})


def torch_model(shape: str, seed: int = 0):
    """The PyTorch reference model (random weights), or None when torch/transformers are missing."""
    try:
        import torch
        import transformers
    except ImportError:
        return None
    cfg = dict(hf_config_dict(shape))
    cfg.pop("model_type")
    config = transformers.Qwen3Config(**cfg)
    torch.manual_seed(seed)
    return transformers.Qwen3ForCausalLM(config).eval()


def jax_model_like(torch_model_or_none, shape: str, dtype=None, seed: int = 0):
    """Our model with the reference's weights (through an HF checkpoint) or random ones without torch."""
    import jax.numpy as jnp
    from flax import nnx

    from skillsd_jax.models import Transformer, load_hf_model

    dtype = dtype or jnp.float32
    if torch_model_or_none is None:
        return Transformer(model_config(shape), dtype=dtype, rngs=nnx.Rngs(seed))
    with tempfile.TemporaryDirectory() as d:
        torch_model_or_none.save_pretrained(d)
        return load_hf_model(d, dtype=dtype)


def sampler_for(model, host_devices: int = 1, **sampler_kwargs):
    """(sampler, params) for `model`; with `host_devices > 1` the batch is sharded over that many CPU
    devices (one per core: the small per-step operations of decoding then run side by side)."""
    import jax

    from skillsd_jax import sharding as shd
    from skillsd_jax.sampling import Sampler

    mesh = shd.make_mesh(data=host_devices, devices=jax.devices()[:host_devices]) if host_devices > 1 else None
    return Sampler.for_model(model, mesh=mesh, **sampler_kwargs)


def sampler_devices(sampler) -> int:
    """How many devices a sampler's batch is spread over."""
    return 1 if sampler.mesh is None else sampler.mesh.size


def best_of(fn, repeats: int) -> float:
    """Fewest seconds of `repeats` calls `fn(1)`, `fn(2)`, ... (the least disturbed by other work)."""
    best = float("inf")
    for r in range(repeats):
        t0 = time.perf_counter()
        fn(r + 1)
        best = min(best, time.perf_counter() - t0)
    return best


def emit(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, sort_keys=True))
    else:
        width = max(map(len, result))
        for k, v in result.items():
            print(f"{k:<{width}}  {v:.4g}" if isinstance(v, float) else f"{k:<{width}}  {v}")


def cpu_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def host_load() -> float | None:
    """1-minute load average (None where unknown): above `cpu_threads()` other work shares the cores."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None
