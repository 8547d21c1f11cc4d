"""UCB1 selection over one task's skill buffer (docs/algorithm.md, step 3).

Rule: untried skills (n(e) = 0) come first, oldest first. Otherwise pick
``argmax_e mean(e) + c * sqrt(ln N(x) / n(e))`` with ``N(x) = sum_e n(e)`` over the task's
skills; ties go to the oldest skill (smallest id), so selection is deterministic.
"""

from __future__ import annotations

import math
from typing import Sequence

from skillsd_jax.skills.skill import Skill


def ucb_score(mean: float, count: int, total: int, c: float) -> float:
    """`mean + c*sqrt(ln(total)/count)`; +inf for an untried skill."""
    if count <= 0:
        return math.inf
    if total < count:
        raise ValueError(f"UCB total uses N={total} is smaller than the skill's count n={count}")
    return float(mean) + float(c) * math.sqrt(math.log(total) / count)


def select_index(means: Sequence[float], counts: Sequence[int], c: float) -> int | None:
    """Index of the skill to use among candidates listed oldest first; None for an empty buffer."""
    if len(means) != len(counts):
        raise ValueError(f"UCB got {len(means)} means but {len(counts)} counts")
    if not counts:
        return None
    for i, n in enumerate(counts):  # untried first, oldest first
        if n <= 0:
            return i
    total = int(sum(counts))
    best_i, best = 0, -math.inf
    for i, (m, n) in enumerate(zip(means, counts)):
        s = ucb_score(m, n, total, c)
        if s > best:  # strict: ties keep the older skill
            best_i, best = i, s
    return best_i


def select_skill(skills: Sequence[Skill], c: float) -> Skill | None:
    """UCB choice among `skills` (ordered oldest first, e.g. by skill_id)."""
    ordered = sorted(skills, key=lambda s: (s.skill_id is None, s.skill_id or 0))
    i = select_index([s.mean_reward for s in ordered], [s.count for s in ordered], c)
    return None if i is None else ordered[i]
