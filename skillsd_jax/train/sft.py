"""Cold-start supervised warm-up on expert demonstrations (solver plans), before RL.

A random tiny model never produces a valid action, so RL has no signal. Environments that know a
solution (`info["optimal_plan"]` for Sokoban, `info["expert_plan"]` for ALFWorld/TextWorld) give
demonstration episodes: the expert's actions written in the answer format, played through the real
environment, turned into the same rows the RL step trains on, and fitted by token cross-entropy.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from skillsd_jax.agent.episode import Episode, Turn
from skillsd_jax.agent.prompts import PromptBuilder
from skillsd_jax.agent.rows import build_rows
from skillsd_jax.envs.base import Env
from skillsd_jax.train.optimizer import OptimizerConfig, make_optimizer
from skillsd_jax.train.step import aligned_logprobs

log = logging.getLogger(__name__)
PLAN_KEYS = ("optimal_plan", "expert_plan")


@dataclasses.dataclass(frozen=True)
class SFTConfig:
    steps: int = 0  # 0 disables the warm-up
    num_tasks: int = 64  # demonstration tasks (train seeds first_seed .. first_seed + n - 1)
    first_seed: int = 0  # e.g. past the RL levels, so RL does not start on levels it was shown solved
    rows_per_step: int = 16
    learning_rate: float = 1e-3
    warmup_steps: int = 10
    # Rows are grouped by length into this many buckets (quantiles) and each step draws from one, so a
    # step is as wide as its own bucket, not the longest demonstration (one compile per bucket).
    length_buckets: int = 3
    # `{action}` and optionally `{step}` (the 1-based turn number)
    answer_template: str = "<think>Next: {action}.</think><action>{action}</action>"


def demonstration(env: Env, seed: int, prompts: PromptBuilder, tokenizer: Any, layout: str,
                  template: str) -> Episode:
    """Plays the environment's own solution plan through the environment, recording every turn as
    if the model had answered with `template` (token ids included, log-probs 0)."""
    obs, info = env.reset(seed)
    plan = next((info[k] for k in PLAN_KEYS if info.get(k)), None)
    if not plan:
        raise ValueError(f"environment {env.name!r} gives no demonstration plan in reset info "
                         f"({' / '.join(PLAN_KEYS)}); set config.warmstart.steps=0")
    ep = Episode(episode_id=f"demo/{seed}", env_name=env.name, task_id=str(info.get("task_id", seed)), seed=seed,
                 initial_observation=obs, initial_info=dict(info))
    for k, action in enumerate(plan):
        text = template.format(action=action, step=k + 1)
        ids = list(tokenizer.encode(text, add_special_tokens=False))
        if layout == "per_step":
            prompt = prompts.turn_prompt(ep, k, obs)
        else:
            prompt = prompts.first_prompt(ep) if k == 0 else prompts.observation_chunk(obs, close_previous=True)
        new_obs, reward, done, step_info = env.step(text)
        ep.turns.append(Turn(observation=obs, response_text=text, action=step_info.get("action"),
                             action_valid=bool(step_info.get("action_valid")), reward=float(reward), done=bool(done),
                             prompt_ids=prompt, response_ids=ids, response_logprobs=[0.0] * len(ids)))
        obs = new_obs
        ep.won = bool(step_info.get("won"))
        if done:
            break
    return ep


def length_buckets(lengths: np.ndarray, buckets: int, quantum: int) -> list[tuple[int, np.ndarray]]:
    """Splits rows into at most `buckets` groups of similar length (by quantile); returns
    (width, row indices) per group, width being the group's longest row rounded up to `quantum`."""
    lengths = np.asarray(lengths)
    if buckets < 1:
        raise ValueError(f"warmstart.length_buckets must be >= 1, got {buckets}")
    order = np.argsort(lengths, kind="stable")
    by_width: dict[int, list[np.ndarray]] = {}
    for part in np.array_split(order, min(buckets, len(order))):
        if len(part):
            width = int(-(-int(lengths[part].max()) // quantum) * quantum)
            by_width.setdefault(width, []).append(part)
    return [(w, np.sort(np.concatenate(parts))) for w, parts in sorted(by_width.items())]


def sft_loss(params: Any, graphdef: Any, ids: jax.Array, attention_mask: jax.Array, loss_mask: jax.Array, chunk: int):
    from flax import nnx

    model = nnx.merge(graphdef, params)
    logp = aligned_logprobs(model, ids, attention_mask, chunk, with_entropy=False)[0]
    n = jnp.maximum(loss_mask.sum(), 1.0)
    nll = -(logp * loss_mask).sum() / n
    acc = ((logp > np.log(0.5)) * loss_mask).sum() / n  # tokens predicted with p > 1/2
    return nll, acc


def make_sft_step(graphdef: Any, tx: optax.GradientTransformation, chunk: int = 0):
    def step(params, opt_state, ids, attention_mask, loss_mask):
        (nll, acc), grads = jax.value_and_grad(sft_loss, has_aux=True)(params, graphdef, ids, attention_mask,
                                                                        loss_mask, chunk)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, {"sft/nll": nll, "sft/token_acc": acc}

    return jax.jit(step, donate_argnums=(0, 1))


def warm_start(params: Any, graphdef: Any, env_fn: Callable[[], Env], prompts: PromptBuilder, tokenizer: Any,
               layout: str, config: SFTConfig, *, seed: int = 0, length_quantum: int = 64, progress: bool = True,
               guidance_fn: Callable[[list[Episode], Env], dict[str, str]] | None = None,
               ) -> tuple[Any, list[dict[str, float]]]:
    """Fits `params` to demonstration rows for `config.steps` steps; returns new params and a log.

    `guidance_fn(demos, env)` (optional) gives a block per demonstration id that goes on top of its
    prompt ("" keeps it plain): the skill blocks that teach the model to read skills.
    """
    env = env_fn()
    try:
        demos = [demonstration(env, s, prompts, tokenizer, layout, config.answer_template)
                 for s in range(config.first_seed, config.first_seed + config.num_tasks)]
        guidance = guidance_fn(demos, env) if guidance_fn is not None else {}
    finally:
        env.close()
    won = np.mean([d.won for d in demos])
    if won < 1.0:
        log.warning("only %.0f%% of demonstrations win (answer template or plan mismatch?)", 100 * won)
    rows = build_rows(demos, prompts, layout, teacher_guidance=lambda ep: "", length_quantum=length_quantum,
                      student_guidance=(lambda ep: guidance.get(ep.episode_id, "")) if guidance else None)
    n = rows.num_real
    tx = make_optimizer(OptimizerConfig(learning_rate=config.learning_rate, warmup_steps=config.warmup_steps,
                                        weight_decay=0.0, max_grad_norm=1.0))
    opt_state = tx.init(params)
    step = make_sft_step(graphdef, tx)
    rng = np.random.default_rng(seed)
    buckets = length_buckets(rows.attention_mask[:n].sum(1), config.length_buckets, length_quantum)
    # a bucket is drawn in proportion to its size, so every row is as likely to be seen as without buckets
    bucket_p = np.array([len(idx) for _, idx in buckets], dtype=np.float64) / n
    history = []
    from tqdm import tqdm

    for i in tqdm(range(config.steps), desc="SFT warm-up on demonstrations", disable=not progress):
        width, members = buckets[rng.choice(len(buckets), p=bucket_p)]
        k = len(members)
        idx = members[rng.choice(k, size=config.rows_per_step, replace=k < config.rows_per_step)]  # fixed shape
        params, opt_state, m = step(params, opt_state, rows.input_ids[idx, :width],
                                    rows.attention_mask[idx, :width], rows.loss_mask[idx, :width])
        if (i + 1) % 10 == 0 or i + 1 == config.steps:
            history.append({"sft/step": i + 1, **{k: float(v) for k, v in jax.device_get(m).items()}})
    log.info("SFT warm-up: %d demonstrations (%.0f%% won), %d rows, final %s", len(demos), 100 * won, n,
             history[-1] if history else {})
    return params, history
