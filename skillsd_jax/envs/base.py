"""The environment protocol shared by every environment, and the registry behind `make`.

Environments are pure host-side Python: nothing under `skillsd_jax.envs` imports JAX.

Protocol
--------
``reset(seed) -> (observation, info)`` and ``step(response_text) -> (observation, reward, done, info)``.

``step`` receives the model's whole answer for the turn (e.g. ``<think>..</think><action>..</action>``);
the environment extracts its action with :mod:`skillsd_jax.envs.parsing`. An answer that cannot be
parsed, or names an action the environment does not accept, is an *invalid action*: the state does
not change, the reward is ``-invalid_action_penalty`` and ``info["action_valid"]`` is False. No model
output ever raises.

``info`` keys (always present):
  - ``won`` (bool): the task is solved.
  - ``action_valid`` (bool): the last answer parsed to an accepted action (True after reset).
  - ``task_id`` (str): stable id of the task (level / game / question); the skill bank keys on it.
Optional keys:
  - ``action`` (str | None): the parsed action of the last step.
  - ``admissible_actions`` (list[str]): actions accepted in the current state, shown in the prompt.
  - ``privileged`` (str): ground-truth information for OPD/OPSD teachers (solver plan, gold answer).
  - ``task`` (str): the task description when it differs per task (goal text, question).
"""

from __future__ import annotations

import abc
from typing import Any, Callable

Info = dict[str, Any]


class Env(abc.ABC):
    """Base class of every multi-turn text environment."""

    #: registry name, e.g. "sokoban"
    name: str = "env"
    #: episode budget in turns (model answers); the rollout stops the episode after this many turns
    max_turns: int = 1
    #: tag the model must wrap its action in: "action", "answer"/"search", "code"
    action_tag: str = "action"
    #: whole answers a policy that reads no observation could give (`envs.blind` plays them as a
    #: reference); empty where the accepted actions depend on what the environment shows
    blind_answers: tuple[str, ...] = ()

    def __init__(self, invalid_action_penalty: float = 0.1):
        self.invalid_action_penalty = float(invalid_action_penalty)

    @abc.abstractmethod
    def instructions(self) -> str:
        """Task-independent instructions: the rules of the environment and the answer format."""

    @abc.abstractmethod
    def reset(self, seed: int) -> tuple[str, Info]:
        """Starts the task that `seed` names; returns the first observation and info."""

    @abc.abstractmethod
    def step(self, response_text: str) -> tuple[str, float, bool, Info]:
        """Applies the model's answer; returns observation, reward, done, info."""

    def close(self) -> None:
        """Releases processes, files or connections the environment holds."""


class TurnCountingEnv(Env):
    """An `Env` whose `step` opens the same way for every turn-limited game.

    `step` refuses to run before `reset`, answers any step after the end without changing anything
    (no reward, action invalid), counts the turn in `_turn`, and hands the answer to `_take_turn`.
    Subclasses set `_turn = 0` and `_done = False` in `reset` and `_done = True` when the episode ends;
    the default `_ended_step` calls their `_info(action_valid=False, action=None)`.
    """

    #: observation returned for a step after the episode ended
    ended_observation = "The episode is over."

    _turn: int = 0
    _done: bool = False

    def step(self, response_text: str) -> tuple[str, float, bool, Info]:
        if not self._started():
            raise RuntimeError(f"{self.name}: call reset(seed) before step()")
        if self._done:
            return self._ended_step()
        self._turn += 1
        return self._take_turn(response_text)

    @abc.abstractmethod
    def _started(self) -> bool:
        """Whether `reset` has loaded a task."""

    @abc.abstractmethod
    def _take_turn(self, response_text: str) -> tuple[str, float, bool, Info]:
        """One turn of a live episode (`_turn` already counts it)."""

    def _ended_step(self) -> tuple[str, float, bool, Info]:
        return self.ended_observation, 0.0, True, self._info(action_valid=False, action=None)


_REGISTRY: dict[str, Callable[..., Env]] = {}


def register(name: str, factory: Callable[..., Env]) -> None:
    """Makes `factory` reachable as `make(name, **kwargs)`."""
    _REGISTRY[name] = factory


def make(name: str, **kwargs: Any) -> Env:
    """Builds the environment registered under `name`."""
    _ensure_builtin_registered()
    if name not in _REGISTRY:
        raise ValueError(f"unknown environment {name!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[name](**kwargs)


def registered() -> list[str]:
    _ensure_builtin_registered()
    return sorted(_REGISTRY)


def _ensure_builtin_registered() -> None:
    # Importing the package registers the built-in environments (each module calls `register`).
    import skillsd_jax.envs  # noqa: F401
