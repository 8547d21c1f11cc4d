"""Episode returns (truncation rule) and the advantage modes."""

import numpy as np
import pytest

from skillsd_jax.agent.episode import Episode, Turn
from skillsd_jax.train.returns import AdvantageConfig, advantages, episode_returns


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
