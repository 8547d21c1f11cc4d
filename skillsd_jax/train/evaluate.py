"""Episode statistics for training logs and evaluation (success rate with its 95% interval, returns,
validity, lengths), and the evaluation of a policy that training and `skillsd-eval` share."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from skillsd_jax.agent.episode import Episode
from skillsd_jax.agent.rollout import RolloutEngine
from skillsd_jax.envs.base import Env
from skillsd_jax.envs.blind import blind_success_rate
from skillsd_jax.train.stats import wilson_interval

EVAL_SEED = 12345  # sampling seed of evaluation rollouts (greedy evaluation ignores it)


def episode_metrics(episodes: Sequence[Episode], prefix: str) -> dict[str, float]:
    """Means over non-errored episodes; errors are counted, never averaged in."""
    ok = [ep for ep in episodes if ep.error is None]
    turns = [t for ep in ok for t in ep.turns]
    out = {f"{prefix}/episodes": float(len(ok)), f"{prefix}/env_errors": float(len(episodes) - len(ok))}
    if not ok:
        return out
    out.update({
        f"{prefix}/return_mean": float(np.mean([ep.total_reward for ep in ok])),
        f"{prefix}/success_rate": float(np.mean([ep.won for ep in ok])),
        f"{prefix}/turns_mean": float(np.mean([ep.num_turns for ep in ok])),
        f"{prefix}/valid_action_rate": float(np.mean([t.action_valid for t in turns])) if turns else 0.0,
        f"{prefix}/response_tokens_mean": float(np.mean([len(t.response_ids) for t in turns])) if turns else 0.0,
        f"{prefix}/action_entropy": action_entropy([t.action for t in turns if t.action_valid]),
    })
    return out


def action_entropy(actions: Sequence[str | None]) -> float:
    """Entropy (nats) of the empirical distribution of the parsed actions: a policy that ignores its
    observation and favours one move shows up here (0: always the same action; log 4 = 1.39: the four
    Sokoban moves equally often)."""
    _, counts = np.unique(np.asarray([str(a) for a in actions], dtype=object), return_counts=True)
    if not len(counts):
        return 0.0
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def evaluate_policy(rollout: RolloutEngine, params: Any, seeds: Sequence[int], *, prefix: str = "eval",
                    seed: int = EVAL_SEED, episodes_out: list[Episode] | None = None) -> dict[str, float]:
    """One episode per task seed with `rollout`'s sampling settings; `episode_metrics` plus the success
    rate's 95% Wilson interval (`success_ci95_lo/hi`), `num_episodes` played and the wall time. The
    episodes themselves are appended to `episodes_out` when given."""
    episodes, stats = rollout.run(params, list(seeds), 1, seed=seed, episode_prefix=prefix)
    if episodes_out is not None:
        episodes_out.extend(episodes)
    out = episode_metrics(episodes, prefix)
    ok = [ep for ep in episodes if ep.error is None]
    lo, hi = wilson_interval(sum(bool(ep.won) for ep in ok), len(ok))
    out.update({f"{prefix}/success_ci95_lo": lo, f"{prefix}/success_ci95_hi": hi,
                f"{prefix}/num_episodes": float(len(episodes)), f"{prefix}/seconds": stats.total_s})
    return out


def blind_reference(make_env: Callable[[], Env], seeds: Sequence[int], repeats: int, max_turns: int = 0,
                    prefix: str = "eval") -> dict[str, float]:
    """`{prefix}/blind_success_rate` of a policy that reads no observation (uniform over the environment's
    `blind_answers`, `repeats` episodes a task cut at the rollout's `max_turns`, a fixed draw) and
    `{prefix}/blind_episodes`; empty when `repeats` is 0 or the environment has no blind answers."""
    rate = blind_success_rate(make_env, seeds, repeats=repeats, max_turns=max_turns)
    if rate is None:
        return {}
    return {f"{prefix}/blind_success_rate": rate, f"{prefix}/blind_episodes": float(repeats * len(seeds))}


def answer_records(episodes: Sequence[Episode]) -> list[dict[str, Any]]:
    """One record per turn: what the policy answered (decoded text), what the environment parsed from
    it, and what that earned: for reading what a policy actually says, not only its rates."""
    return [{"task_id": ep.task_id, "episode_id": ep.episode_id, "turn": i, "response": t.response_text,
             "action": t.action, "valid": t.action_valid, "stop_reason": t.stop_reason, "reward": t.reward,
             "won": ep.won, "error": ep.error}
            for ep in episodes for i, t in enumerate(ep.turns)]
