"""`SokobanEnv`: the text Sokoban environment (gym-sokoban rules, RAGEN / verl-agent levels).

Seeds and splits. ``reset(seed)`` plays the level of *level seed* ``SPLIT_OFFSETS[split] + index``,
where ``index = seed`` (``0 <= seed < 2**31``) or, when the split has a fixed number of levels
(`num_levels`, e.g. the skill_sd preset's 96 train / 64 test), ``index = seed % num_levels``.
The split offsets are multiples of 2**31, so the level seeds of different splits never overlap.

Invalid answers (no ``<action>`` tag, or not up/down/left/right) leave the room unchanged, pay
``-invalid_action_penalty`` instead of the step reward and count as a step toward `max_steps`
(so a model that never answers validly still ends its episode, as with max turns).

Generated levels are only accepted if the solver finds a plan of at most `max_steps` moves (the
next sub-seed is tried otherwise); with the literature settings this almost never triggers, and it
guarantees every level can be won within the episode. The optimal plan is the privileged info.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
from typing import Any, Mapping

from skillsd_jax.envs.base import Env, Info
from skillsd_jax.envs.sokoban import dynamics
from skillsd_jax.envs.sokoban.actions import parse_action
from skillsd_jax.envs.sokoban.generator import GeneratorConfig, generate_level
from skillsd_jax.envs.sokoban.room import (
    ACTIONS,
    LEGEND,
    Board,
    State,
    boxes_on_target,
    is_solved,
    parse_xsb,
    render_grid,
    render_positions,
    to_xsb,
)
from skillsd_jax.envs.sokoban.solver import solve_state

log = logging.getLogger(__name__)

SEED_SPAN = 2**31
SPLIT_OFFSETS: dict[str, int] = {"train": 0, "test": SEED_SPAN, "val": 2 * SEED_SPAN}

_INSTRUCTIONS = """You are solving a Sokoban puzzle. The room is shown as a grid, one row per line:
# wall, _ floor, O target, X box, √ box on target, P player, S player on target.
Goal: push every box onto a target.
Rules: each turn you move the player one cell up, down, left or right. Walking into a box pushes it one cell
in the same direction, but only if the cell behind the box is floor or an empty target; otherwise nothing
moves. You cannot pull boxes, and you cannot walk through walls or boxes. A box pushed into a corner or
against a wall without targets may be stuck forever, so plan ahead.
Up decreases the row, down increases it; left decreases the column, right increases it.
Rewards: -0.1 per step, +1 for pushing a box onto a target, -1 for pushing one off, +10 when all boxes are on targets.
You have at most {max_steps} steps.
Answer every turn with your reasoning and exactly one action, in this format:
<think>your reasoning</think><action>up|down|left|right</action>"""


# grid: verl-agent's text (rows of symbols, the legend every turn). cells: one symbol per token (cells
# separated by spaces) and the positions as (row, column) pairs, the legend only in the instructions;
# for small models whose tokenizer merges runs of cells ("#___##") and hides where things are.
OBSERVATION_STYLES = ("grid", "cells")


class SokobanEnv(Env):
    """Multi-turn text Sokoban; see the module docstring for seeds, splits and invalid actions."""

    name = "sokoban"
    action_tag = "action"
    blind_answers = tuple(f"<action>{move}</action>" for move in ACTIONS)

    def __init__(
        self,
        dim_room: tuple[int, int] = (6, 6),
        num_boxes: int = 1,
        max_steps: int = 15,
        search_depth: int = 30,
        invalid_action_penalty: float = 0.1,
        split: str = "train",
        num_levels: int | Mapping[str, int] | None = None,
        p_change_directions: float = 0.35,
        num_gen_steps: int | None = None,
        solver_max_states: int = 200_000,
        rewards: dynamics.Rewards = dynamics.Rewards(),
        distance_shaping: float = 0.0,
        observation_style: str = "grid",
    ):
        super().__init__(invalid_action_penalty)
        if observation_style not in OBSERVATION_STYLES:
            raise ValueError(f"Sokoban observation_style must be one of {OBSERVATION_STYLES}, got {observation_style!r}")
        self.observation_style = observation_style
        if split not in SPLIT_OFFSETS:
            raise ValueError(f"Sokoban split must be one of {sorted(SPLIT_OFFSETS)}, got {split!r}")
        if int(max_steps) < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        if isinstance(num_levels, Mapping):
            num_levels = num_levels.get(split)
        if num_levels is not None and not 1 <= int(num_levels) <= SEED_SPAN:
            raise ValueError(f"num_levels must be in [1, 2**31], got {num_levels}")
        self.config = GeneratorConfig(
            dim_room=(int(dim_room[0]), int(dim_room[1])),
            num_boxes=int(num_boxes),
            search_depth=int(search_depth),
            p_change_directions=float(p_change_directions),
            num_gen_steps=num_gen_steps,
        )
        self.max_steps = self.max_turns = int(max_steps)
        self.split = split
        self.num_levels = None if num_levels is None else int(num_levels)
        self.solver_max_states = int(solver_max_states)
        # Potential-based box-distance shaping (see dynamics); 0 keeps gym-sokoban's rewards exactly.
        self.rewards = dataclasses.replace(rewards, distance_shaping=float(distance_shaping)) \
            if distance_shaping else rewards
        h, w = self.config.dim_room
        depth = self.config.search_depth
        self.tag = f"{h}x{w}b{self.config.num_boxes}" + ("" if depth == 30 else f"d{depth}")
        self._fixed: tuple[Board, State, str] | None = None  # set by from_text
        self._fixed_plan: tuple[tuple[str, ...] | None] | None = None  # solved once, at the first reset
        self._reset_episode_fields()

    @classmethod
    def from_text(cls, xsb: str, max_steps: int = 100, **kwargs: Any) -> "SokobanEnv":
        """An environment that always plays the given XSB level (validated; ValueError if malformed).

        `reset(seed)` ignores the seed. If the solver finds no plan within `solver_max_states`,
        ``info["privileged"]`` is "" and ``info["optimal_length"]`` None.
        """
        board, state = parse_xsb(xsb)
        env = cls(max_steps=max_steps, **kwargs)
        digest = hashlib.sha1(to_xsb(board, state).encode()).hexdigest()[:12]
        env._fixed = (board, state, f"sokoban/xsb/{digest}")
        return env

    def _reset_episode_fields(self) -> None:
        self.board: Board | None = None
        self.state: State | None = None
        self.task_id = ""
        self.num_steps = 0
        self.done = False
        self.won = False

    # ---- protocol -------------------------------------------------------------------------------
    def instructions(self) -> str:
        return _INSTRUCTIONS.format(max_steps=self.max_steps)

    def level_seed(self, seed: int) -> tuple[int, int]:
        """(level index within the split, level seed) that `seed` names."""
        seed = int(seed)
        if self.num_levels is not None:
            index = seed % self.num_levels
        elif 0 <= seed < SEED_SPAN:
            index = seed
        else:
            raise ValueError(f"Sokoban seed must be in [0, 2**31), got {seed}")
        return index, SPLIT_OFFSETS[self.split] + index

    def reset(self, seed: int) -> tuple[str, Info]:
        self._reset_episode_fields()
        if self._fixed is not None:
            board, state, task_id = self._fixed
            if self._fixed_plan is None:
                found = solve_state(board, state, max_states=self.solver_max_states)
                self._fixed_plan = (None if found is None else tuple(found),)
            plan = self._fixed_plan[0]  # None: unsolvable, or not solved within solver_max_states
            level_seed = None
        else:
            index, level_seed = self.level_seed(seed)
            board, state, plan = _build_level(self.config, level_seed, self.max_steps, self.solver_max_states)
            task_id = f"sokoban/{self.tag}/{self.split}/{index}"
        self.board, self.state, self.task_id = board, state, task_id
        self.won = self.done = is_solved(board, state)
        info = self._info(action_valid=True)
        info.update(
            xsb=to_xsb(board, state),
            privileged=", ".join(plan) if plan is not None else "",
            optimal_length=len(plan) if plan is not None else None,
            optimal_plan=list(plan) if plan is not None else None,
            level_seed=level_seed,
        )
        return self.observation(), info

    def step(self, response_text: str) -> tuple[str, float, bool, Info]:
        if self.board is None or self.state is None:
            raise RuntimeError("SokobanEnv.step() called before reset()")
        if self.done:
            log.warning("SokobanEnv.step() after the episode ended (%s); ignored", self.task_id)
            return self.observation(), 0.0, True, self._info(action_valid=False, action=None)
        self.num_steps += 1
        action = parse_action(response_text)
        if action is None:
            reward = -self.invalid_action_penalty
        else:
            tr = dynamics.step(self.board, self.state, action, self.rewards)
            self.state, reward, self.won = tr.state, tr.reward, tr.won
        self.done = self.won or self.num_steps >= self.max_steps
        return self.observation(), float(reward), self.done, self._info(action_valid=action is not None, action=action)

    # ---- views ----------------------------------------------------------------------------------
    def observation(self) -> str:
        assert self.board is not None and self.state is not None
        on, n = boxes_on_target(self.board, self.state), len(self.board.targets)
        if self.observation_style == "cells":
            return (f"{render_grid(self.board, self.state, ' ')}\n{render_positions(self.board, self.state)}\n"
                    f"Boxes on targets: {on}/{n}.")
        return f"{render_grid(self.board, self.state)}\nLegend: {LEGEND}.\nBoxes on targets: {on}/{n}."

    def to_text(self) -> str:
        """The current room in XSB notation."""
        if self.board is None or self.state is None:
            raise RuntimeError("SokobanEnv.to_text() called before reset()")
        return to_xsb(self.board, self.state)

    def _info(self, action_valid: bool, **extra: Any) -> Info:
        assert self.board is not None and self.state is not None
        info: Info = {
            "won": self.won,
            "action_valid": action_valid,
            "task_id": self.task_id,
            "boxes_on_target": boxes_on_target(self.board, self.state),
            "num_boxes": len(self.board.targets),
            "num_steps": self.num_steps,
        }
        info.update(extra)
        return info


@functools.lru_cache(maxsize=4096)
def _build_level(
    config: GeneratorConfig, level_seed: int, max_steps: int, solver_max_states: int
) -> tuple[Board, State, tuple[str, ...]]:
    """Generated level and its optimal plan; cached because a GRPO group replays one seed G times."""
    plans: dict[State, list[str]] = {}

    def winnable(board: Board, state: State) -> bool:
        plan = solve_state(board, state, max_states=solver_max_states)
        if plan is None or len(plan) > max_steps:
            return False
        plans[state] = plan
        return True

    level = generate_level(level_seed, config, accept=winnable)
    if level.attempt > 0:
        log.debug("Sokoban level seed %d: sub-seed %d", level_seed, level.attempt)
    return level.board, level.state, tuple(plans[level.state])
