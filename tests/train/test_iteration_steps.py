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


def test_credit_groups_by_task_and_skips_crashed():
    tok = load_tokenizer()
    eps = _episodes(tok)
    eps[0].error = "crashed"
    groups = steps.credit(None, eps, iteration=1)
    assert {k: len(v) for k, v in groups.items()} == {"a": 1, "b": 2}
