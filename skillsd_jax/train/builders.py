"""Building the run's parts from a config: model, environments, prompts, skills machinery."""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from skillsd_jax import sharding as shd
from skillsd_jax.envs import make, registered
from skillsd_jax.envs.pool import EnvPool
from skillsd_jax.models import ModelConfig, Transformer, load_hf_model
from skillsd_jax.train.config_utils import to_dict

log = logging.getLogger(__name__)
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
ASSETS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "assets")
DEFAULT_MODEL_DIR = os.path.join(ASSETS, "tiny_model")


def build_model(model_cfg: Any, vocab_size: int, mesh: jax.sharding.Mesh | None, seed: int) -> Transformer:
    """Loads `model.path` (HF dir) or, with `model.random_init`, initializes from its config.json."""
    path = model_cfg.path or DEFAULT_MODEL_DIR
    if model_cfg.dtype not in DTYPES:
        raise ValueError(f"config.model.dtype must be one of {sorted(DTYPES)}, got {model_cfg.dtype!r}")
    dtype = DTYPES[model_cfg.dtype]
    if not model_cfg.random_init:
        return load_hf_model(path, dtype=dtype, mesh=mesh, remat=model_cfg.remat)
    cfg = ModelConfig.from_hf_config(path)
    if cfg.vocab_size < vocab_size:
        raise ValueError(f"model vocab_size {cfg.vocab_size} (config.model.path={path}) is smaller than the "
                         f"tokenizer's {vocab_size}")
    model = Transformer(cfg, dtype=dtype, remat=model_cfg.remat, rngs=nnx.Rngs(seed))
    if mesh is not None:
        graphdef, state = nnx.split(model)
        model = nnx.merge(graphdef, shd.shard_state(state, mesh))
    return model


def env_factory(env_cfg: Any, split: str) -> functools.partial:
    if env_cfg.name not in registered():
        raise ValueError(f"config.env.name={env_cfg.name!r} is not a registered environment; known: {registered()}")
    kwargs = {**to_dict(env_cfg.kwargs), **to_dict(env_cfg.train_kwargs if split == "train" else env_cfg.eval_kwargs)}
    return functools.partial(make, env_cfg.name, **kwargs)


def env_pool(env_cfg: Any, split: str, size: int) -> EnvPool:
    fn = env_factory(env_cfg, split)
    return EnvPool([fn] * size, num_workers=env_cfg.num_workers or None, backend=env_cfg.pool_backend,
                   timeout_s=env_cfg.step_timeout_s or None)


def make_summarizer(skills_cfg: Any, *, sampler=None, params_fn=None, tokenizer=None, lock=None):
    from skillsd_jax.skills import OpenAISummarizer, PolicySummarizer, RuleSummarizer

    backend = skills_cfg.backend
    if backend == "rule":
        return RuleSummarizer()
    if backend == "oracle":
        from skillsd_jax.skills.backends.rule_backend import oracle_summarizer

        return oracle_summarizer()
    if backend == "openai":
        o = skills_cfg.openai
        if not o.base_url or not o.model:
            raise ValueError("config.skills.openai.base_url and config.skills.openai.model are required "
                             "for skills.backend='openai'")
        return OpenAISummarizer(o.base_url, o.model, api_key_env=o.api_key_env, timeout_s=o.timeout_s,
                                max_retries=o.get("max_retries", 3))
    if backend == "policy":
        from skillsd_jax.skills.backends.sampler_generate import make_generate_fn
        from skillsd_jax.models.tokenizer import stop_ids

        gen = make_generate_fn(sampler, params_fn, stop_token_ids=stop_ids(tokenizer), lock=lock)
        return PolicySummarizer(gen, tokenizer, max_new_tokens=skills_cfg.policy_max_new_tokens)
    raise ValueError(f"config.skills.backend must be 'rule', 'oracle', 'openai' or 'policy', got {backend!r}")
