"""Multi-turn rollouts through the sampler on Sokoban, in both layouts, and their training rows."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest
from flax import nnx

from skillsd_jax.agent import (PromptBuilder, PromptConfig, RolloutConfig, RolloutEngine, build_rows,
                               privileged_block)
from skillsd_jax.envs import make
from skillsd_jax.envs.pool import EnvPool
from skillsd_jax.train import make_score_fn

TASKS, GROUP = [3, 8], 2


def _engine(policy, layout, env_fns=None, max_turns=3):
    _, sampler, _, tok = policy
    fns = env_fns or [functools.partial(make, "sokoban", preset="verl_agent")] * (len(TASKS) * GROUP)
    pool = EnvPool(fns, backend="thread")
    env = make("sokoban", preset="verl_agent")
    prompts = PromptBuilder(tok, env.instructions(), PromptConfig(history_length=2, max_prompt_tokens=768))
    cfg = RolloutConfig(layout=layout, max_turns=max_turns, max_response_tokens=12, temperature=1.0)
    return RolloutEngine(sampler, tok, pool, prompts, "sokoban", env.max_turns, cfg), prompts, pool


@pytest.mark.parametrize("layout", ["per_step", "trajectory"])
def test_rollout_and_rows_line_up(policy, layout):
    model, _, params, tok = policy
    engine, prompts, pool = _engine(policy, layout)
    episodes, stats = engine.run(params, TASKS, GROUP, seed=1)
    pool.close()
    assert len(episodes) == 4 and [ep.group_id for ep in episodes] == [0, 0, 1, 1]
    assert episodes[0].task_id == episodes[1].task_id != episodes[2].task_id
    assert all(ep.error is None and 1 <= ep.num_turns <= 3 for ep in episodes)
    # A random model writes garbage: invalid actions are penalized, never raised.
    assert any(not t.action_valid for ep in episodes for t in ep.turns)
    assert stats.env_steps == sum(ep.num_turns for ep in episodes) and stats.generated_tokens > 0

    rows = build_rows(episodes, prompts, layout, teacher_guidance=lambda ep: privileged_block(ep.initial_info),
                      length_quantum=32, row_multiple=4)
    n_resp = sum(len(t.response_ids) for ep in episodes for t in ep.turns)
    assert rows.loss_mask.sum() == n_resp  # masks cover exactly the model's tokens
    assert rows.num_real == (sum(ep.num_turns for ep in episodes) if layout == "per_step" else 4)
    # Teacher rows carry the identical response tokens at the aligned positions.
    on = rows.loss_mask > 0
    gathered = np.take_along_axis(rows.teacher_ids, rows.teacher_index, axis=1)
    np.testing.assert_array_equal(gathered[on], rows.input_ids[on])
    assert rows.has_guidance[:rows.num_real].all()
    # turn_index names the turn of every response token (the map of the step-level advantage).
    assert ((rows.turn_index >= 0) == on).all()
    seen = set()
    for r in range(rows.num_real):
        e = int(rows.episode_index[r])
        for k in np.unique(rows.turn_index[r][rows.turn_index[r] >= 0]):
            np.testing.assert_array_equal(rows.input_ids[r][rows.turn_index[r] == k], episodes[e].turns[k].response_ids)
            seen.add((e, int(k)))
    assert seen == {(e, k) for e, ep in enumerate(episodes) for k, t in enumerate(ep.turns) if t.response_ids}
    text = tok.decode(rows.teacher_ids[0][rows.teacher_attention_mask[0] > 0])
    assert "Privileged information" in text and "Privileged" not in tok.decode(rows.input_ids[0])
    # Sampler log-probs line up with the tokens: the trainer's forward scores them identically.
    graphdef, _ = nnx.split(model)
    logp = np.asarray(make_score_fn(graphdef)(params, rows.input_ids, rows.attention_mask))
    np.testing.assert_allclose(logp[on], rows.old_logp[on], atol=1e-4)


def test_trajectory_rows_are_one_growing_sequence(policy):
    _, _, params, tok = policy
    engine, prompts, pool = _engine(policy, "trajectory")
    episodes, _ = engine.run(params, TASKS, GROUP, seed=2)
    pool.close()
    ep = next(e for e in episodes if e.num_turns >= 2)
    text = tok.decode(sum((t.prompt_ids + t.response_ids for t in ep.turns), []))
    # The second observation follows the first answer inside the same sequence.
    assert text.count("<|im_start|>user") == ep.num_turns
    assert ep.turns[1].observation in text


def test_crashing_environment_ends_only_its_episode(policy):
    _, _, params, _ = policy

    class Crashes:
        def __init__(self):
            self.env = make("sokoban", preset="verl_agent")
            self.instructions, self.max_turns = self.env.instructions, self.env.max_turns

        def reset(self, seed):
            return self.env.reset(seed)

        def step(self, text):
            raise RuntimeError("simulated environment crash")

        def close(self):
            pass

    fns = [functools.partial(make, "sokoban", preset="verl_agent")] * 3 + [Crashes]
    engine, prompts, pool = _engine(policy, "per_step", env_fns=fns)
    episodes, stats = engine.run(params, TASKS, GROUP, seed=3)
    pool.close()
    assert episodes[3].error and "simulated" in episodes[3].error
    assert all(ep.error is None for ep in episodes[:3]) and stats.env_errors == 1
    rows = build_rows(episodes, prompts, "per_step", teacher_guidance=lambda ep: "")
    assert 3 not in set(rows.episode_index[:rows.num_real].tolist())


@pytest.mark.slow  # ~30-55 s on the 2-core CPU: four rollouts and their fresh prefills
@pytest.mark.parametrize("layout", ["per_step", "trajectory"])
def test_cached_turns_equal_fresh_prefill_with_and_without_shared_prefix(policy, layout):
    """Every turn's greedy response (and its log-probs) equals a fresh prefill of that turn's whole context,
    whether the instructions were prefilled once and shared or prefilled in every row."""
    model, sampler, params, tok = policy
    responses = {}
    for share in (True, False):
        engine, _, pool = _engine(policy, layout)
        engine.config = dataclasses.replace(engine.config, share_prefix=share)
        engine.sampling = dataclasses.replace(engine.sampling, temperature=0.0)
        before = dataclasses.replace(sampler.work)
        episodes, _ = engine.run(params, TASKS, GROUP, seed=4)
        pool.close()
        prefilled = sampler.work.minus(before).prefill_tokens
        contexts, turns = [], []
        for ep in episodes:
            history: list[int] = []
            for t in ep.turns:
                history = (history if layout == "trajectory" else []) + t.prompt_ids
                contexts.append(list(history))
                turns.append(t)
                history = history + t.response_ids
        fresh = sampler.generate(params, contexts, max_new_tokens=engine.config.max_response_tokens,
                                 sampling=engine.sampling)
        for t, f in zip(turns, fresh):
            assert t.response_ids == f.tokens
            np.testing.assert_allclose(t.response_logprobs, f.logprobs, atol=1e-4)
        responses[share] = ([t.response_ids for t in turns], prefilled)
    assert responses[True][0] == responses[False][0]
    assert responses[True][1] < responses[False][1]  # the shared instructions were prefilled once


def test_common_prefix_leaves_every_prompt_a_token():
    from skillsd_jax.agent.rollout import common_prefix

    assert common_prefix([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 9]]) == [1, 2]
    assert common_prefix([[1, 2, 3], [1, 2, 3]]) == [1, 2]  # identical prompts keep their last token
    assert common_prefix([[1, 2], [3, 4]]) == [] and common_prefix([]) == []
