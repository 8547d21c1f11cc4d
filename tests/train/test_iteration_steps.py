"""The iteration's steps run without a Trainer: credit, make_batch and summarize on hand-made episodes."""

import numpy as np

from skillsd_jax.agent import PromptBuilder
from skillsd_jax.agent.episode import Episode, Turn
from skillsd_jax.models.tokenizer import load_tokenizer
from skillsd_jax.train import iteration as steps
from skillsd_jax.train.methods import get_method


def _episodes(tok):
    eps = []
    for g, (task, rewards) in enumerate([("a", [[1.0], [-1.0]]), ("b", [[0.5], [0.5]])]):
        for k, rs in enumerate(rewards):
            ids = list(tok.encode("<action>up</action>", add_special_tokens=False))
            turns = [Turn(observation="grid", response_text="<action>up</action>", action="up", action_valid=True,
                          reward=r, done=True, prompt_ids=list(tok.encode("hello", add_special_tokens=False)),
                          response_ids=ids, response_logprobs=[-0.5] * len(ids)) for r in rs]
            eps.append(Episode(episode_id=f"{task}{k}", env_name="sokoban", task_id=task, seed=g,
                               initial_observation="grid", turns=turns, group_id=g))
    return eps


def test_make_batch_without_a_trainer():
    tok = load_tokenizer()
    prompts = PromptBuilder(tok, "rules")
    eps = _episodes(tok)
    calls = []

    def score(params, ids, mask):  # a stand-in scorer: the teacher's log-prob is its params' value
        calls.append(params)
        return np.full(ids.shape, float(params), np.float32)

    guide = lambda kind, ep: "## Skill from past attempts at this task\nuse up" if kind == "skill" else ""
    spec = steps.BatchSpec(layout="trajectory", sdl_on=True, length_quantum=16)
    batch, m = steps.make_batch(eps, get_method("skill_sd"), prompts, guide, steps.Scoring(score, 0.0, -0.25), spec)
    assert calls == [-0.25]  # only the teacher was scored (old log-probs are the sampler's)
    assert m["rows/count"] == 4 and m["rows/sdl_rows"] == 4
    on = batch.loss_mask > 0
    np.testing.assert_allclose(batch.teacher_logp[on], -0.25)
    np.testing.assert_allclose(batch.old_logp[on], -0.5)
    assert m["teacher/skill_logp_gain"] == np.float32(0.25)
    # GRPO: task a's winner up, loser down; task b's equal returns give zero advantage.
    assert batch.advantages[0] > 0 > batch.advantages[1] and batch.advantages[2] == batch.advantages[3] == 0
    # SDL off: no teacher scoring, no SDL rows.
    calls.clear()
    off = steps.BatchSpec(layout="trajectory", sdl_on=False, length_quantum=16)
    batch, m = steps.make_batch(eps, get_method("grpo"), prompts, guide, steps.Scoring(score, 0.0, -0.25), off)
    assert calls == [] and batch.sdl_mask.sum() == 0 and m["rows/sdl_rows"] == 0
    # Step-level credit: per-token advantages; all four episodes answered the same observation "grid"
    # within their group, so task a's turns are ranked by their return-to-go on top of GRPO's term.
    step = steps.BatchSpec(layout="trajectory", sdl_on=False, length_quantum=16,
                           advantage=steps.AdvantageConfig(step_weight=0.5))
    batch, m = steps.make_batch(eps, get_method("grpo"), prompts, guide, steps.Scoring(score, 0.0, -0.25), step)
    assert batch.advantages.shape == batch.loss_mask.shape and m["advantage/step_anchored"] == 1.0
    on = batch.loss_mask > 0
    grpo = 1 / np.sqrt(2)  # returns +-1, Bessel std sqrt(2): the same for both terms here
    np.testing.assert_allclose(batch.advantages[0][on[0]], grpo + 0.5 * grpo, rtol=1e-5)
    np.testing.assert_allclose(batch.advantages[1][on[1]], -grpo - 0.5 * grpo, rtol=1e-5)
    np.testing.assert_allclose(batch.advantages[2][on[2]], 0.0)


def test_credit_groups_by_task_and_skips_crashed():
    tok = load_tokenizer()
    eps = _episodes(tok)
    eps[0].error = "crashed"
    groups = steps.credit(None, eps, iteration=1)
    assert {k: len(v) for k, v in groups.items()} == {"a": 1, "b": 2}


def _toy_batch(n=8, t=4):
    from skillsd_jax.train.batch import TrainBatch

    z = np.zeros((n, t), np.float32)
    ids = np.tile(np.arange(n, dtype=np.int32)[:, None], (1, t))  # row r holds the token id r
    return TrainBatch(input_ids=ids, attention_mask=np.ones((n, t), np.int32), loss_mask=z, old_logp=z,
                      teacher_logp=z, advantages=np.arange(n, dtype=np.float32), sdl_mask=np.zeros(n, np.float32))


def test_update_minibatches_cover_every_row_once_per_epoch():
    seen = []

    def step(state, batch):  # records the rows it got; the state counts optimizer steps
        seen.append(sorted(int(r) for r in batch.input_ids[:, 0]))
        assert batch.input_ids.shape == (2, 4)
        return state + 1, {"rows": float(len(batch.advantages)), "adv": float(np.mean(batch.advantages))}

    state, metrics = steps.update(step, 0, _toy_batch(), minibatches=4, epochs=2, rng=np.random.default_rng(3))
    assert state == 8  # 4 minibatches x 2 epochs, one step each
    for epoch in (seen[:4], seen[4:]):
        assert sorted(r for part in epoch for r in part) == list(range(8))
    assert seen[:4] != [[0, 1], [2, 3], [4, 5], [6, 7]]  # shuffled
    assert metrics == {"rows": 2.0, "adv": 3.5}  # the mean over the 8 steps


def test_update_default_is_one_step_on_everything():
    calls = []

    def step(state, batch):
        calls.append(batch.input_ids.shape)
        return state + 1, {}

    state, _ = steps.update(step, 0, _toy_batch())
    assert state == 1 and calls == [(8, 4)]


def test_update_rejects_rows_that_do_not_split():
    import pytest

    with pytest.raises(ValueError, match="do not split into 3 minibatches"):
        steps.update(lambda s, b: (s, {}), 0, _toy_batch(), minibatches=3)


def test_teacher_gain_split_by_outcome():
    eps = [Episode(episode_id=f"e{i}", env_name="sokoban", task_id="t", seed=0, initial_observation="",
                   won=won) for i, won in enumerate([True, False])]
    gain = np.array([[0.0, 2.0, 2.0], [0.0, -1.0, 0.0], [5.0, 5.0, 5.0]], np.float32)
    on = np.array([[0, 1, 1], [0, 1, 1], [0, 0, 0]], np.float32)  # third row: padding
    m = steps.teacher_gain_metrics(gain, on, np.array([0, 1, -1]), eps)
    assert m == {"teacher/skill_logp_gain": 0.75, "teacher/skill_logp_gain_won": 2.0,
                 "teacher/skill_logp_gain_lost": -0.5}
    only_lost = steps.teacher_gain_metrics(gain, on * np.array([[0], [1], [0]]), np.array([0, 1, -1]), eps)
    assert "teacher/skill_logp_gain_won" not in only_lost


def test_episode_metrics_action_entropy():
    from skillsd_jax.train.evaluate import episode_metrics

    def ep(actions):
        turns = [Turn(observation="grid", response_text="", action=a, action_valid=a is not None, reward=0.0,
                      done=False) for a in actions]
        return Episode(episode_id="e", env_name="sokoban", task_id="t", seed=0, initial_observation="grid",
                       turns=turns)

    m = episode_metrics([ep(["up", "up", None]), ep(["down"])], "eval")
    p = np.asarray([2 / 3, 1 / 3])
    assert abs(m["eval/action_entropy"] - float(-(p * np.log(p)).sum())) < 1e-12
    assert episode_metrics([ep(["up", "up"])], "eval")["eval/action_entropy"] == 0.0
    assert episode_metrics([ep([None])], "eval")["eval/action_entropy"] == 0.0  # no valid action
    four = episode_metrics([ep(["up", "down", "left", "right"])], "eval")["eval/action_entropy"]
    assert abs(four - np.log(4)) < 1e-12
