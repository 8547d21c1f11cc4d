"""Teacher sync (docs/algorithm.md, step 6): hard copy only every K; EMA arithmetic; frozen never changes."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from skillsd_jax.train import TeacherSyncConfig, init_state, make_optimizer, sync_teacher, teacher_params
from skillsd_jax.train.optimizer import OptimizerConfig

TX = make_optimizer(OptimizerConfig())


def _params(v):
    return {"w": jnp.full((2, 3), float(v)), "b": jnp.full((3,), float(v))}


def _train(state, v):
    """Stands in for an update: the student's parameters become `v`."""
    return dataclasses.replace(state, params=_params(v))


def test_hard_every_one_keeps_no_copy():
    state = init_state(_params(0), TX, TeacherSyncConfig("hard", every=1))
    assert state.teacher_params is None
    state = _train(state, 5)
    assert teacher_params(state)["w"][0, 0] == 5  # the teacher is the current policy


def test_hard_copy_only_every_k():
    sync = TeacherSyncConfig("hard", every=3)
    state = init_state(_params(0), TX, sync)
    seen = []
    for it in range(1, 8):
        state = sync_teacher(_train(state, it), it, sync)
        seen.append(float(state.teacher_params["w"][0, 0]))
    assert seen == [0, 0, 3, 3, 3, 6, 6]


def test_ema_arithmetic():
    sync = TeacherSyncConfig("ema", tau=0.25)
    state = init_state(_params(0), TX, sync)
    want = 0.0
    for it in range(1, 5):
        state = sync_teacher(_train(state, 4 * it), it, sync)
        want = 0.75 * want + 0.25 * (4 * it)
        np.testing.assert_allclose(state.teacher_params["b"], want, rtol=1e-6)


def test_frozen_never_changes():
    sync = TeacherSyncConfig("frozen")
    state = init_state(_params(1), TX, sync)
    for it in range(1, 6):
        state = jax.jit(lambda s, i: sync_teacher(s, i, sync))(_train(state, 10 * it), it)
    np.testing.assert_array_equal(state.teacher_params["w"], 1.0)


def test_bad_sync_config():
    with pytest.raises(ValueError, match="mode"):
        TeacherSyncConfig("sometimes")
    with pytest.raises(ValueError, match="every"):
        TeacherSyncConfig("hard", every=0)
