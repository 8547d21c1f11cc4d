"""The jitted train step: golden first-step metrics, accumulation, sharding, non-finite skips."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from train_testlib import make_batch
from skillsd_jax import sharding as shd
from skillsd_jax.losses.distill import k3_from_gap
from skillsd_jax.train import (LossConfig, OptimizerConfig, StepConfig, TeacherSyncConfig, init_state,
                               make_optimizer, make_score_fn, make_train_step)

OPT = OptimizerConfig(learning_rate=1e-3, weight_decay=0.0, max_grad_norm=1.0)


def _setup(tiny, *, loss=LossConfig(sdl_coef=0.5), micro=1, jit=True, sync=TeacherSyncConfig()):
    graphdef, params, _ = tiny
    tx = make_optimizer(OPT)
    cfg = StepConfig(loss=loss, optimizer=OPT, micro_batches=micro)
    state = init_state(jax.tree.map(jnp.array, params), tx, sync)
    return state, make_train_step(graphdef, tx, cfg, jit=jit, donate=False)


def _on_policy_batch(tiny, **kw):
    """A batch whose old log-probs are the current policy's (ratio 1 at the first step)."""
    graphdef, params, _ = tiny
    batch = make_batch(**kw)
    logp = np.asarray(make_score_fn(graphdef)(params, batch.input_ids, batch.attention_mask))
    return dataclasses.replace(batch, old_logp=logp * batch.loss_mask)


@pytest.mark.parametrize("jit", [True, False])
def test_golden_first_step_metrics(tiny, jit):
    """First principles at step 0 (on-policy): ratio 1, no clipping, L_GRPO = -token-mean(A),
    L_SDL = token-mean(k3(logp - teacher)) on SDL rows; metrics equal with and without jit."""
    batch = _on_policy_batch(tiny)
    state, step = _setup(tiny, jit=jit)
    new_state, m = step(state, batch)
    lm, adv = batch.loss_mask, batch.advantages
    assert m["ratio_min"] == pytest.approx(1.0, abs=1e-6) and m["ratio_max"] == pytest.approx(1.0, abs=1e-6)
    assert float(m["clip_frac"]) == 0.0
    want_pg = -(adv[:, None] * lm).sum() / lm.sum()
    assert float(m["grpo_loss"]) == pytest.approx(want_pg, rel=1e-5)
    sdl_m = lm * batch.sdl_mask[:, None]
    gap = (batch.old_logp - batch.teacher_logp) * sdl_m
    want_sdl = float((np.asarray(k3_from_gap(jnp.asarray(gap))) * sdl_m).sum() / sdl_m.sum())
    assert float(m["sdl_loss"]) == pytest.approx(want_sdl, rel=1e-5)
    assert float(m["sdl_gap"]) == pytest.approx(gap.sum() / sdl_m.sum(), rel=1e-5)
    assert float(m["loss"]) == pytest.approx(want_pg + 0.5 * want_sdl, rel=1e-5)
    assert float(m["sampler_gap"]) < 1e-5
    assert float(m["tokens"]) == lm.sum() and float(m["learning_rate"]) == pytest.approx(1e-3)
    assert int(new_state.step) == 1 and float(m["skipped"]) == 0.0
    assert float(m["grad_norm"]) > 0
    # The update moved the parameters.
    delta = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), new_state.params, state.params)
    assert max(jax.tree.leaves(delta)) > 0


def test_jit_and_eager_agree(tiny):
    batch = _on_policy_batch(tiny, seed=1)
    (s1, m1), (s2, m2) = [_setup(tiny, jit=j)[1](_setup(tiny, jit=j)[0], batch) for j in (True, False)]
    for k in m1:
        np.testing.assert_allclose(m1[k], m2[k], rtol=2e-5, atol=1e-6, err_msg=k)
    for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s2.params)):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("agg,micro", [("token-mean", 4), ("seq-mean-token-mean", 2)])
def test_accumulation_equals_full_batch(tiny, agg, micro):
    batch = _on_policy_batch(tiny, seed=2)
    loss = LossConfig(sdl_coef=0.5, agg=agg, entropy_coef=0.01)
    full_state, full = _setup(tiny, loss=loss, micro=1)
    s_full, m_full = full(full_state, batch)
    state, step = _setup(tiny, loss=loss, micro=micro)
    s_acc, m_acc = step(state, batch)
    for k in ("loss", "grpo_loss", "sdl_loss", "entropy", "grad_norm", "ratio_min", "ratio_max", "clip_frac",
              "sdl_gap"):
        np.testing.assert_allclose(m_acc[k], m_full[k], rtol=1e-5, atol=1e-6, err_msg=f"{k} micro={micro}")
    for a, b in zip(jax.tree.leaves(s_acc.params), jax.tree.leaves(s_full.params)):
        np.testing.assert_allclose(a, b, atol=1e-5)  # 1% of an Adam step (lr 1e-3)


def test_sharded_step_equals_unsharded(tiny):
    graphdef, params, _ = tiny
    batch = _on_policy_batch(tiny, seed=3)
    state, step = _setup(tiny)
    ref_state, ref_m = step(state, batch)

    mesh = shd.make_mesh(data=2, fsdp=2, tensor=2)
    tx = make_optimizer(OPT)
    cfg = StepConfig(loss=LossConfig(sdl_coef=0.5), optimizer=OPT)
    from flax import nnx
    abstract = nnx.split(nnx.merge(graphdef, params))[1]
    param_sh = nnx.to_pure_dict(shd.state_shardings(abstract, mesh))
    sharded_params = jax.device_put(jax.tree.map(jnp.array, params), param_sh)
    s_state = jax.jit(lambda p: init_state(p, tx, TeacherSyncConfig()))(sharded_params)
    state_sh = jax.tree.map(lambda x: x.sharding, s_state)
    batch_sh = jax.tree.map(lambda x: shd.batch_sharding(mesh, np.ndim(x)), batch)
    sharded_step = make_train_step(graphdef, tx, cfg, state_shardings=state_sh, batch_shardings=batch_sh)
    out_state, m = sharded_step(s_state, jax.device_put(batch, batch_sh))
    q = out_state.params["layers"][0]["self_attn"]["q_proj"]["kernel"]
    assert q.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
    for k in ("loss", "grad_norm", "sdl_loss", "ratio_max"):
        np.testing.assert_allclose(m[k], ref_m[k], rtol=1e-5, atol=1e-6, err_msg=k)
    # Adam's first step is ~lr * sign(g): a 1e-7 gradient difference on a near-zero gradient shows
    # up at the 1e-6 level, so compare at 1% of a step (lr 1e-3).
    for a, b in zip(jax.tree.leaves(out_state.params), jax.tree.leaves(ref_state.params)):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_nonfinite_update_is_skipped(tiny):
    batch = _on_policy_batch(tiny, seed=4)
    row = int(np.argmax(batch.sdl_mask))
    col = int(np.argmax(batch.loss_mask[row]))
    bad_teacher = batch.teacher_logp.copy()
    bad_teacher[row, col] = np.nan
    bad = dataclasses.replace(batch, teacher_logp=bad_teacher)
    state, step = _setup(tiny)
    new_state, m = step(state, bad)
    assert float(m["skipped"]) == 1.0 and int(new_state.nonfinite_skips) == 1 and int(new_state.step) == 0
    for a, b in zip(jax.tree.leaves((new_state.params, new_state.opt_state)),
                    jax.tree.leaves((state.params, state.opt_state))):
        np.testing.assert_array_equal(a, b)
    # The next finite batch trains normally from the untouched state.
    after, m2 = step(new_state, batch)
    assert float(m2["skipped"]) == 0.0 and int(after.step) == 1
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(after.params))


def test_scoring_over_a_mesh_splits_rows_over_its_devices(tiny):
    """With a mesh the scorer places host rows over the batch axes: each device scores its own rows
    (not every row, as a replicated call would) and the log-probs equal the unsharded ones."""
    graphdef, params, _ = tiny
    batch = _on_policy_batch(tiny, seed=3)
    mesh = shd.make_mesh(data=2, fsdp=1, tensor=1, devices=jax.devices()[:2])
    replicated = jax.device_put(jax.tree.map(jnp.array, params), shd.replicated(mesh))
    out = make_score_fn(graphdef, mesh=mesh)(replicated, batch.input_ids, batch.attention_mask)
    rows = batch.input_ids.shape[0]
    assert {s.data.shape[0] for s in out.addressable_shards} == {rows // 2}
    reference = make_score_fn(graphdef)(params, batch.input_ids, batch.attention_mask)
    np.testing.assert_allclose(np.asarray(out), np.asarray(reference), rtol=1e-5, atol=1e-6)
    # Without the mesh the same committed parameters score every row on both devices.
    plain = make_score_fn(graphdef)(replicated, batch.input_ids, batch.attention_mask)
    assert {s.data.shape[0] for s in plain.addressable_shards} == {rows}


def test_sdl_only_pulls_student_toward_teacher(tiny):
    """OPD-style (grpo_coef=0): repeated SDL steps shrink the student-teacher gap on SDL tokens."""
    graphdef, params, _ = tiny
    batch = _on_policy_batch(tiny, seed=5)
    score = make_score_fn(graphdef)
    teacher = np.asarray(score(params, batch.input_ids, batch.attention_mask)) * batch.loss_mask - 1.0
    loss = LossConfig(grpo_coef=0.0, sdl_coef=1.0)
    state, step = _setup(tiny, loss=loss)
    gaps = []
    for _ in range(8):
        logp = np.asarray(score(state.params, batch.input_ids, batch.attention_mask)) * batch.loss_mask
        b = dataclasses.replace(batch, old_logp=logp, teacher_logp=teacher)
        state, m = step(state, b)
        gaps.append(float(m["sdl_gap"]))
    assert gaps[0] == pytest.approx(1.0, abs=1e-4)
    assert gaps[-1] < 0.8 * gaps[0]


def test_full_vocab_sdl_equals_direct_kl(tiny):
    """sdl_kind='full_vocab' with teacher rows = student rows shifted by a 2-token skill prefix."""
    graphdef, params, cfg = tiny
    from flax import nnx
    from skillsd_jax.losses import full_vocab_reverse_kl

    batch = _on_policy_batch(tiny, seed=6)
    b, t = batch.input_ids.shape
    prefix = np.full((b, 2), 7, np.int32)
    t_ids = np.concatenate([prefix, batch.input_ids], 1)
    t_am = np.concatenate([np.ones((b, 2), np.int32), batch.attention_mask], 1)
    t_index = (np.arange(t)[None, :] + 2) * (batch.loss_mask > 0)
    full = dataclasses.replace(batch, teacher_ids=t_ids, teacher_attention_mask=t_am, teacher_index=t_index.astype(np.int32))
    loss = LossConfig(sdl_coef=1.0, grpo_coef=0.0, sdl_kind="full_vocab")
    state, step = _setup(tiny, loss=loss)
    _, m = step(state, full)
    model = nnx.merge(graphdef, params)
    s_logits = np.asarray(model(jnp.asarray(batch.input_ids), attention_mask=jnp.asarray(batch.attention_mask)))
    t_logits = np.asarray(model(jnp.asarray(t_ids), attention_mask=jnp.asarray(t_am)))
    s_al = np.concatenate([np.zeros_like(s_logits[:, :1]), s_logits[:, :-1]], 1)
    t_al = np.take_along_axis(np.concatenate([np.zeros_like(t_logits[:, :1]), t_logits[:, :-1]], 1),
                              t_index[..., None], axis=1)
    want, _ = full_vocab_reverse_kl(jnp.asarray(s_al), jnp.asarray(t_al), batch.loss_mask * batch.sdl_mask[:, None])
    assert float(m["sdl_loss"]) == pytest.approx(float(want), rel=1e-4)
    assert float(want) > 0


def test_choice_entropy_term_matches_enumeration_and_spreads_the_choices(tiny):
    """`choice_entropy` is the entropy of the model's softmax over the choice tokens alone at the
    trained positions right after the tag (enumerated from the full logits here), micro-batches add
    up to it, and a step on that term alone makes the choices more even."""
    from flax import nnx

    graphdef, params, _ = tiny
    tag, choices = 7, (10, 11, 12, 13)
    batch = make_batch(seed=4)
    ids = batch.input_ids.copy()
    for i in range(ids.shape[0]):
        first = int(np.nonzero(batch.loss_mask[i])[0][0])
        ids[i, first] = tag  # the tag at the first trained token, a choice at the next
    old = np.asarray(make_score_fn(graphdef)(params, ids, batch.attention_mask)) * batch.loss_mask
    batch = dataclasses.replace(batch, input_ids=ids, old_logp=old)
    prev = np.concatenate([np.full((ids.shape[0], 1), -1), ids[:, :-1]], axis=1)
    where = (prev == tag) & (batch.loss_mask > 0)
    assert where.sum() >= ids.shape[0]

    def restricted_entropy(p):
        model = nnx.merge(graphdef, p)
        logits = np.asarray(model(jnp.asarray(ids), attention_mask=jnp.asarray(batch.attention_mask)))
        out = []
        for i, t in zip(*np.nonzero(where)):
            z = logits[i, t - 1, list(choices)].astype(np.float64)
            q = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
            out.append(-(q * np.log(q)).sum())
        return float(np.mean(out))

    loss = LossConfig(grpo_coef=0.0, sdl_coef=0.0, choice_entropy_coef=1.0, choice_after_token=tag,
                      choice_tokens=choices)
    state, step = _setup(tiny, loss=loss)
    new_state, m = step(state, batch)
    before = restricted_entropy(params)
    assert float(m["choice_entropy"]) == pytest.approx(before, rel=1e-5)
    assert float(m["choice_positions"]) == where.sum()
    assert float(m["loss"]) == pytest.approx(-before, rel=1e-5)
    assert restricted_entropy(new_state.params) > before
    acc_state, acc = _setup(tiny, loss=loss, micro=4)
    _, m_acc = acc(acc_state, batch)
    for k in ("loss", "choice_entropy", "choice_positions", "grad_norm"):
        np.testing.assert_allclose(m_acc[k], m[k], rtol=1e-5, atol=1e-7, err_msg=k)


def test_choice_entropy_needs_its_tokens():
    with pytest.raises(ValueError, match="choice_entropy_coef > 0 needs"):
        LossConfig(choice_entropy_coef=0.1)
    with pytest.raises(ValueError, match="choice_entropy_coef > 0 needs"):
        LossConfig(choice_entropy_coef=0.1, choice_after_token=3, choice_tokens=(5, 5))
