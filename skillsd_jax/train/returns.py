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

Step-level credit (`step_weight` > 0). An episode-level advantage gives all fifteen moves of an
episode the same sign, so a policy learns which *state* calls for which move only slowly. With
`step_weight = w` every turn gets `A_episode + w * A_step`: the turns of one group that answered the
*same observation* (the episodes' shared first state, states revisited after an invalid answer or a
move into a wall, paths that meet) form an anchor group, and `A_step` is the turn's discounted
return-to-go (`gamma`) normalized within its anchor group as GRPO's is (Bessel std); a turn whose
observation no other turn of the group answered gets zero. The idea is GiGPO's (verl-agent); observations
must render the state (Sokoban's do). Truncated, unwon episodes take no part in the step term
(their return-to-go is cut short, so it would rank them above finished failures).
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
    step_weight: float = 0.0  # > 0: add the step-level term (same observation within a group)
    gamma: float = 0.95  # discount of the step-level return-to-go

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"advantage.mode must be one of {MODES}, got {self.mode!r}")
        if self.batch_weight < 0 or self.truncation_penalty < 0 or self.step_weight < 0:
            raise ValueError("advantage.batch_weight, truncation_penalty and step_weight must be >= 0")
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"advantage.gamma must be in (0, 1], got {self.gamma}")


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


def returns_to_go(rewards: Sequence[float], gamma: float) -> np.ndarray:
    """`G_k = sum_j>=k gamma^(j-k) r_j` for every turn k."""
    out = np.zeros(len(rewards), np.float64)
    acc = 0.0
    for k in range(len(rewards) - 1, -1, -1):
        acc = float(rewards[k]) + gamma * acc
        out[k] = acc
    return out


def step_advantages(episodes: Sequence[Episode], groups: np.ndarray, valid: np.ndarray,
                    config: AdvantageConfig) -> tuple[list[np.ndarray], dict[str, float]]:
    """Per-turn step-level advantages `A_step` of every episode (module docstring) and their metrics:
    `advantage/step_anchored` (share of turns in an anchor group of two or more) and
    `advantage/step_abs_mean` (mean |A_step| over those turns)."""
    out = [np.zeros(len(ep.turns), np.float32) for ep in episodes]
    anchor_of: dict[tuple[int, str], int] = {}  # (group, observation) -> anchor id
    members: list[tuple[int, int]] = []  # (episode, turn) of every scored turn
    values, ids = [], []
    for e, ep in enumerate(episodes):
        if not valid[e] or is_truncated(ep):
            continue
        for k, g in enumerate(returns_to_go([t.reward for t in ep.turns], config.gamma)):
            members.append((e, k))
            values.append(g)
            ids.append(anchor_of.setdefault((int(groups[e]), ep.turns[k].observation), len(anchor_of)))
    if not members:
        return out, {"advantage/step_anchored": 0.0, "advantage/step_abs_mean": 0.0}
    ids_arr = np.asarray(ids, np.int32)
    # The anchor groups are normalized exactly as GRPO's groups are; a lone turn gets no step term.
    scaled = np.asarray(grpo_advantages(jnp.asarray(values, jnp.float32), jnp.asarray(ids_arr),
                                        norm_std=config.norm_std), np.float32)
    anchored = np.bincount(ids_arr)[ids_arr] >= 2
    scaled = np.where(anchored, scaled, 0.0)
    for (e, k), a in zip(members, scaled):
        out[e][k] = a
    return out, {"advantage/step_anchored": float(anchored.mean()),
                 "advantage/step_abs_mean": float(np.abs(scaled[anchored]).mean()) if anchored.any() else 0.0}
