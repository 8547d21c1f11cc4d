"""Deterministic, model-free summarizers for CPU runs and tests.

`RuleSummarizer` (backend `rule`, the default) picks an analyzer by `episode.env_name` ("sokoban" ->
`SokobanAnalyzer`, anything else -> `GenericAnalyzer`); both use only what the episodes show.
`oracle_summarizer()` (backend `oracle`) uses the privileged analyzers: the solver's plan and exact
deadlocks for Sokoban, gold answers for Search-QA. It is an upper bound, never a default.
If the dedicated analyzer fails on a group (e.g. an episode without the data it replays), the
generic analyzer is used instead; both failures are counted and logged.
"""

from __future__ import annotations

import logging
import threading
from typing import Mapping

from skillsd_jax.agent.episode import Episode
from skillsd_jax.skills.analyzers.common import Analysis, Analyzer
from skillsd_jax.skills.analyzers.generic import GenericAnalyzer
from skillsd_jax.skills.analyzers.sokoban import SokobanAnalyzer, SokobanOracleAnalyzer
from skillsd_jax.skills.prompting import DEFAULT_LIMITS, FieldLimits, SkillParseError, validate_skill_fields
from skillsd_jax.skills.skill import Skill
from skillsd_jax.skills.summarizer import Summarizer, group_by_task

log = logging.getLogger(__name__)


def default_analyzers() -> dict[str, Analyzer]:
    return {"sokoban": SokobanAnalyzer()}


def oracle_summarizer(limits: FieldLimits = DEFAULT_LIMITS) -> "RuleSummarizer":
    """The privileged variant: skills that may carry the level's solution or the gold answer."""
    summarizer = RuleSummarizer({"sokoban": SokobanOracleAnalyzer()}, default=GenericAnalyzer(reveal_answers=True),
                                limits=limits)
    summarizer.name = "oracle"
    return summarizer


class RuleSummarizer(Summarizer):
    """Summarizes each task group with the analyzer registered for its environment."""

    name = "rule"

    def __init__(self, analyzers: Mapping[str, Analyzer] | None = None, *, default: Analyzer | None = None,
                 limits: FieldLimits = DEFAULT_LIMITS):
        self.analyzers = dict(default_analyzers() if analyzers is None else analyzers)
        self.default = default or GenericAnalyzer()
        self.limits = limits
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def _count(self, key: str) -> None:
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1

    def summarize(self, episodes: list[Episode], *, step: int) -> list[Skill]:
        skills = []
        for task_id, group in group_by_task(episodes).items():
            analysis = self._analyze(group)
            if analysis is None:
                self._count("failures")
                continue
            try:
                fields = validate_skill_fields(
                    {"success_analysis": analysis.success_analysis, "mistake_analysis": analysis.mistake_analysis,
                     "golden_workflow": analysis.golden_workflow}, self.limits)
            except SkillParseError as e:
                self._count("failures")
                log.warning("rule summarizer: analysis of %s is not a valid skill: %s", task_id, e)
                continue
            skills.append(Skill(task_id=task_id, env=group[0].env_name, created_step=int(step),
                                source_episode_ids=[e.episode_id for e in group],
                                metadata={"summarizer": self.name, **analysis.metadata}, **fields))
            self._count("skills")
        return skills

    def _analyze(self, group: list[Episode]) -> Analysis | None:
        env = group[0].env_name
        analyzer = self.analyzers.get(env)
        if analyzer is not None:
            try:
                return analyzer.analyze(group)
            except Exception as e:  # fall back to the env-agnostic rules
                self._count(f"{env}_analyzer_errors")
                log.warning("rule summarizer: %s analyzer failed on %s (%s: %s); using the generic analyzer",
                            env, group[0].task_id, type(e).__name__, e)
        try:
            return self.default.analyze(group)
        except Exception as e:
            self._count("generic_analyzer_errors")
            log.warning("rule summarizer: generic analyzer failed on %s: %s: %s", group[0].task_id,
                        type(e).__name__, e)
            return None
