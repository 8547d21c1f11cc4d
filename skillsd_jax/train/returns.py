"""Episode returns -> GRPO advantages, with the two rules that keep the signal honest.

Truncation. An episode the rollout cut (trajectory longer than `rollout.max_context_tokens`) did not
finish, so its partial return is not comparable with finished episodes': with a per-step penalty a
short cut episode would beat a finished failure, which rewards long answers. Rule: a truncated,
unwon episode scores `min(its return, the lowest return of a finished failure in its group)`, and
when its group has no finished failure, its return minus `truncation_penalty`. It is thus never
scored above a completed failure of the same task.

Baselines (`advantage.mode`):
  - ``group`` (GRPO): `A = (R - mean_group) / (std_group + eps)`; a group whose returns are all
    equal (every episode failed the same way) gets zero advantage.
  - ``batch``: the group mean is subtracted, then divided by the std of these centred returns over
    the whole batch (REINFORCE++-style); same signs as GRPO, but a task whose returns barely differ
    is not blown up to unit scale.
  - ``group_then_batch``: GRPO's advantage plus `batch_weight * (mean_group - mean_batch) /
    std_batch` for every episode of the group: an all-fail group still gets a (negative) signal
    relative to the rest of the batch, where the environment's return allows it (shaped returns
    such as Sokoban's `distance_shaping` make failures differ too).
`norm_std=False` (Dr.GRPO) drops the division by the group std in every mode.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax.numpy as jnp
import numpy as np

from skillsd_jax.agent.episode import Episode
from skillsd_jax.losses import grpo_advantages

MODES = ("group", "batch", "group_then_batch")
EPS = 1e-6


@dataclasses.dataclass(frozen=True)
class AdvantageConfig:
    mode: str = "group"  # group | batch | group_then_batch
    norm_std: bool = True  # False: Dr.GRPO (no division by the group std)
    batch_weight: float = 0.5  # group_then_batch: weight of the group-vs-batch term
    truncation_penalty: float = 1.0  # a truncated episode in a group with no finished failure loses this

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"advantage.mode must be one of {MODES}, got {self.mode!r}")
        if self.batch_weight < 0 or self.truncation_penalty < 0:
            raise ValueError("advantage.batch_weight and advantage.truncation_penalty must be >= 0")


def is_truncated(ep: Episode) -> bool:
    return bool(ep.turns) and bool(ep.turns[-1].info.get("truncated")) and not ep.won


def episode_returns(episodes: Sequence[Episode], config: AdvantageConfig) -> tuple[np.ndarray, np.ndarray,
                                                                                   np.ndarray]:
    """(returns, group ids, valid) per episode with the truncation rule applied; crashed episodes invalid."""
    returns = np.asarray([ep.total_reward for ep in episodes], np.float32)
    groups = np.asarray([ep.group_id for ep in episodes], np.int32)
    valid = np.asarray([ep.error is None for ep in episodes], bool)
    truncated = np.asarray([is_truncated(ep) for ep in episodes], bool)
    finished_fail = valid & ~truncated & ~np.asarray([ep.won for ep in episodes], bool)
    for i in np.flatnonzero(truncated & valid):
        peers = finished_fail & (groups == groups[i])
        floor = returns[peers].min() if peers.any() else returns[i] - config.truncation_penalty
        returns[i] = min(returns[i], floor)
    return returns, groups, valid


def advantages(returns: np.ndarray, groups: np.ndarray, valid: np.ndarray, config: AdvantageConfig) -> np.ndarray:
    """Per-episode advantages `[N]` (0 for invalid episodes)."""
    grpo = np.asarray(grpo_advantages(jnp.asarray(returns), jnp.asarray(groups), norm_std=config.norm_std,
                                      valid_N=jnp.asarray(valid)), np.float32)
    if config.mode == "group" or not valid.any():
        return grpo
    group_mean = np.zeros_like(returns)
    for g in np.unique(groups[valid]):
        members = valid & (groups == g)
        group_mean[members] = returns[members].mean()
    if config.mode == "batch":
        centred = np.where(valid, returns - group_mean, 0.0)
        scale = centred[valid].std() + EPS if config.norm_std else 1.0
        return (centred / scale).astype(np.float32)
    batch_std = returns[valid].std() + EPS
    between = (group_mean - returns[valid].mean()) / batch_std
    return np.where(valid, grpo + config.batch_weight * between, 0.0).astype(np.float32)
