"""Building the run's parts from a config: model, environments, prompts, rollouts, skills machinery."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from skillsd_jax import sharding as shd
from skillsd_jax.agent import PromptBuilder, PromptConfig, RolloutConfig, RolloutEngine
from skillsd_jax.envs import make, registered
from skillsd_jax.envs.pool import EnvPool
from skillsd_jax.models import ModelConfig, Transformer, load_hf_model
from skillsd_jax.sampling import Sampler
from skillsd_jax.train.config_utils import dataclass_from, to_dict
from skillsd_jax.train.step import LossConfig

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


def checkpoint_model(model_cfg: Any, checkpoint_dir: str, iteration: int | None = None) -> tuple[Transformer, int]:
    """The policy of a training checkpoint, for a run whose `config.model` is `model_cfg`: its
    architecture from `model.path`'s config.json (or the embedded tiny one), its parameters from
    `checkpoint_dir` (a run's workdir or its `checkpoints/` folder) at `iteration` (default: the latest).
    Returns the model and the iteration it was saved at."""
    from skillsd_jax.train.checkpoint import CheckpointError, Checkpointer

    directory = os.path.abspath(checkpoint_dir)
    if os.path.isdir(os.path.join(directory, "checkpoints")):
        directory = os.path.join(directory, "checkpoints")
    if not os.path.isdir(directory):
        raise CheckpointError(f"{checkpoint_dir} is not a directory with training checkpoints")
    if model_cfg.dtype not in DTYPES:
        raise ValueError(f"config.model.dtype must be one of {sorted(DTYPES)}, got {model_cfg.dtype!r}")
    dtype = DTYPES[model_cfg.dtype]
    cfg = ModelConfig.from_hf_config(model_cfg.path or DEFAULT_MODEL_DIR)
    abstract = nnx.eval_shape(lambda: Transformer(cfg, dtype=dtype, remat=model_cfg.remat, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    checkpointer = Checkpointer(directory)
    try:
        iteration = checkpointer.latest() if iteration is None else int(iteration)
        if iteration is None or iteration not in checkpointer.steps():
            raise CheckpointError(f"no checkpoint {'' if iteration is None else iteration} in {directory} "
                                  f"(saved: {checkpointer.steps()})")
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        abstract_params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                                       nnx.to_pure_dict(state))
        params = checkpointer.restore_params(iteration, abstract_params)
    finally:
        checkpointer.close()
    nnx.replace_by_pure_dict(state, params)
    return nnx.merge(graphdef, state), iteration


def env_factory(env_cfg: Any, split: str) -> functools.partial:
    if env_cfg.name not in registered():
        raise ValueError(f"config.env.name={env_cfg.name!r} is not a registered environment; known: {registered()}")
    kwargs = {**to_dict(env_cfg.kwargs), **to_dict(env_cfg.train_kwargs if split == "train" else env_cfg.eval_kwargs)}
    return functools.partial(make, env_cfg.name, **kwargs)


def env_pool(env_cfg: Any, split: str, size: int) -> EnvPool:
    fn = env_factory(env_cfg, split)
    return EnvPool([fn] * size, num_workers=env_cfg.num_workers or None, backend=env_cfg.pool_backend,
                   timeout_s=env_cfg.step_timeout_s or None)


def prompt_builder(config: Any, tokenizer: Any) -> tuple[PromptBuilder, int]:
    """The run's prompt builder (over the environment's instructions) and the environment's turn limit."""
    env = env_factory(config.env, "train")()
    try:
        max_turns, instructions = env.max_turns, env.instructions()
    finally:
        env.close()
    return PromptBuilder(tokenizer, instructions, dataclass_from(config.prompt, PromptConfig, "prompt")), max_turns


CHOICE_KEYS = ("choice_after", "choice_words")  # config.loss fields given as text, passed on as token ids


def loss_config(config: Any, tokenizer: Any, **overrides: Any) -> LossConfig:
    """`config.loss` as a `LossConfig`, the choice-entropy tag and words turned into token ids.

    Each choice word and the tag must be exactly one token of `tokenizer` (the term scores one
    position): anything else is a clear error naming the word.
    """
    section = {k: v for k, v in to_dict(config.loss).items() if k not in CHOICE_KEYS}
    if float(section.get("choice_entropy_coef", 0.0)) > 0:
        def one_token(text: str) -> int:
            ids = tokenizer.encode(text, add_special_tokens=False)
            if len(ids) != 1:
                raise ValueError(f"config.loss: choice entropy needs {text!r} to be one token, the tokenizer "
                                 f"gives {len(ids)} ({ids})")
            return int(ids[0])

        overrides.update(choice_after_token=one_token(config.loss.get("choice_after", "")),
                         choice_tokens=tuple(one_token(w) for w in config.loss.get("choice_words", ())))
    return dataclass_from(section, LossConfig, "loss", **overrides)


def rollout_config(config: Any) -> RolloutConfig:
    """`config.rollout` without the batch-shape fields (tasks per iteration, group size)."""
    fields = {k: v for k, v in config.rollout.to_dict().items() if k not in ("group_size", "tasks_per_iteration")}
    return dataclass_from(fields, RolloutConfig, "rollout")


def eval_rollout_config(config: Any, train_rollout: RolloutConfig) -> RolloutConfig:
    """The training rollout settings, sampled at `config.eval.temperature` (greedy by default)."""
    return dataclasses.replace(train_rollout, temperature=config.eval.temperature)


def eval_rollout(config: Any, sampler: Sampler, tokenizer: Any, prompts: PromptBuilder, env_max_turns: int,
                 train_rollout: RolloutConfig) -> RolloutEngine:
    """Test-split episodes, one environment per eval task, with `eval_rollout_config`; the engine owns
    its pool (close it with `engine.pool.close()`)."""
    pool = env_pool(config.env, "eval", config.eval.num_tasks)
    return RolloutEngine(sampler, tokenizer, pool, prompts, config.env.name, env_max_turns,
                         eval_rollout_config(config, train_rollout))


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
