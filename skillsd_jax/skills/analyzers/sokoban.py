"""Rule-based Sokoban analysis by replaying each episode from its initial level.

Needs `initial_info["xsb"]` on the episodes (the level as the student first saw it) and the Sokoban
environment's contract: ``SokobanEnv.from_text(xsb, max_steps=...)`` then ``env.reset(0)``,
``env.to_text()`` (XSB of the current state) and ``env.step("<action>up</action>")``; imported lazily
from `skillsd_jax.envs.sokoban` unless injected (tests, other variants).

Two analyzers, differing in what they may know:

- `SokobanAnalyzer` (the default, *faithful*): only what a reader of the student's episodes could
  write. Per group: how many attempts solved the level; pushes that left a box stuck by rules a
  reader applies by eye (a box off-target pushed into a corner, or against a wall whose whole
  stretch has no target); invalid answers and moves that changed nothing; a golden workflow that
  is the shortest successful attempt with its no-op moves removed, else the best attempt's moves up
  to its last progress (a box onto a target) plus general advice. Without a win, the workflow is
  never a complete solution (a replayed prefix that solved the level would have been a win).
- `SokobanOracleAnalyzer` (privileged, `skills.backend=oracle`): the exact solver judges deadlocks
  and writes the optimal plan when no attempt won. That is the level's answer key, the same
  information class as the OPD teacher's, so results using it are labelled as oracle results.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Sequence

from skillsd_jax.agent.episode import Episode
from skillsd_jax.skills.analyzers.common import Analysis, is_invalid, numbered, step_lines

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Replay:
    """What replaying one episode showed."""

    moves: list[str]  # valid actions that changed the state, in order
    invalid: int = 0
    noops: int = 0  # valid actions that changed nothing (walked into a wall or a stuck box)
    pushes: int = 0
    progress_moves: list[str] = dataclasses.field(default_factory=list)  # moves up to the last box onto a target
    deadlock: tuple[int, str, str] | None = None  # (turn index, action, XSB before the push)
    boxes_on_target: int = 0
    solved: bool = False


ADVICE = ("Walk to the side of a box opposite the target and push it toward the target.",
          "Never push a box into a corner or along a wall that has no target: it cannot be pulled back.",
          "If a move changes nothing, try a different direction instead of repeating it.")


class SokobanAnalyzer:
    """Faithful analysis: stuck pushes by visible rules, invalid actions, the students' best workflow."""

    name = "sokoban"
    privileged = False

    def __init__(self, *, env_from_text: Callable[..., Any] | None = None, max_deadlocks_listed: int = 2):
        self._env_from_text = env_from_text
        self.max_deadlocks_listed = max_deadlocks_listed

    def _load_env_api(self) -> None:
        if self._env_from_text is None:
            from skillsd_jax.envs.sokoban import SokobanEnv  # lazy: the skills package must not need envs

            self._env_from_text = SokobanEnv.from_text

    def analyze(self, episodes: Sequence[Episode]) -> Analysis:
        if not episodes:
            raise ValueError("SokobanAnalyzer.analyze needs at least one episode")
        xsb = episodes[0].initial_info.get("xsb")
        if not isinstance(xsb, str) or not xsb.strip():
            raise ValueError(f"sokoban episode {episodes[0].episode_id} has no initial_info['xsb'] to replay")
        self._load_env_api()
        dead_cache: dict[str, bool | None] = {}
        replays = [self._replay(xsb, e, dead_cache) for e in episodes]
        n, n_boxes = len(episodes), _count_boxes(xsb)
        optimal = episodes[0].initial_info.get("optimal_length")
        meta: dict[str, Any] = {"analyzer": self.name, "privileged": self.privileged, "num_episodes": n,
                                "num_won": sum(e.won for e in episodes)}

        wins = [(len(r.moves), i) for i, (e, r) in enumerate(zip(episodes, replays)) if e.won and r.solved]
        if wins:
            best = replays[min(wins)[1]]
            # The optimal length comes from the solver: only the oracle may quote it.
            success = (f"{len(wins)}/{n} attempts solved the level. The shortest solution used {len(best.moves)} "
                       f"moves" + (f" (optimal: {optimal})." if optimal is not None and self.privileged else "."))
            workflow = f"Solve it in {len(best.moves)} moves:\n" + step_lines(best.moves)
            meta["workflow_source"] = f"episode:{episodes[min(wins)[1]].episode_id}"
        else:
            top = max(replays, key=lambda r: (r.boxes_on_target, -len(r.moves)))
            success = (f"No attempt solved the level ({n} tries). The best attempt ended with "
                       f"{top.boxes_on_target}/{n_boxes} boxes on targets.")
            workflow = self._fallback_workflow(xsb, replays, meta)
        if sum(e.won for e in episodes) != len(wins):
            meta["replay_mismatch"] = sum(e.won for e in episodes) - len(wins)
            log.warning("sokoban analyzer: %d won episode(s) of %s did not replay to a solved level",
                        meta["replay_mismatch"], episodes[0].task_id)

        mistakes = []
        deadlocked = [(r.deadlock, e) for r, e in zip(replays, episodes) if r.deadlock is not None]
        meta["deadlocks"] = len(deadlocked)
        if deadlocked:
            mistakes.append(f"{len(deadlocked)}/{n} attempts {self._deadlock_phrase}. Positions below in XSB "
                            "notation (# wall, $ box, . target, * box on target, @ player, + player on target).")
            seen: set[tuple[str, str]] = set()
            for (turn, action, before), e in sorted(deadlocked, key=lambda x: x[0][0]):
                if (before, action) in seen or len(seen) >= self.max_deadlocks_listed:
                    continue
                seen.add((before, action))
                mistakes.append(f"Do not push {action} in this position (attempt {e.episode_id}, move {turn + 1}):\n"
                                f"{before.rstrip()}")
        n_invalid = sum(r.invalid for r in replays)
        meta["invalid_actions"] = n_invalid
        if n_invalid:
            mistakes.append(f"{n_invalid} invalid answers: reply with exactly one of <action>up</action>, "
                            "<action>down</action>, <action>left</action>, <action>right</action>.")
        n_noop = sum(r.noops for r in replays)
        if n_noop:
            mistakes.append(f"{n_noop} moves walked into a wall or an immovable box and changed nothing.")
        if not mistakes:
            mistakes.append("No deadlocking pushes, invalid answers or wasted moves were observed.")
        return Analysis(success, "\n".join(mistakes), workflow, meta)

    _deadlock_phrase = ("pushed a box where it can never reach a target (into a corner, or against a wall "
                        "with no target along it)")

    def _fallback_workflow(self, xsb: str, replays: Sequence[Replay], meta: dict[str, Any]) -> str:
        """No win: the best attempt's moves up to its last box-onto-target push, then general advice."""
        best = max(replays, key=lambda r: (bool(r.progress_moves), r.boxes_on_target, -len(r.progress_moves)))
        steps: list[str] = []
        if best.progress_moves:
            meta["workflow_source"] = "best_attempt_prefix"
            steps.append("Start as the best attempt did (it put a box on a target): "
                         + ", ".join(best.progress_moves) + ".")
        else:
            meta["workflow_source"] = "advice"
        return numbered(steps + list(ADVICE))

    def _stuck(self, before: str, after: str, cache: dict[str, bool | None]) -> bool:
        """A push left a box off-target in a corner or against a target-less wall stretch."""
        return stuck_box_after_push(before, after)

    def _replay(self, xsb: str, ep: Episode, dead_cache: dict[str, bool | None]) -> Replay:
        assert self._env_from_text is not None
        env = self._env_from_text(xsb, max_steps=len(ep.turns) + 1)
        if hasattr(env, "reset"):  # the Env protocol: play starts with reset (a from_text env ignores the seed)
            env.reset(0)
        rep = Replay(moves=[], progress_moves=[])
        state = env.to_text()
        for i, t in enumerate(ep.turns):
            if is_invalid(t):
                rep.invalid += 1
                continue
            action = str(t.action).strip().lower()
            _, _, done, info = env.step(f"<action>{action}</action>")
            after = env.to_text()
            if not info.get("action_valid", True):
                rep.invalid += 1  # recorded as valid, but the replay rejects it
            elif after == state:
                rep.noops += 1
            else:
                rep.moves.append(action)
                if _boxes(after) != _boxes(state):
                    rep.pushes += 1
                    if rep.deadlock is None and self._stuck(state, after, dead_cache):
                        rep.deadlock = (i, action, state)
                    if after.count("*") > state.count("*"):
                        rep.progress_moves = list(rep.moves)
            state = after
            if done:
                break
        rep.boxes_on_target = state.count("*")
        rep.solved = "$" not in state  # every box is on a goal
        return rep

    def _dead(self, xsb: str, cache: dict[str, bool | None]) -> bool | None:
        """`is_dead`, cached per state; None when the check itself fails (treated as not dead)."""
        if xsb not in cache:
            assert self._is_dead is not None
            try:
                cache[xsb] = bool(self._is_dead(xsb))
            except Exception as e:  # e.g. the solver's state budget: unknown, so no deadlock is claimed
                log.debug("sokoban analyzer: is_dead failed: %s: %s", type(e).__name__, e)
                cache[xsb] = None
        return cache[xsb]


class SokobanOracleAnalyzer(SokobanAnalyzer):
    """Privileged analysis: exact deadlocks by the solver and the solver's optimal plan as workflow.

    The plan is the level's answer key (OPD-teacher information); use it as a labelled upper bound.
    """

    name = "sokoban_oracle"
    privileged = True
    _deadlock_phrase = "made a push after which the level could no longer be solved (a deadlock: no later move can fix it)"

    def __init__(self, *, env_from_text: Callable[..., Any] | None = None,
                 solve_fn: Callable[[str], list[str] | None] | None = None,
                 is_dead_fn: Callable[[str], bool] | None = None, max_deadlocks_listed: int = 2):
        super().__init__(env_from_text=env_from_text, max_deadlocks_listed=max_deadlocks_listed)
        self._solve = solve_fn
        self._is_dead = is_dead_fn

    def _load_env_api(self) -> None:
        super()._load_env_api()
        if self._solve is None or self._is_dead is None:
            from skillsd_jax.envs.sokoban.solver import is_dead, solve

            self._solve = self._solve or solve
            self._is_dead = self._is_dead or is_dead

    def _fallback_workflow(self, xsb: str, replays: Sequence[Replay], meta: dict[str, Any]) -> str:
        assert self._solve is not None
        try:
            plan = self._solve(xsb)
        except Exception as e:  # a solver budget or bug: the skill just has no plan
            log.warning("sokoban oracle analyzer: solver failed: %s: %s", type(e).__name__, e)
            plan = None
        meta["workflow_source"] = "solver"
        if plan is None:
            return ("1. No plan was found within the solver's budget.\n2. Push boxes only where they stay pushable: "
                    "never into a corner or along a wall that has no target.")
        if not plan:
            return "1. The level starts solved; no move is needed."
        return f"Optimal plan ({len(plan)} moves):\n" + step_lines(plan)

    def _stuck(self, before: str, after: str, cache: dict[str, bool | None]) -> bool:
        return self._dead(before, cache) is False and bool(self._dead(after, cache))


def _boxes(xsb: str) -> frozenset[tuple[int, int]]:
    return frozenset((r, c) for r, line in enumerate(xsb.splitlines()) for c, ch in enumerate(line) if ch in "$*")


def _count_boxes(xsb: str) -> int:
    return sum(line.count("$") + line.count("*") for line in xsb.splitlines())


def _grid(xsb: str) -> tuple[set[tuple[int, int]], set[tuple[int, int]]]:
    """(walls, targets) of an XSB room; cells outside the text count as walls."""
    walls, targets = set(), set()
    for r, line in enumerate(xsb.splitlines()):
        for c, ch in enumerate(line):
            if ch == "#":
                walls.add((r, c))
            elif ch in ".*+":
                targets.add((r, c))
    return walls, targets


def stuck_box_after_push(before: str, after: str) -> bool:
    """True when the box a push moved now sits off-target where it can never be pushed onto one.

    Two rules anyone can check by eye: a corner (walls on two perpendicular sides), or a wall along
    one side whose whole stretch (until a wall ends the corridor either way) holds no target.
    """
    moved = _boxes(after) - _boxes(before)
    if not moved:
        return False
    walls, targets = _grid(after)
    rows = after.splitlines()
    wall = lambda r, c: (r, c) in walls or r < 0 or r >= len(rows) or c < 0 or c >= len(rows[r])
    for (r, c) in moved:
        if (r, c) in targets:
            continue
        up, down, left, right = wall(r - 1, c), wall(r + 1, c), wall(r, c - 1), wall(r, c + 1)
        if (up or down) and (left or right):
            return True
        for side, (dr, dc) in (((up, (-1, 0)), (down, (1, 0))) if (up or down) else ()) + \
                (((left, (0, -1)), (right, (0, 1))) if (left or right) else ()):
            if side and _wall_stretch_without_target(r, c, dr, dc, wall, targets):
                return True
    return False


def _wall_stretch_without_target(r: int, c: int, dr: int, dc: int, wall, targets) -> bool:
    """From (r, c), with a wall at (r+dr, c+dc): walk along the wall both ways while the wall runs on
    and the cell is open; True if that whole stretch has no target and is closed at both ends."""
    along = ((0, 1), (0, -1)) if dr else ((1, 0), (-1, 0))
    for ar, ac in along:
        rr, cc = r, c
        while True:
            if (rr, cc) in targets:
                return False
            if not wall(rr + dr, cc + dc):
                return False  # the wall has a gap: the box could leave it there
            nr, nc = rr + ar, cc + ac
            if wall(nr, nc):
                break
            rr, cc = nr, nc
    return True
