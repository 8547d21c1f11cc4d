"""The train-state pytree and the teacher-synchronization rules.

`TrainState` holds exactly what a checkpoint must restore: step, parameters, optimizer state,
teacher parameters (only when they differ from the parameters), the RNG and the skip counter.
Parameters are plain nested dicts (`nnx.to_pure_dict`) merged with a static graphdef inside jit.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class TrainState:
    step: jax.Array  # int32: optimizer updates applied
    params: Any  # nested dict of arrays
    opt_state: Any
    teacher_params: Any  # None: the teacher is the current (pre-update) policy
    rng: jax.Array  # uint32[2] raw PRNG key (checkpoint-friendly)
    nonfinite_skips: jax.Array  # int32: updates skipped for a non-finite loss or gradient


@dataclasses.dataclass(frozen=True)
class TeacherSyncConfig:
    """How the teacher's parameters follow the student's (docs/algorithm.md, step 6).

    - "hard", every=1 (paper default): the teacher is the pre-update policy; no copy is kept.
    - "hard", every=K: a copy refreshed after every K-th iteration.
    - "ema", tau: teacher <- (1 - tau) * teacher + tau * params after each iteration.
    - "frozen": the initial policy, forever.
    """

    mode: str = "hard"
    every: int = 1
    tau: float = 0.01

    def __post_init__(self) -> None:
        if self.mode not in ("hard", "ema", "frozen"):
            raise ValueError(f"teacher_sync.mode must be 'hard', 'ema' or 'frozen', got {self.mode!r}")
        if self.every < 1:
            raise ValueError(f"teacher_sync.every must be >= 1, got {self.every}")
        if not 0 < self.tau <= 1:
            raise ValueError(f"teacher_sync.tau must be in (0, 1], got {self.tau}")

    @property
    def keeps_copy(self) -> bool:
        return not (self.mode == "hard" and self.every == 1)


def init_state(params: Any, tx: optax.GradientTransformation, sync: TeacherSyncConfig, seed: int = 0) -> TrainState:
    """A fresh state (jit it with out_shardings to place it on a mesh)."""
    teacher = jax.tree.map(jnp.copy, params) if sync.keeps_copy else None
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), teacher_params=teacher,
                      rng=jax.random.PRNGKey(seed), nonfinite_skips=jnp.zeros((), jnp.int32))


def teacher_params(state: TrainState) -> Any:
    """The parameters the teacher scores with."""
    return state.params if state.teacher_params is None else state.teacher_params


def sync_teacher(state: TrainState, iteration: jax.Array | int, sync: TeacherSyncConfig) -> TrainState:
    """Applies the sync rule after training iteration `iteration` (1-based count of finished iterations)."""
    if not sync.keeps_copy or sync.mode == "frozen":
        return state
    if sync.mode == "ema":
        new = jax.tree.map(lambda t, p: ((1.0 - sync.tau) * t.astype(jnp.float32)
                                         + sync.tau * p.astype(jnp.float32)).astype(t.dtype),
                           state.teacher_params, state.params)
    else:
        copy_now = (jnp.asarray(iteration) % sync.every) == 0
        new = jax.tree.map(lambda t, p: jnp.where(copy_now, p, t), state.teacher_params, state.params)
    return dataclasses.replace(state, teacher_params=new)
