"""Skill blocks for the cold start, so that the teacher can read a skill once RL begins.

A model trained from scratch has never seen a skill block; with one on top of its prompt it scores
tokens as if the block were not there, and Skill-SD's teacher adds nothing. During the supervised
warm-up part of the demonstrations therefore carry a skill block in the teacher's exact format,
written by the run's own summarizer from episode groups of the same level:

  - ``match``: the demonstration plus a few random attempts; the skill's golden workflow is the
    demonstration's moves, which the demonstration then follows;
  - ``advice``: random attempts only (no win), so the skill holds mistakes and general advice, and
    the demonstration still plays the expert's moves (the block does not dictate them);
  - ``other``: the skill of another level, whose workflow the demonstration does not follow, so
    the model learns to use a workflow that fits the level, not to copy any workflow blindly;
  - the rest keep the plain prompt.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Sequence

import numpy as np

from skillsd_jax.agent.episode import Episode, Turn
from skillsd_jax.envs.base import Env

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SkillDemoMix:
    match: float = 0.35  # fraction of demonstrations with a skill whose workflow they follow
    advice: float = 0.15  # ... with a no-win skill (mistakes and advice only)
    other: float = 0.10  # ... with another level's skill
    random_attempts: int = 2  # random episodes summarized next to the demonstration

    def __post_init__(self) -> None:
        if min(self.match, self.advice, self.other) < 0 or self.match + self.advice + self.other > 1:
            raise ValueError("warmstart skill fractions must be >= 0 and sum to <= 1, got "
                             f"match={self.match}, advice={self.advice}, other={self.other}")


def random_episode(env: Env, demo: Episode, actions: Sequence[str], rng: np.random.Generator,
                   template: str, index: int) -> Episode:
    """An episode of `demo`'s task played with uniformly random actions from `actions`."""
    obs, info = env.reset(demo.seed)
    ep = Episode(episode_id=f"{demo.episode_id}/random{index}", env_name=demo.env_name, task_id=demo.task_id,
                 seed=demo.seed, initial_observation=obs, initial_info=dict(info))
    for k in range(getattr(env, "max_turns", 1)):
        text = template.format(action=actions[int(rng.integers(len(actions)))], step=k + 1)
        new_obs, reward, done, step_info = env.step(text)
        ep.turns.append(Turn(observation=obs, response_text=text, action=step_info.get("action"),
                             action_valid=bool(step_info.get("action_valid")), reward=float(reward),
                             done=bool(done)))
        obs, ep.won = new_obs, bool(step_info.get("won"))
        if done:
            break
    return ep


def demo_guidance(demos: Sequence[Episode], env: Env, summarize: Callable[[list[Episode]], Any],
                  render: Callable[[Any], str], mix: SkillDemoMix, template: str,
                  seed: int = 0) -> tuple[dict[str, str], dict[str, int]]:
    """Skill block per demonstration id ("" for plain rows) and how many rows got each kind."""
    rng = np.random.default_rng(seed)
    kinds = rng.choice(4, size=len(demos), p=[mix.match, mix.advice, mix.other,
                                               max(0.0, 1.0 - mix.match - mix.advice - mix.other)])
    actions = sorted({t.action for d in demos for t in d.turns if t.action})
    if not actions:
        raise ValueError("demonstrations have no valid actions to draw random attempts from")
    match_blocks: dict[int, str] = {}
    out: dict[str, str] = {}
    counts = {"match": 0, "advice": 0, "other": 0, "plain": 0}

    def block(group: list[Episode]) -> str:
        skill = summarize(group)
        return render(skill) if skill is not None else ""

    randoms = {i: [random_episode(env, d, actions, rng, template, k) for k in range(mix.random_attempts)]
               for i, d in enumerate(demos) if kinds[i] in (0, 1)}
    for i, d in enumerate(demos):
        if kinds[i] == 0:
            match_blocks[i] = out[d.episode_id] = block([d] + randoms[i])
            counts["match"] += 1
        elif kinds[i] == 1:
            failed = [e for e in randoms[i] if not e.won] or randoms[i]
            out[d.episode_id] = block(failed)
            counts["advice"] += 1
    for i, d in enumerate(demos):
        if kinds[i] == 2:
            others = [j for j in range(len(demos)) if j != i and demos[j].task_id != d.task_id]
            j = int(rng.choice(others)) if others else i
            out[d.episode_id] = match_blocks.get(j) or block([demos[j]])
            counts["other"] += 1
        elif kinds[i] == 3:
            out[d.episode_id] = ""
            counts["plain"] += 1
    return out, counts
