"""What a policy that reads no observation earns: every answer drawn from a fixed distribution over the
environment's `blind_answers`, whatever it is shown. A trained policy must beat it before its success
is read as having learned to act on what it sees (and not only to answer in format)."""

from __future__ import annotations

import random
from typing import Callable, Sequence

from skillsd_jax.envs.base import Env


def blind_success_rate(make_env: Callable[[], Env], seeds: Sequence[int], *, weights: Sequence[float] | None = None,
                       repeats: int = 1, rng_seed: int = 0, max_turns: int = 0) -> float | None:
    """Success rate of `repeats` blind episodes on each task seed (answers uniform when `weights` is None),
    each cut where a rollout cuts it (`max_turns`; 0: the environment's own limit); None when the
    environment has no `blind_answers` (its actions depend on what it shows) or there is nothing to play."""
    if repeats < 0:
        raise ValueError(f"blind episodes a task must be >= 0, got {repeats}")
    if repeats == 0 or not len(seeds):  # nothing to play: no environment is built
        return None
    env = make_env()
    try:
        answers = tuple(env.blind_answers)
        if not answers:
            return None
        if weights is not None and len(weights) != len(answers):
            raise ValueError(f"{len(weights)} weights for {len(answers)} blind answers of {env.name}")
        rng = random.Random(rng_seed)
        wins = episodes = 0
        for seed in seeds:
            for _ in range(repeats):
                env.reset(seed=seed)
                won = False
                for _ in range(max_turns or env.max_turns):
                    _, _, done, info = env.step(rng.choices(answers, weights=weights)[0])
                    won = bool(info["won"])
                    if done:
                        break
                wins += won
                episodes += 1
        return wins / episodes
    finally:
        env.close()
