"""Guidance blocks on top of a prompt: the UCB-selected skill of a task, or privileged information.

One `Guide` per iteration: the first request for a task's skill selects it by UCB and records the
use for credit; later requests in the same iteration (the acting prompt, the student's and the
teacher's rows) get the same skill, so acting and teaching agree.
"""

from __future__ import annotations

from typing import Any, Callable

from skillsd_jax.agent import Episode, privileged_block

KINDS = ("", "skill", "privileged")


class Guide:
    """`guide(kind, episode) -> block text` ("" when the task has no skill or no privileged info)."""

    def __init__(self, *, bank: Any = None, tracker: Any = None, iteration: int = 0,
                 render: Callable[[Any], str] | None = None):
        self.bank, self.tracker, self.iteration, self.render = bank, tracker, iteration, render
        self.chosen: dict[str, Any] = {}  # task id -> Skill | None, for this iteration

    def skill_for(self, task_id: str):
        if task_id not in self.chosen:
            skill = self.bank.select(task_id) if self.bank is not None else None
            self.chosen[task_id] = skill
            if skill is not None and self.tracker is not None:
                self.tracker.record_use(task_id, skill.skill_id, self.iteration)
        return self.chosen[task_id]

    def __call__(self, kind: str, episode: Episode) -> str:
        if kind == "privileged":
            return privileged_block(episode.initial_info)
        if kind == "skill":
            skill = self.skill_for(episode.task_id)
            return "" if skill is None or self.render is None else self.render(skill)
        if kind == "":
            return ""
        raise ValueError(f"unknown guidance kind {kind!r}; expected one of {KINDS}")

    def bind(self, kind: str) -> Callable[[Episode], str] | None:
        """A one-argument guidance function for `kind`, or None for no guidance."""
        return (lambda ep: self(kind, ep)) if kind else None
