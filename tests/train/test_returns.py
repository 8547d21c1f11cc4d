"""Episode returns (truncation rule) and the advantage modes."""

import numpy as np
import pytest

from skillsd_jax.agent.episode import Episode, Turn
from skillsd_jax.agent import build_rows, token_advantages
from skillsd_jax.train.returns import AdvantageConfig, advantages, episode_returns, returns_to_go, step_advantages


def _ep(group: int, rewards: list[float], *, won=False, truncated=False, error=None) -> Episode:
    turns = [Turn(observation="", response_text="", action="up", action_valid=True, reward=r, done=False)
             for r in rewards]
    if truncated:
        turns[-1].info["truncated"] = True
    return Episode(episode_id=f"{group}", env_name="sokoban", task_id=f"t{group}", seed=group, initial_observation="",
                   turns=turns, group_id=group, won=won, error=error)


def test_truncated_episode_never_beats_a_finished_failure():
    group = [_ep(0, [-0.1] * 15), _ep(0, [-0.1] * 15 + [1.0]), _ep(0, [-0.1] * 4, truncated=True)]
    returns, _, _ = episode_returns(group, AdvantageConfig())
    assert returns[2] <= min(returns[0], returns[1])  # -0.4 raw would beat both finished failures
    assert returns[2] == pytest.approx(-1.5)
    # Alone in its group: its own return minus the penalty.
    alone, _, _ = episode_returns([_ep(1, [-0.1] * 4, truncated=True)], AdvantageConfig(truncation_penalty=2.0))
    assert alone[0] == pytest.approx(-2.4)
    # A won episode is never treated as truncated.
    won, _, _ = episode_returns([_ep(2, [-0.1, 10.9], won=True, truncated=True)], AdvantageConfig())
    assert won[0] == pytest.approx(10.8)


def test_group_mode_is_grpo_and_all_fail_groups_get_zero():
    returns = np.array([1.0, 0.0, -1.5, -1.5], np.float32)
    groups = np.array([0, 0, 1, 1])
    valid = np.ones(4, bool)
    adv = advantages(returns, groups, valid, AdvantageConfig(mode="group"))
    assert adv[0] > 0 > adv[1] and adv[2] == adv[3] == 0.0


def test_group_then_batch_gives_all_fail_groups_a_negative_signal():
    returns = np.array([1.0, 0.0, -1.5, -1.5], np.float32)
    groups = np.array([0, 0, 1, 1])
    valid = np.array([True, True, True, True])
    adv = advantages(returns, groups, valid, AdvantageConfig(mode="group_then_batch", batch_weight=0.5))
    assert adv[2] == adv[3] < 0 and adv[0] > adv[1]
    grpo = advantages(returns, groups, valid, AdvantageConfig(mode="group"))
    # Within a group the ordering and gaps are GRPO's; only a per-group offset is added.
    assert adv[0] - adv[1] == pytest.approx(grpo[0] - grpo[1], rel=1e-5)


def test_batch_mode_centres_per_group_and_ignores_invalid():
    returns = np.array([2.0, 0.0, 5.0, 3.0, 100.0], np.float32)
    groups = np.array([0, 0, 1, 1, 1])
    valid = np.array([True, True, True, True, False])
    adv = advantages(returns, groups, valid, AdvantageConfig(mode="batch"))
    assert adv[4] == 0.0
    np.testing.assert_allclose(adv[:4], [1, -1, 1, -1], atol=1e-5)


def test_bad_advantage_config():
    with pytest.raises(ValueError, match="advantage.mode"):
        AdvantageConfig(mode="magic")


def _walk(group: int, steps: list[tuple[str, float]], *, truncated=False) -> Episode:
    """An episode whose turns answered the given observations and earned the given rewards."""
    ep = _ep(group, [r for _, r in steps], truncated=truncated)
    for turn, (obs, _) in zip(ep.turns, steps):
        turn.observation = obs
    return ep


def test_returns_to_go_discount_later_rewards():
    np.testing.assert_allclose(returns_to_go([1.0, 0.0, 4.0], 0.5), [2.0, 2.0, 4.0])
    np.testing.assert_allclose(returns_to_go([1.0, 0.0, 4.0], 1.0), [5.0, 4.0, 4.0])


def test_step_advantages_rank_turns_that_answered_the_same_observation():
    eps = [_walk(0, [("s0", 0.0), ("s1", 2.0)]),   # from s0: return-to-go 0 + 0.5 * 2 = +1
           _walk(0, [("s0", 0.0), ("s2", -2.0)]),  # from s0: -1
           _walk(1, [("s0", 5.0)]),                # another task: never compared with group 0
           _walk(0, [("s0", 9.0)], truncated=True)]  # truncated: takes no part in the step term
    returns, groups, valid = episode_returns(eps, AdvantageConfig())
    centred, m = step_advantages(eps, groups, valid, AdvantageConfig(step_weight=1.0, gamma=0.5, norm_std=False))
    np.testing.assert_allclose(centred[0], [1.0, 0.0])
    np.testing.assert_allclose(centred[1], [-1.0, 0.0])
    np.testing.assert_allclose(centred[2], [0.0])
    np.testing.assert_allclose(centred[3], [0.0])
    assert m["advantage/step_anchored"] == pytest.approx(2 / 5) and m["advantage/step_abs_mean"] == pytest.approx(1.0)
    # Undiscounted the gap doubles; normalized it is +-1 either way.
    undiscounted, _ = step_advantages(eps, groups, valid, AdvantageConfig(step_weight=1.0, gamma=1.0, norm_std=False))
    np.testing.assert_allclose(undiscounted[0], [2.0, 0.0])
    normed, _ = step_advantages(eps, groups, valid, AdvantageConfig(step_weight=1.0, gamma=0.5))
    np.testing.assert_allclose([normed[0][0], normed[1][0]], [1 / np.sqrt(2), -1 / np.sqrt(2)], atol=1e-5)
    # Equal returns-to-go from a shared observation: no step signal.
    same = [_walk(0, [("s0", -0.1)]), _walk(0, [("s0", -0.1)])]
    r, g, v = episode_returns(same, AdvantageConfig())
    np.testing.assert_allclose(np.concatenate(step_advantages(same, g, v, AdvantageConfig(step_weight=1.0))[0]), 0.0)


@pytest.mark.parametrize("layout", ["trajectory", "per_step"])
def test_token_advantages_follow_each_tokens_turn(layout):
    ep = _walk(0, [("s0", 0.0), ("s1", 0.0)])
    ep.turns[0].prompt_ids, ep.turns[0].response_ids, ep.turns[0].response_logprobs = [1, 2, 3], [4, 5], [-1.0] * 2
    ep.turns[1].prompt_ids, ep.turns[1].response_ids, ep.turns[1].response_logprobs = [6], [7, 8, 9], [-1.0] * 3
    rows = build_rows([ep], None, layout, teacher_guidance=lambda e: "", length_quantum=4)
    adv = token_advantages(rows, np.asarray([0.5]), [np.asarray([1.0, -2.0])], 0.25)
    on = rows.loss_mask > 0
    by_token = dict(zip(rows.input_ids[on].tolist(), adv[on].tolist()))
    assert by_token == {4: 0.75, 5: 0.75, 7: 0.0, 8: 0.0, 9: 0.0}
    assert ((rows.turn_index >= 0) == on).all()


def test_step_settings_are_checked():
    with pytest.raises(ValueError, match="gamma"):
        AdvantageConfig(step_weight=1.0, gamma=0.0)
    with pytest.raises(ValueError, match="step_weight"):
        AdvantageConfig(step_weight=-1.0)
