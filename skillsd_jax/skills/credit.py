"""Which reward a used skill is credited with: a documented, configurable choice (docs/algorithm.md, step 3).

Modes (``CreditTracker(bank, mode=...)``):
  - ``next_visit`` (DEFAULT, the paper's signal): a skill used for task x at step t is credited with
    the mean episode return of the student group on x the next time x is trained (first group
    observed at a step > t). The skill never sees the group it was chosen for, whose rollouts it
    could not have influenced.
  - ``won_rate_next_visit``: as above, credited with the fraction of that group's episodes won.
  - ``same_step``: credited with the mean return of the group of the same iteration (step == t).
    Cheap and immediate; measures the task's difficulty more than the skill's usefulness under
    on-policy Skill-SD (the student never sees the skill), so it is an ablation.

Intended order inside one iteration, per task x at step t:
  1. ``observe_group(x, t, returns, won)`` once the student group on x is finished;
  2. ``skill = bank.select(x)`` and ``record_use(x, skill.skill_id, t)`` for the teacher prompt.
``same_step`` also accepts the opposite order (the use is credited as soon as both are known).

Pending uses are stored inside the bank file (``bank_state`` table) in the same transaction as the
credits they produce, so a bank snapshot taken at a checkpoint restores them exactly. They are
also available as ``state_dict()`` / ``load_state_dict()``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import threading
from typing import Any, Literal, Sequence

from skillsd_jax.skills.bank import SkillBank

log = logging.getLogger(__name__)

CreditMode = Literal["next_visit", "same_step", "won_rate_next_visit"]
CREDIT_MODES: tuple[str, ...] = ("next_visit", "same_step", "won_rate_next_visit")
STATE_KEY = "credit_tracker"


@dataclasses.dataclass(frozen=True)
class PendingUse:
    task_id: str
    skill_id: int
    step: int


class CreditTracker:
    """Turns (skill use, later group outcome) pairs into `bank.update_many` calls."""

    def __init__(self, bank: SkillBank, mode: CreditMode = "next_visit", *, persist: bool = True):
        if mode not in CREDIT_MODES:
            raise ValueError(f"unknown credit mode {mode!r}; choose one of {CREDIT_MODES}")
        self.bank = bank
        self.mode = mode
        self.persist = persist
        self.stats: dict[str, int] = {"uses": 0, "credited": 0, "dropped_stale": 0, "empty_groups": 0}
        self._lock = threading.Lock()
        self._pending: list[PendingUse] = []
        self._last_group: dict[str, tuple[int, float, float]] = {}  # same_step: task -> (step, mean, won rate)
        if persist:
            saved = bank.get_state(STATE_KEY)
            if saved is not None:
                self.load_state_dict(json.loads(saved))

    # ------------------------------------------------------------------ events
    def record_use(self, task_id: str, skill_id: int, step: int) -> None:
        """The learner used `skill_id` for `task_id` at `step` (its teacher prompt carried the skill)."""
        self.record_uses([(task_id, skill_id, step)])

    def record_uses(self, uses: Sequence[tuple[str, int, int]]) -> None:
        """Several `record_use` calls, persisted in one transaction."""
        with self._lock:
            credits: list[tuple[int, float]] = []
            for task_id, skill_id, step in uses:
                use = PendingUse(str(task_id), int(skill_id), int(step))
                self.stats["uses"] += 1
                last = self._last_group.get(use.task_id)
                if self.mode == "same_step" and last is not None and last[0] == use.step:
                    credits.append((use.skill_id, last[1]))  # the group is already known
                else:
                    self._pending.append(use)
            self._commit(credits)

    def observe_group(self, task_id: str, step: int, returns: Sequence[float],
                      won: Sequence[bool] | None = None) -> list[tuple[int, float]]:
        """The student group on `task_id` finished at `step`; returns the (skill_id, reward) credits made.

        `returns` are the group's episode returns (exclude crashed episodes); `won` is required
        for `won_rate_next_visit`. An empty group credits nothing and keeps the uses pending.
        """
        task_id, step = str(task_id), int(step)
        rets = [float(r) for r in returns]
        if not rets:
            self.stats["empty_groups"] += 1
            log.warning("credit: empty group for task %s at step %d; pending uses kept", task_id, step)
            return []
        if any(not math.isfinite(r) for r in rets):
            raise ValueError(f"credit: non-finite episode return for task {task_id} at step {step}: {rets}")
        if self.mode == "won_rate_next_visit" and (won is None or len(won) != len(rets)):
            raise ValueError(f"credit mode won_rate_next_visit needs one `won` flag per return "
                             f"(task {task_id}, step {step}: {len(rets)} returns, won={won!r})")
        mean_ret = sum(rets) / len(rets)
        won_rate = (sum(bool(w) for w in won) / len(won)) if won else 0.0
        with self._lock:
            credits: list[tuple[int, float]] = []
            keep: list[PendingUse] = []
            for u in self._pending:
                if u.task_id != task_id:
                    keep.append(u)
                elif self.mode == "same_step":
                    if u.step == step:
                        credits.append((u.skill_id, mean_ret))
                    elif u.step < step:  # its own group never arrived
                        self.stats["dropped_stale"] += 1
                        log.warning("credit: use of skill %d on %s at step %d never saw its group; dropped",
                                    u.skill_id, task_id, u.step)
                    else:
                        keep.append(u)
                elif u.step < step:  # next_visit / won_rate_next_visit: strictly a later visit
                    credits.append((u.skill_id, won_rate if self.mode == "won_rate_next_visit" else mean_ret))
                else:
                    keep.append(u)
            self._pending = keep
            if self.mode == "same_step":
                self._last_group[task_id] = (step, mean_ret, won_rate)
            self._commit(credits)
            return credits

    # ------------------------------------------------------------------ state
    def pending(self, task_id: str | None = None) -> list[PendingUse]:
        with self._lock:
            return [u for u in self._pending if task_id is None or u.task_id == task_id]

    def state_dict(self) -> dict[str, Any]:
        """JSON-able pending uses (and same_step's last groups), for checkpoints without the bank."""
        with self._lock:
            return self._state()

    def _state(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "pending": [dataclasses.asdict(u) for u in self._pending],
            "last_group": {k: list(v) for k, v in self._last_group.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            pending = [PendingUse(str(u["task_id"]), int(u["skill_id"]), int(u["step"])) for u in state["pending"]]
            last = {str(k): (int(v[0]), float(v[1]), float(v[2])) for k, v in state.get("last_group", {}).items()}
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise ValueError(f"credit tracker state is malformed: {e!r}") from e
        if state.get("mode") != self.mode:
            log.warning("credit: state was saved in mode %r, tracker runs in %r", state.get("mode"), self.mode)
        with self._lock:
            self._pending, self._last_group = pending, last

    def _commit(self, credits: list[tuple[int, float]]) -> None:
        state = {STATE_KEY: json.dumps(self._state())} if self.persist else None
        if credits or state:
            self.stats["credited"] += self.bank.update_many(credits, state=state)
