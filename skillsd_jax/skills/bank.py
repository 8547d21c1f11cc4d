"""A persistent, thread-safe per-task skill bank on SQLite (docs/algorithm.md, steps 2-3).

Durability: WAL journal with ``synchronous=FULL``; every write is its own transaction, so once
`add`/`update` returns the change survives a SIGKILL of the process (and a power loss).

Thread safety: one connection guarded by a re-entrant lock; summarizer threads and the learner
may call any method concurrently.

Buffers: each task keeps at most `capacity_per_task` skills. Adding to a full buffer evicts one:
the *tried* skill (count > 0) with the lowest mean reward (ties: the oldest); untried skills are
never evicted unless every skill is untried, then the oldest goes. Skill ids are never reused
(AUTOINCREMENT), so credit that arrives for an evicted skill is recognised and dropped.

Dedupe: adding a skill whose normalized texts equal an existing skill of the same task returns
the existing id and changes nothing.

Checkpoints: `snapshot(dest)` writes a consistent single-file copy (SQLite online backup);
`SkillBank.restore(snapshot, path)` puts it back so training resumes with the bank as of that step.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sqlite3
import threading
import time
from typing import Any, Iterator, Sequence

from skillsd_jax.skills.skill import SKILL_FIELDS, Skill
from skillsd_jax.skills.sqlite_io import (SkillBankError, backup_to_single_file, check_header, check_integrity,
                                          check_schema, connect, fsync_dir, remove_db_files)
from skillsd_jax.skills.ucb import select_skill

log = logging.getLogger(__name__)

_COLUMNS = (
    "skill_id", "task_id", "env", *SKILL_FIELDS, "source_episode_ids", "created_step", "count",
    "mean_reward", "metadata",
)


class SkillBank:
    """Per-task skill buffers with UCB statistics, stored in one SQLite file at `path`."""

    def __init__(self, path: str | os.PathLike[str], *, capacity_per_task: int = 8, ucb_c: float = 1.0,
                 busy_timeout_s: float = 30.0):
        if int(capacity_per_task) < 1:
            raise ValueError(f"SkillBank capacity_per_task must be >= 1, got {capacity_per_task}")
        if not math.isfinite(float(ucb_c)) or float(ucb_c) < 0:
            raise ValueError(f"SkillBank ucb_c must be a finite number >= 0, got {ucb_c}")
        self.path = os.fspath(path)
        self.capacity_per_task = int(capacity_per_task)
        self.ucb_c = float(ucb_c)
        self.stats: dict[str, int] = {"added": 0, "duplicates": 0, "evicted": 0, "updates": 0, "stale_updates": 0}
        self._lock = threading.RLock()
        parent = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(parent, exist_ok=True)
        self._conn: sqlite3.Connection | None = connect(self.path, busy_timeout_s)

    # ------------------------------------------------------------------ writes
    def add(self, skill: Skill) -> int:
        """Stores `skill` (sets `skill.skill_id`); returns its id, or the id of an identical skill."""
        return self.add_or_get(skill)[0]

    def add_or_get(self, skill: Skill) -> tuple[int, bool]:
        """As `add`, also saying whether a new skill was stored (False: a duplicate's id)."""
        if not isinstance(skill, Skill):
            raise TypeError(f"SkillBank.add expects a Skill, got {type(skill).__name__}")
        if not skill.task_id:
            raise ValueError("SkillBank.add: skill.task_id is empty")
        key = skill.content_key()
        with self._write() as c:
            row = c.execute("SELECT skill_id FROM skills WHERE task_id=? AND content_key=?",
                            (skill.task_id, key)).fetchone()
            if row is not None:
                self.stats["duplicates"] += 1
                skill.skill_id = int(row[0])
                return skill.skill_id, False
            (n,) = c.execute("SELECT COUNT(*) FROM skills WHERE task_id=?", (skill.task_id,)).fetchone()
            for _ in range(n - self.capacity_per_task + 1):
                self._evict_one(c, skill.task_id)
            cur = c.execute(
                "INSERT INTO skills (task_id, env, success_analysis, mistake_analysis, golden_workflow,"
                " source_episode_ids, created_step, count, mean_reward, metadata, content_key, created_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (skill.task_id, skill.env, skill.success_analysis, skill.mistake_analysis, skill.golden_workflow,
                 json.dumps(list(skill.source_episode_ids)), int(skill.created_step), int(skill.count),
                 float(skill.mean_reward), json.dumps(skill.metadata, ensure_ascii=False, default=str), key,
                 time.time()),
            )
            skill.skill_id = int(cur.lastrowid)
            self.stats["added"] += 1
            return skill.skill_id, True

    def _evict_one(self, c: sqlite3.Connection, task_id: str) -> None:
        row = c.execute("SELECT skill_id FROM skills WHERE task_id=? AND count>0"
                        " ORDER BY mean_reward ASC, skill_id ASC LIMIT 1", (task_id,)).fetchone()
        if row is None:  # all untried: the oldest goes
            row = c.execute("SELECT skill_id FROM skills WHERE task_id=? ORDER BY skill_id ASC LIMIT 1",
                            (task_id,)).fetchone()
        c.execute("DELETE FROM skills WHERE skill_id=?", (row[0],))
        self.stats["evicted"] += 1
        log.debug("skill bank %s: evicted skill %d of task %s", self.path, row[0], task_id)

    def update(self, skill_id: int, reward: float) -> bool:
        """Credits `reward` to a skill: count += 1, incremental mean. False if the skill is gone."""
        return self.update_many([(skill_id, reward)]) == 1

    def update_many(self, credits: Sequence[tuple[int, float]], *, state: dict[str, str] | None = None) -> int:
        """Applies several credits (and optional `set_state` entries) in ONE transaction.

        Returns how many credits hit a stored skill; credits for evicted skills are dropped and counted.
        """
        checked = [(int(sid), _finite_reward(r)) for sid, r in credits]
        applied = 0
        with self._write() as c:
            for sid, r in checked:
                # SQL evaluates the right-hand sides with the old row: mean += (r - mean) / (count + 1).
                cur = c.execute("UPDATE skills SET mean_reward = mean_reward + (? - mean_reward) / (count + 1),"
                                " count = count + 1 WHERE skill_id=?", (r, sid))
                applied += cur.rowcount
            for k, v in (state or {}).items():
                c.execute("INSERT OR REPLACE INTO bank_state (key, value) VALUES (?, ?)", (str(k), str(v)))
        self.stats["updates"] += applied
        self.stats["stale_updates"] += len(checked) - applied
        if applied < len(checked):
            log.debug("skill bank %s: %d credit(s) for evicted/unknown skills dropped", self.path,
                      len(checked) - applied)
        return applied

    def set_state(self, key: str, value: str) -> None:
        """Stores a small string (e.g. the credit tracker's pending uses) inside the bank file."""
        with self._write() as c:
            c.execute("INSERT OR REPLACE INTO bank_state (key, value) VALUES (?, ?)", (str(key), str(value)))

    # ------------------------------------------------------------------ reads
    def get_state(self, key: str) -> str | None:
        with self._read() as c:
            row = c.execute("SELECT value FROM bank_state WHERE key=?", (str(key),)).fetchone()
        return None if row is None else str(row[0])

    def select(self, task_id: str) -> Skill | None:
        """The task's skill to use now by UCB (see `skillsd_jax.skills.ucb`); None for an empty buffer."""
        return select_skill(self.skills(task_id), self.ucb_c)

    def get(self, skill_id: int) -> Skill | None:
        with self._read() as c:
            row = c.execute(f"SELECT {', '.join(_COLUMNS)} FROM skills WHERE skill_id=?", (int(skill_id),)).fetchone()
        return None if row is None else _row_to_skill(row)

    def skills(self, task_id: str) -> list[Skill]:
        """The task's skills, oldest first."""
        with self._read() as c:
            rows = c.execute(f"SELECT {', '.join(_COLUMNS)} FROM skills WHERE task_id=? ORDER BY skill_id",
                             (task_id,)).fetchall()
        return [_row_to_skill(r) for r in rows]

    def all_skills(self) -> list[Skill]:
        """Every skill, by task then age."""
        with self._read() as c:
            rows = c.execute(f"SELECT {', '.join(_COLUMNS)} FROM skills ORDER BY task_id, skill_id").fetchall()
        return [_row_to_skill(r) for r in rows]

    def tasks(self) -> list[str]:
        """Task ids with at least one skill, sorted."""
        with self._read() as c:
            return [r[0] for r in c.execute("SELECT DISTINCT task_id FROM skills ORDER BY task_id")]

    def __len__(self) -> int:
        with self._read() as c:
            return int(c.execute("SELECT COUNT(*) FROM skills").fetchone()[0])

    # ------------------------------------------------------------------ checkpoints and exports
    def snapshot(self, dest_path: str | os.PathLike[str]) -> str:
        """Writes a consistent single-file copy of the bank to `dest_path` (atomic replace); returns it."""
        dest = os.fspath(dest_path)
        os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
        tmp = f"{dest}.tmp-{os.getpid()}-{threading.get_ident()}"
        remove_db_files(tmp)
        with self._read() as c:
            backup_to_single_file(c, tmp)
        os.replace(tmp, dest)
        fsync_dir(dest)
        return dest

    @classmethod
    def restore(cls, snapshot_path: str | os.PathLike[str], path: str | os.PathLike[str],
                **kwargs: Any) -> "SkillBank":
        """Replaces the bank at `path` (which must not be open) with a snapshot and opens it."""
        snap, dest = os.fspath(snapshot_path), os.fspath(path)
        if not os.path.isfile(snap):
            raise SkillBankError(f"skill bank snapshot {snap!r} does not exist")
        check_header(snap)
        try:
            src = sqlite3.connect(f"file:{snap}?mode=ro", uri=True)
        except sqlite3.Error as e:
            raise SkillBankError(f"cannot open skill bank snapshot {snap!r}: {e}") from e
        try:
            check_integrity(src, snap)
            check_schema(src, snap)
            os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
            tmp = f"{dest}.restore-{os.getpid()}"
            remove_db_files(tmp)
            backup_to_single_file(src, tmp)
        except sqlite3.DatabaseError as e:
            raise SkillBankError(f"skill bank snapshot {snap!r} is unreadable: {e}") from e
        finally:
            src.close()
        # The old WAL must go BEFORE the new file lands, or SQLite could replay stale frames onto it.
        remove_db_files(dest)
        os.replace(tmp, dest)
        fsync_dir(dest)
        return cls(dest, **kwargs)

    def export_jsonl(self, path: str | os.PathLike[str]) -> int:
        """One skill per line (Skill.to_json); returns the number written."""
        skills = self.all_skills()
        with open(path, "w", encoding="utf-8") as f:
            for s in skills:
                f.write(s.to_json() + "\n")
        return len(skills)

    def export_markdown(self, path: str | os.PathLike[str]) -> int:
        """A human-readable report grouped by task; returns the number of skills written."""
        skills = self.all_skills()
        lines = [f"# Skill bank `{os.path.basename(self.path)}`", "",
                 f"{len(skills)} skills over {len({s.task_id for s in skills})} tasks.", ""]
        task = None
        for s in skills:
            if s.task_id != task:
                task = s.task_id
                lines += [f"## Task `{task}`", ""]
            lines += [f"### Skill {s.skill_id} (env {s.env or '?'}, step {s.created_step}, used {s.count}x, "
                      f"mean reward {s.mean_reward:.3f})", "",
                      "**Success analysis**", "", s.success_analysis, "",
                      "**Mistakes to avoid**", "", s.mistake_analysis, "",
                      "**Golden workflow**", "", s.golden_workflow, ""]
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(lines))
        return len(skills)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> "SkillBank":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SkillBank({self.path!r}, capacity_per_task={self.capacity_per_task}, ucb_c={self.ucb_c})"

    # ------------------------------------------------------------------ internals
    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._conn is None:
                raise SkillBankError(f"skill bank {self.path!r} is closed")
            yield self._conn

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._read() as c:
            c.execute("BEGIN IMMEDIATE")
            try:
                yield c
            except BaseException:
                c.execute("ROLLBACK")
                raise
            c.execute("COMMIT")


def _finite_reward(r: float) -> float:
    r = float(r)
    if not math.isfinite(r):
        raise ValueError(f"skill reward must be finite, got {r}")
    return r


def _row_to_skill(row: Sequence[Any]) -> Skill:
    d = dict(zip(_COLUMNS, row))
    d["source_episode_ids"] = json.loads(d["source_episode_ids"])
    d["metadata"] = json.loads(d["metadata"])
    return Skill(**d)
