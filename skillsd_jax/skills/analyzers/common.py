"""What every rule-based analyzer shares: the result record and small episode statistics."""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Protocol, Sequence

from skillsd_jax.agent.episode import Episode, Turn
from skillsd_jax.envs.parsing import first_tag, normalize_action

# Tags models wrap actions in across environments (action, Search-QA, AppWorld).
_ACTION_TAGS = ("action", "answer", "search", "code")


@dataclasses.dataclass
class Analysis:
    """The three skill texts an analyzer writes, plus facts worth keeping as skill metadata."""

    success_analysis: str
    mistake_analysis: str
    golden_workflow: str
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)


class Analyzer(Protocol):
    """Deterministic analysis of a group of episodes of one task."""

    def analyze(self, episodes: Sequence[Episode]) -> Analysis: ...


def attempted_action(turn: Turn) -> str:
    """The action a turn tried: the parsed action, else the first tagged text, else a snippet of the answer."""
    if turn.action is not None:
        return normalize_action(turn.action)
    tagged = first_tag(turn.response_text or "", _ACTION_TAGS)
    if tagged is not None and tagged[1]:
        return normalize_action(tagged[1])[:80]
    snippet = " ".join((turn.response_text or "").split())[:40]
    return snippet or "<empty answer>"


def is_invalid(turn: Turn) -> bool:
    return (not turn.action_valid) or turn.action is None


def shortest_win(episodes: Sequence[Episode]) -> Episode | None:
    """The winning episode with the fewest turns (ties: higher return, then first)."""
    wins = [e for e in episodes if e.won]
    return min(wins, key=lambda e: (e.num_turns, -e.total_reward)) if wins else None


def invalid_summary(episodes: Sequence[Episode]) -> tuple[int, int]:
    """(number of invalid turns, number of episodes with at least one)."""
    per_ep = [sum(is_invalid(t) for t in e.turns) for e in episodes]
    return sum(per_ep), sum(1 for n in per_ep if n)


def most_repeated_failure(episodes: Sequence[Episode]) -> tuple[str, int] | None:
    """The failing action tried most often, with its count; None if nothing failed twice.

    A failing action is an invalid turn (in any episode) or, in a lost episode, a valid action that
    earned no positive reward and was tried at least twice in that episode (a loop).
    """
    counts: collections.Counter[str] = collections.Counter()
    for e in episodes:
        if not e.won:
            valid = collections.Counter(attempted_action(t) for t in e.turns if not is_invalid(t) and t.reward <= 0)
            counts.update({a: n for a, n in valid.items() if n >= 2})
        counts.update(f"invalid: {attempted_action(t)}" for t in e.turns if is_invalid(t))
    if not counts:
        return None
    action, n = counts.most_common()[0]  # a stable sort: on ties the first seen wins
    return (action, n) if n >= 2 else None


def step_lines(moves: Sequence[str]) -> str:
    """Moves as "Step 1: a" lines, one per move (no grouping of repeats), so that following the
    workflow needs no counting of runs; with a `{step}` answer template
    (`"<think>Step {step}: {action}.</think>..."`) the agent's own words match the workflow's lines."""
    return "\n".join(f"Step {i + 1}: {m}" for i, m in enumerate(moves))


def numbered(steps: Sequence[str], *, group_repeats: bool = False) -> str:
    """Steps as "1. a" lines; with `group_repeats`, consecutive equal steps become "a (k times)"."""
    runs: list[tuple[str, int]] = []
    for s in steps:
        if group_repeats and runs and runs[-1][0] == s:
            runs[-1] = (s, runs[-1][1] + 1)
        else:
            runs.append((s, 1))
    return "\n".join(f"{i + 1}. {s}" + (f" ({k} times)" if k > 1 else "") for i, (s, k) in enumerate(runs))
