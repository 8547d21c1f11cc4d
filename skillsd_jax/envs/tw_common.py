"""The protocol layer shared by the TextWorld-engine environments (TextWorld games, ALFWorld PDDL problems).

`TextGameEnv` turns a game engine that accepts *admissible commands* into the project's `Env`
protocol: it parses `<action>` from the model's answer, matches it against the admissible commands,
never sends anything else to the engine, and computes the literature's reward (`win_reward` x won,
minus `invalid_action_penalty` per invalid answer). Subclasses only start games and send commands.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import os
import re
import sys
import threading
from pathlib import Path
from typing import Iterator, Sequence

from skillsd_jax.envs.base import Info, TurnCountingEnv
from skillsd_jax.envs.parsing import extract_tag, normalize_action

#: the sentence verl-agent's ALFWorld prompt uses to list the admissible actions
ADMISSIBLE_HEADER = "Your admissible actions of the current situation are"
#: commands the engines accept but the prompt does not show (verl-agent hides "help" too)
HIDDEN_COMMANDS = frozenset({"help"})

# One engine call at a time per process: textworld's text-grammar and logic parsers are module-level
# tatsu parser objects, and fast-downward's translator keeps module state and rewrites sys.argv.
# (Engines hold the GIL anyway; parallel episodes belong in worker processes.)
ENGINE_LOCK = threading.RLock()


class GameEngineError(RuntimeError):
    """The underlying game engine failed; the message names the game file (the episode is an error)."""


@dataclasses.dataclass
class GameStep:
    """What the engine reports after a reset or a command."""

    feedback: str
    admissible: list[str]
    won: bool
    lost: bool = False


@dataclasses.dataclass
class GameTask:
    """Per-episode facts about the game being played."""

    task_id: str
    task: str  # goal text
    task_type: str
    game_file: str
    plan: list[str]  # a known solution from the start state (walkthrough / generator / planner)
    source: str = ""


def default_cache_dir(name: str) -> Path:
    """`$SKILLSD_CACHE/<name>`, else `$XDG_CACHE_HOME/skillsd_jax/<name>`, else `~/.cache/skillsd_jax/<name>`."""
    root = os.environ.get("SKILLSD_CACHE")
    if root:
        return Path(root).expanduser() / name
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "skillsd_jax" / name


@contextlib.contextmanager
def preserved_argv() -> Iterator[None]:
    """Restores `sys.argv` afterwards (fast-downward's translator overwrites it)."""
    saved = list(sys.argv)
    try:
        yield
    finally:
        sys.argv[:] = saved


def format_admissible(actions: Sequence[str]) -> str:
    """The admissible list the way verl-agent shows it: `['a'\\n 'b']`."""
    return "[" + "\n ".join(f"'{a}'" for a in actions) + "]"


def format_plan(plan: Sequence[str]) -> str:
    """A plan as numbered lines, for `info["privileged"]`."""
    if not plan:
        return "No solution plan is known for this game."
    return "A solution plan:\n" + "\n".join(f"{i + 1}. {a}" for i, a in enumerate(plan))


_BANNER_LINE = re.compile(r"^[\s$\\|/_<>]*$")


def clean_feedback(text: str) -> str:
    """Engine text without the ASCII-art banner, the `>` prompt/status line and runs of blank lines."""
    lines = []
    for line in str(text).splitlines():
        if line.lstrip().startswith(">"):
            break  # the z-machine prompt; what follows is the status bar
        if line.strip() and _BANNER_LINE.match(line):
            continue  # ASCII-art title lines are made of $ \ | / _ < > only
        if line.strip() == "-= Welcome to TextWorld, ALFRED! =-":
            continue
        lines.append(line.rstrip())
    out = "\n".join(lines)
    if "*** The End ***" in out:
        out = out[: out.index("*** The End ***") + len("*** The End ***")]
    return re.sub(r"\n{3,}", "\n\n", out).strip()


def match_action(action: str | None, admissible: Sequence[str]) -> str | None:
    """The admissible command `action` names (case/space-insensitive, quotes and a final '.' ignored)."""
    if not action:
        return None
    table = {normalize_action(a): a for a in admissible}
    for candidate in (action, action.strip(" \t\n'\"`.")):
        hit = table.get(normalize_action(candidate))
        if hit is not None:
            return hit
    return None


class TextGameEnv(TurnCountingEnv):
    """Base of environments over a text game engine with admissible commands."""

    action_tag = "action"

    def __init__(
        self,
        *,
        max_turns: int = 50,
        win_reward: float = 10.0,
        invalid_action_penalty: float = 0.1,
        show_admissible: bool = True,
    ):
        super().__init__(invalid_action_penalty=invalid_action_penalty)
        if int(max_turns) < 1:
            raise ValueError(f"max_turns must be >= 1, got {max_turns}")
        self.max_turns = int(max_turns)
        self.win_reward = float(win_reward)
        self.show_admissible = bool(show_admissible)
        self._task: GameTask | None = None
        self._state: GameStep | None = None
        self._observation = ""
        self._turn = 0
        self._done = False
        self._won = False

    # -- engine hooks ---------------------------------------------------------------------------
    @abc.abstractmethod
    def _start(self, seed: int) -> tuple[GameTask, GameStep]:
        """Loads the game `seed` names and resets it."""

    @abc.abstractmethod
    def _send(self, command: str) -> GameStep:
        """Sends one admissible command to the engine."""

    # -- protocol -------------------------------------------------------------------------------
    def reset(self, seed: int) -> tuple[str, Info]:
        self._task, self._state = None, None
        task, state = self._start(int(seed))
        self._task, self._state = task, self._visible(state)
        self._turn, self._done, self._won = 0, bool(state.won or state.lost), bool(state.won)
        self._observation = self._render(clean_feedback(state.feedback))
        return self._observation, self._info(action=None, valid=True)

    def _started(self) -> bool:
        return self._task is not None and self._state is not None

    def _ended_step(self) -> tuple[str, float, bool, Info]:
        # The last observation stays on screen: nothing changes, nothing is rewarded.
        return self._observation, 0.0, True, self._info(action=None, valid=False)

    def _take_turn(self, response_text: str) -> tuple[str, float, bool, Info]:
        raw = extract_tag(response_text, self.action_tag)
        command = match_action(raw, self._state.admissible)
        if command is None:
            reason = (
                f"your answer has no <{self.action_tag}>...</{self.action_tag}>"
                if raw is None
                else f"{raw[:80]!r} is not an admissible action"
            )
            self._done = self._turn >= self.max_turns
            self._observation = self._render(f"Nothing happens: {reason}.")
            return self._observation, -self.invalid_action_penalty, self._done, self._info(action=raw, valid=False)
        try:
            with ENGINE_LOCK:
                state = self._send(command)
        except Exception as exc:  # noqa: BLE001 - re-raised with the game file named
            self._done = True
            raise GameEngineError(
                f"{self.name}: the game engine failed on command {command!r} "
                f"in game file {self._task.game_file}: {type(exc).__name__}: {exc}"
            ) from exc
        self._state = self._visible(state)
        newly_won = state.won and not self._won
        self._won = self._won or state.won
        self._done = bool(self._won or state.lost or self._turn >= self.max_turns)
        reward = self.win_reward if newly_won else 0.0
        self._observation = self._render(clean_feedback(state.feedback))
        return self._observation, reward, self._done, self._info(action=command, valid=True)

    # -- helpers --------------------------------------------------------------------------------
    @staticmethod
    def _visible(state: GameStep) -> GameStep:
        shown = [a for a in state.admissible if a not in HIDDEN_COMMANDS]
        return dataclasses.replace(state, admissible=shown)

    def _render(self, text: str) -> str:
        if not self.show_admissible or self._state is None or self._done:
            return text  # nothing to choose from once the episode is over
        return f"{text}\n{ADMISSIBLE_HEADER}: {format_admissible(self._state.admissible)}."

    def _info(self, *, action: str | None, valid: bool) -> Info:
        assert self._task is not None and self._state is not None
        return {
            "won": self._won,
            "lost": bool(self._state.lost),
            "action_valid": valid,
            "action": action,
            "admissible_actions": list(self._state.admissible),
            "task_id": self._task.task_id,
            "task": self._task.task,
            "task_type": self._task.task_type,
            "privileged": format_plan(self._task.plan),
            "expert_plan": list(self._task.plan),
            "game_file": self._task.game_file,
            "source": self._task.source,
            "turn": self._turn,
            "truncated": self._done and not self._won and not self._state.lost,
        }

    @property
    def game_file(self) -> str | None:
        return None if self._task is None else self._task.game_file
