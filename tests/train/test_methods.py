"""Each method does what its row of the method table says, checked on a real (micro) training iteration
with a pre-filled skill bank, and each check fails on a deliberately broken variant of that method.

A `Recorder` wraps the iteration's step functions (rollout, make_batch, update) to keep what the
Trainer handed them; the `check_*` functions assert the method's defining behaviour on that record.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_loop import _config, micro_model_dir  # noqa: F401  (fixture)

from skillsd_jax.skills import Skill
from skillsd_jax.skills.prompting import BLOCK_HEADER
from skillsd_jax.train import iteration as steps
from skillsd_jax.train import methods as methods_mod
from skillsd_jax.train.loop import Trainer
from skillsd_jax.train.methods import METHODS, Method
from skillsd_jax.train.state import teacher_params

PRIVILEGED_HEADER = "## Privileged information"


def _host(tree):
    return jax.tree.map(lambda x: np.array(x), tree)


@dataclasses.dataclass
class Record:
    trainer: Trainer
    episodes: list = dataclasses.field(default_factory=list)  # per iteration
    scorings: list = dataclasses.field(default_factory=list)
    batches: list = dataclasses.field(default_factory=list)
    states_before: list = dataclasses.field(default_factory=list)  # host copies, before each update
    acted_with: list = dataclasses.field(default_factory=list)  # the params each rollout acted with
    teacher_blocks: list = dataclasses.field(default_factory=list)  # the teacher guidance of each episode
    teacher_at_start: object = None
    metrics: dict = dataclasses.field(default_factory=dict)

    def decode(self, ids) -> str:
        return self.trainer.tokenizer.decode([int(t) for t in ids if t], skip_special_tokens=False)


def _fill_bank(trainer: Trainer) -> None:
    for i in range(trainer.config.env.num_train_tasks):
        trainer.bank.add(Skill(task_id=f"sokoban/6x6b1/train/{i}", env="sokoban",
                               success_analysis=f"Level {i}: push the box onto the target.",
                               mistake_analysis="Do not push the box into a corner.",
                               golden_workflow="1. up\n2. right\n3. down"))


def run_recorded(monkeypatch, tmp_path, micro_dir, method: Method, iterations: int = 1,
                 teacher_after_update: bool = False) -> Record:
    """Trains `method` (registered under its name for this test) for `iterations` iterations, recording.

    `teacher_after_update` is a deliberately broken trainer: the teacher scores with parameters that
    already moved (as if scoring ran after the update)."""
    monkeypatch.setitem(METHODS, method.name, method)
    cfg = _config(micro_dir, tmp_path / method.name, method=method.name, num_iterations=iterations,
                  **{"checkpoint.every": 0, "warmstart.steps": 0, "rollout.max_turns": 2,
                     "skills.max_untried_per_task": 0})
    trainer = Trainer(cfg)
    rec = Record(trainer)
    if trainer.bank is not None:
        _fill_bank(trainer)
    rec.teacher_at_start = _host(teacher_params(trainer.state))
    real_rollout, real_batch, real_update = steps.rollout, steps.make_batch, steps.update

    def rollout(engine, params, *a, **kw):
        rec.acted_with.append(_host(params))
        episodes, m = real_rollout(engine, params, *a, **kw)
        rec.episodes.append(episodes)
        return episodes, m

    def make_batch(episodes, method_, prompts, guide, scoring, spec):
        if teacher_after_update:
            scoring = dataclasses.replace(scoring, teacher=jax.tree.map(lambda x: x * 1.01, scoring.teacher))
        rec.scorings.append(dataclasses.replace(scoring, params=_host(scoring.params), teacher=_host(scoring.teacher)))
        rec.teacher_blocks.append([guide(method_.teacher_guidance, ep) for ep in episodes])
        batch, m = real_batch(episodes, method_, prompts, guide, scoring, spec)
        rec.batches.append(batch)
        return batch, m

    def update(step_fn, state, batch, **kw):
        rec.states_before.append(_host(state))
        return real_update(step_fn, state, batch, **kw)

    monkeypatch.setattr(steps, "rollout", rollout)
    monkeypatch.setattr(steps, "make_batch", make_batch)
    monkeypatch.setattr(steps, "update", update)
    try:
        rec.metrics = trainer.run()
    finally:
        trainer.close()
    return rec


def _same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# ---------------------------------------------------------------------------------------- checks


def check_skill_sd(rec: Record) -> None:
    """SDL is on for rows with a skill, and the teacher scored with the pre-update policy (K=1)."""
    batch, scoring, before = rec.batches[0], rec.scorings[0], rec.states_before[0]
    assert batch.sdl_mask.sum() > 0, "no row has a teacher signal"
    assert all(BLOCK_HEADER in b for b in rec.teacher_blocks[0]), "teacher prompt without the skill"
    assert rec.metrics["loss/sdl_loss"] > 0, "SDL contributes nothing"
    assert _same(scoring.teacher, before.params), "teacher log-probs not from the pre-update parameters"
    on = batch.loss_mask * batch.sdl_mask[:, None]
    assert np.abs((batch.teacher_logp - batch.old_logp) * on).sum() > 0, "teacher scores equal the student's"
    assert all(BLOCK_HEADER not in rec.decode(row) for row in batch.input_ids), "the student saw the skill"


def check_opd(rec: Record) -> None:
    """No GRPO gradient (the update ignores advantages), and a privileged teacher on every row."""
    batch = rec.batches[0]
    assert batch.sdl_mask.sum() == rec.metrics["rows/count"] > 0, "not every row has a teacher"
    assert all(PRIVILEGED_HEADER in b for b in rec.teacher_blocks[0]), "teacher prompt lacks privileged information"
    fn = rec.trainer._step_fn(batch)  # the same update with other advantages (fresh copies: the step donates)
    a, _ = fn(jax.tree.map(jnp.array, rec.states_before[0]), batch)
    b, _ = fn(jax.tree.map(jnp.array, rec.states_before[0]),
              dataclasses.replace(batch, advantages=np.full_like(batch.advantages, 3.0)))
    assert _same(_host(a.params), _host(b.params)), "advantages changed the update: a GRPO gradient exists"


def check_skill_grpo(rec: Record) -> None:
    """The student acts and trains with the skill in its own prompt; no teacher term."""
    batch = rec.batches[0]
    assert all(BLOCK_HEADER in rec.decode(ep.turns[0].prompt_ids) for ep in rec.episodes[0]), \
        "acting prompt without the skill"
    real = batch.attention_mask.sum(1) > 0
    assert all(BLOCK_HEADER in rec.decode(row) for row in batch.input_ids[real]), "training rows without the skill"
    assert batch.sdl_mask.sum() == 0


def check_offpolicy(rec: Record) -> None:
    """Rollouts come from the teacher's parameters under the skill prompt; the student trains on them
    under the plain prompt, with the skill-prompted teacher as its SDL target."""
    assert all(BLOCK_HEADER in rec.decode(ep.turns[0].prompt_ids) for ep in rec.episodes[0]), \
        "rollouts were not generated under the skill prompt"
    assert _same(rec.acted_with[0], _host(teacher_params(rec.states_before[0]))), "rollouts not from the teacher"
    batch = rec.batches[0]
    real = batch.attention_mask.sum(1) > 0
    assert all(BLOCK_HEADER not in rec.decode(row) for row in batch.input_ids[real]), "student rows carry the skill"
    assert batch.sdl_mask.sum() > 0


def check_frozen(rec: Record) -> None:
    """The teacher never changes while the student does."""
    t = rec.trainer
    assert not _same(_host(t.state.params), rec.teacher_at_start), "the student did not move"
    assert _same(_host(teacher_params(t.state)), rec.teacher_at_start), "the frozen teacher changed"
    assert _same(rec.scorings[-1].teacher, rec.teacher_at_start)


TEACHER_AFTER_UPDATE = "teacher_after_update"  # a broken trainer rather than a broken table row
CASES = {
    "skill_sd": (check_skill_sd, [dataclasses.replace(METHODS["skill_sd"], teacher_guidance="privileged"),
                                  dataclasses.replace(METHODS["skill_sd"], student_guidance="skill",
                                                      act_guidance="skill"),
                                  TEACHER_AFTER_UPDATE]),
    "opd": (check_opd, [dataclasses.replace(METHODS["opd"], grpo=True),
                        dataclasses.replace(METHODS["opd"], teacher_guidance="skill")]),
    "skill_grpo": (check_skill_grpo, [dataclasses.replace(METHODS["skill_grpo"], act_guidance="")]),
    "skill_sd_offpolicy": (check_offpolicy, [dataclasses.replace(METHODS["skill_sd_offpolicy"], act_guidance="")]),
    "skill_sd_frozen": (check_frozen, [dataclasses.replace(METHODS["skill_sd_frozen"], teacher_sync=None)]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_method_does_what_its_row_says(monkeypatch, tmp_path, micro_model_dir, name):
    check, _ = CASES[name]
    iterations = 2 if name == "skill_sd_frozen" else 1
    check(run_recorded(monkeypatch, tmp_path, micro_model_dir, METHODS[name], iterations))


@pytest.mark.parametrize("name,variant", [(n, i) for n in sorted(CASES) for i in range(len(CASES[n][1]))])
def test_method_check_fails_on_broken_variant(monkeypatch, tmp_path, micro_model_dir, name, variant):
    check, broken = CASES[name]
    iterations = 2 if name == "skill_sd_frozen" else 1
    method = METHODS[name] if broken[variant] == TEACHER_AFTER_UPDATE else broken[variant]
    rec = run_recorded(monkeypatch, tmp_path, micro_model_dir, method, iterations,
                       teacher_after_update=broken[variant] == TEACHER_AFTER_UPDATE)
    with pytest.raises(AssertionError):
        check(rec)


def test_methods_table_is_unchanged():
    """The method table the checks above exercise (guards against editing a row without its check)."""
    assert methods_mod.get_method("skill_sd") == Method("skill_sd", "", False, "", "skill", grpo=True, sdl=True)
    assert methods_mod.get_method("opd").grpo is False
