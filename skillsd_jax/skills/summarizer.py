"""The summarizer interface and the background pool that keeps summarization off the learner's path.

A `Summarizer` turns a group of finished episodes of ONE task (normally one GRPO group) into
skills; backends return one skill per task group (several only if given several tasks at once,
see `group_by_task`) and an empty list when they fail (counted and logged by the backend).

`AsyncSummarizer` runs a summarizer on worker threads and stores the results in a `SkillBank`.
`submit` never blocks: when the bounded queue is full the group is dropped and counted
(back-pressure: the learner outpacing the summarizer loses skills, never time).
"""

from __future__ import annotations

import abc
import logging
import queue
import threading
import time
from typing import Any, Sequence

from skillsd_jax.agent.episode import Episode
from skillsd_jax.skills.bank import SkillBank
from skillsd_jax.skills.skill import Skill

log = logging.getLogger(__name__)


class Summarizer(abc.ABC):
    """Episodes of one task -> skills (usually exactly one; [] on failure)."""

    name: str = "summarizer"

    @abc.abstractmethod
    def summarize(self, episodes: list[Episode], *, step: int) -> list[Skill]:
        """Skills distilled from `episodes` (same task); `step` is stored as `created_step`."""

    def stats(self) -> dict[str, int]:
        """Backend counters (requests, failures by kind, ...)."""
        return {}

    def close(self) -> None:
        """Releases connections or models the backend holds."""


def group_by_task(episodes: Sequence[Episode]) -> dict[str, list[Episode]]:
    """Episodes grouped by task id, in first-seen order; crashed episodes (error set) are left out."""
    groups: dict[str, list[Episode]] = {}
    for e in episodes:
        if e.error is None:
            groups.setdefault(e.task_id, []).append(e)
    return groups


class AsyncSummarizer:
    """Runs `summarizer` on `max_workers` threads over a queue of at most `max_queue` groups."""

    def __init__(self, summarizer: Summarizer, bank: SkillBank, *, max_workers: int = 2, max_queue: int = 64,
                 poll_s: float = 0.05):
        if max_workers < 1 or max_queue < 1:
            raise ValueError(f"AsyncSummarizer needs max_workers >= 1 and max_queue >= 1, "
                             f"got {max_workers} and {max_queue}")
        self.summarizer = summarizer
        self.bank = bank
        self._queue: queue.Queue[tuple[list[Episode], int]] = queue.Queue(maxsize=max_queue)
        self._cond = threading.Condition()
        self._unfinished = 0
        self._closed = False
        self._stop = threading.Event()
        self._poll_s = poll_s
        self._counts = {"submitted": 0, "completed": 0, "failed": 0, "dropped": 0, "skills_added": 0,
                        "duplicates": 0, "empty": 0, "discarded_on_close": 0}
        self._latency_sum_s = 0.0
        self._latency_max_s = 0.0
        self._workers = [threading.Thread(target=self._work, name=f"skill-summarizer-{i}", daemon=True)
                         for i in range(max_workers)]
        for w in self._workers:
            w.start()

    def submit(self, episodes: Sequence[Episode], step: int) -> bool:
        """Queues a group for summarization without blocking; False (and a counted drop) if full or closed."""
        item = (list(episodes), int(step))
        with self._cond:
            if self._closed:
                self._counts["dropped"] += 1
                return False
            try:
                self._queue.put_nowait(item)
            except queue.Full:
                self._counts["dropped"] += 1
                log.debug("summarizer queue full (%d): group dropped", self._queue.maxsize)
                return False
            self._unfinished += 1
            self._counts["submitted"] += 1
            return True

    def stats(self) -> dict[str, Any]:
        """Counters: submitted, completed (incl. `empty`: finished without a skill), failed (raised), dropped
        (queue full or closed), skills_added, duplicates, discarded_on_close, queued, in_flight; the mean
        and max seconds a summary took (latency_mean_s, latency_max_s); backend (its own counters)."""
        with self._cond:
            out: dict[str, Any] = dict(self._counts)
            out["queued"] = self._queue.qsize()
            out["in_flight"] = self._unfinished - out["queued"]
            finished = self._counts["completed"] + self._counts["failed"]
            out["latency_mean_s"] = self._latency_sum_s / finished if finished else 0.0
            out["latency_max_s"] = self._latency_max_s
        out["backend"] = self.summarizer.stats()
        return out

    def drain(self, timeout: float | None = None) -> bool:
        """Waits until every submitted group is processed; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._unfinished > 0:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float | None = 30.0, *, wait: bool = True) -> None:
        """Stops accepting work; with `wait`, finishes queued groups first (up to `timeout`)."""
        with self._cond:
            self._closed = True
        if wait:
            self.drain(timeout)
        self._stop.set()
        for w in self._workers:
            w.join(timeout=None if timeout is None else max(0.1, timeout))
        while True:  # whatever is still queued will never run
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
            with self._cond:
                self._counts["discarded_on_close"] += 1
                self._unfinished -= 1
                self._cond.notify_all()

    def __enter__(self) -> "AsyncSummarizer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                episodes, step = self._queue.get(timeout=self._poll_s)
            except queue.Empty:
                continue
            outcome, added, dupes = "failed", 0, 0
            started = time.monotonic()
            try:
                good = [e for e in episodes if e.error is None]  # crashed episodes teach nothing
                skills = self.summarizer.summarize(good, step=step) if good else []
                for s in skills:
                    _, created = self.bank.add_or_get(s)
                    added += int(created)
                    dupes += int(not created)
                outcome = "completed" if skills else "empty"
            except Exception as e:  # a backend bug must not kill the worker
                task = episodes[0].task_id if episodes else "?"
                log.warning("summarizer %s failed on task %s at step %d: %s: %s",
                            self.summarizer.name, task, step, type(e).__name__, e)
            finally:
                with self._cond:
                    if outcome == "empty":
                        self._counts["completed"] += 1
                    self._counts[outcome] += 1
                    self._counts["skills_added"] += added
                    self._counts["duplicates"] += dupes
                    took = time.monotonic() - started
                    self._latency_sum_s += took
                    self._latency_max_s = max(self._latency_max_s, took)
                    self._unfinished -= 1
                    self._cond.notify_all()
