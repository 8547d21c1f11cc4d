"""The blind reference policy on any environment: answers drawn from the environment's fixed set."""

import pytest

from skillsd_jax.envs.base import Env
from skillsd_jax.envs.blind import blind_success_rate


class _Door(Env):
    """Wins when the answer is "open"; never ends by itself, so only the turn limit stops an episode."""

    name = "door"
    max_turns = 3
    blind_answers = ("open", "wait")

    def __init__(self):
        super().__init__()
        self.turns = 0
        self.closed = False

    def instructions(self):
        return ""

    def reset(self, seed):
        self.turns = 0
        return "a door", {"won": False, "action_valid": True, "task_id": str(seed)}

    def step(self, response_text):
        self.turns += 1
        won = response_text == "open"
        return "", 0.0, won, {"won": won, "action_valid": True, "task_id": "0"}

    def close(self):
        self.closed = True


def test_blind_policy_is_cut_at_the_turn_limit_and_closes_its_env():
    envs = []

    def make():
        envs.append(_Door())
        return envs[-1]

    assert blind_success_rate(make, range(5), weights=[1.0, 0.0]) == 1.0
    assert blind_success_rate(make, range(5), weights=[0.0, 1.0]) == 0.0  # would loop forever without the limit
    assert envs[-1].turns == 3 and all(e.closed for e in envs)
    assert blind_success_rate(make, range(2), weights=[0.0, 1.0], max_turns=5) == 0.0 and envs[-1].turns == 5
    # Uniform: an episode is lost only when all three answers were "wait" (1/8 of episodes).
    rate = blind_success_rate(make, range(400), repeats=2)
    assert abs(rate - 7 / 8) < 0.05 and rate == blind_success_rate(make, range(400), repeats=2)


def test_blind_policy_needs_blind_answers_and_matching_weights():
    class NoFixedAnswers(_Door):
        blind_answers = ()

    assert blind_success_rate(NoFixedAnswers, range(3)) is None
    assert blind_success_rate(_Door, [], repeats=2) is None
    built = []
    assert blind_success_rate(lambda: built.append(1) or _Door(), range(3), repeats=0) is None and not built
    with pytest.raises(ValueError, match="must be >= 0, got -1"):
        blind_success_rate(_Door, range(2), repeats=-1)
    with pytest.raises(ValueError, match="3 weights for 2 blind answers of door"):
        blind_success_rate(_Door, range(2), weights=[1.0, 0.0, 0.0])
