"""Default skills carry no answer key: on real Sokoban levels that no episode won, replaying the
skill's golden workflow does not solve the level (the oracle's workflow does: the negative control)."""

import re

import numpy as np

from skillsd_jax.agent.episode import Episode, Turn
from skillsd_jax.envs.sokoban import SokobanEnv
from skillsd_jax.skills.backends.rule_backend import RuleSummarizer, oracle_summarizer

MOVES = ("up", "down", "left", "right")


def _random_group(env: SokobanEnv, seed: int, n: int, rng) -> list[Episode]:
    group = []
    for k in range(n):
        obs, info = env.reset(seed)
        ep = Episode(episode_id=f"{seed}/{k}", env_name="sokoban", task_id=info["task_id"], seed=seed,
                     initial_observation=obs, initial_info=dict(info))
        done = False
        while not done:
            a = MOVES[rng.integers(4)]
            new_obs, r, done, step_info = env.step(f"<action>{a}</action>")
            ep.turns.append(Turn(observation=obs, response_text=f"<action>{a}</action>", action=a,
                                 action_valid=True, reward=r, done=done))
            obs, ep.won = new_obs, bool(step_info["won"])
        group.append(ep)
    return group


def _replay_solves(seed: int, workflow: str) -> bool:
    """Plays every direction word of the workflow, in order (a 'right (2 times)' step twice)."""
    env = SokobanEnv(max_steps=200)
    env.reset(seed)
    for m in re.finditer(r"\b(up|down|left|right)\b(?: \((\d+) times\))?", workflow):
        for _ in range(int(m.group(2) or 1)):
            _, _, done, info = env.step(f"<action>{m.group(1)}</action>")
            if info["won"]:
                return True
    return False


def test_default_workflow_never_solves_an_unwon_level():
    env, rng = SokobanEnv(), np.random.default_rng(0)
    checked = oracle_solved = 0
    for seed in range(40):
        group = _random_group(env, seed, 4, rng)
        if any(e.won for e in group):
            continue
        skill = RuleSummarizer().summarize(group, step=0)[0]
        assert not skill.metadata["privileged"]
        assert not _replay_solves(seed, skill.golden_workflow), (seed, skill.golden_workflow)
        oracle = oracle_summarizer().summarize(group, step=0)[0]
        oracle_solved += _replay_solves(seed, oracle.golden_workflow)
        checked += 1
        if checked == 12:
            break
    assert checked >= 8
    assert oracle_solved == checked  # the check can fail: the answer key does solve every level
