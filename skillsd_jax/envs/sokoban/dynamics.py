"""Sokoban push rules and rewards, as in gym-sokoban's push actions.

An action moves the player one cell. If a box is in the way it is pushed when the cell behind it
is free (floor or empty target); otherwise nothing moves, which is still a (valid) step that pays
the step penalty. Reward per step: -0.1, +1 when a box lands on a target, -1 when a box leaves
one, +10 on the step that puts the last box on its target.

Optional potential-based shaping (`Rewards.distance_shaping = k > 0`, off by default): each step
also pays `k * (phi(after) - phi(before))` with `phi = -(sum over boxes of the Manhattan distance to
the nearest target)`. Over an episode it adds `k * (phi(end) - phi(start))`, so failed episodes that
brought boxes closer return more than those that did not (GRPO then has signal in all-fail groups),
and, being a potential difference, it does not change which policies are optimal.
"""

from __future__ import annotations

import dataclasses

from skillsd_jax.envs.sokoban.room import Board, State, boxes_on_target, shift


@dataclasses.dataclass(frozen=True)
class Rewards:
    """gym-sokoban's reward constants."""

    step: float = -0.1
    box_on_target: float = 1.0
    box_off_target: float = -1.0
    finished: float = 10.0
    distance_shaping: float = 0.0  # k of the potential-based box-distance shaping (0: gym-sokoban exactly)


@dataclasses.dataclass(frozen=True)
class Transition:
    state: State
    reward: float
    moved_player: bool
    moved_box: bool
    boxes_on_target: int
    won: bool


def move(board: Board, state: State, action: str) -> tuple[State, bool, bool]:
    """Applies one push action; returns (new state, moved_player, moved_box)."""
    nxt = shift(state.player, action)
    if board.blocked(nxt):
        return state, False, False
    if nxt in state.boxes:
        beyond = shift(nxt, action)
        if board.blocked(beyond) or beyond in state.boxes:
            return state, False, False
        boxes = (state.boxes - {nxt}) | {beyond}
        return State(nxt, frozenset(boxes)), True, True
    return State(nxt, state.boxes), True, False


def step(board: Board, state: State, action: str, rewards: Rewards = Rewards()) -> Transition:
    """One environment step: push rules plus gym-sokoban's reward."""
    before = boxes_on_target(board, state)
    new_state, moved_player, moved_box = move(board, state, action)
    after = boxes_on_target(board, new_state)
    reward = rewards.step
    # A push changes the count by at most one, as in gym-sokoban's comparison of counts.
    if after > before:
        reward += rewards.box_on_target
    elif after < before:
        reward += rewards.box_off_target
    won = after == len(board.targets)
    if won:
        reward += rewards.finished
    if rewards.distance_shaping and moved_box:
        reward += rewards.distance_shaping * (box_distance(board, state) - box_distance(board, new_state))
    return Transition(new_state, reward, moved_player, moved_box, after, won)


def box_distance(board: Board, state: State) -> int:
    """Sum over boxes of the Manhattan distance to the nearest target (0 when solved)."""
    return sum(min(abs(r - tr) + abs(c - tc) for tr, tc in board.targets) for r, c in state.boxes)
