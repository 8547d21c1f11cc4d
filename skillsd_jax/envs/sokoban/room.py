"""Sokoban rooms: the static board, the movable state, and their text forms.

Two text forms:
  - the *observation grid* shown to the model (gym-sokoban / RAGEN symbols):
    ``#`` wall, ``_`` floor, ``O`` target, ``X`` box, ``√`` box on target, ``P`` player, ``S`` player on target;
  - standard *XSB* level notation, for classic level collections and for logging:
    ``#`` wall, `` `` floor, ``.`` goal, ``$`` box, ``*`` box on goal, ``@`` player, ``+`` player on goal.

Coordinates are ``(row, col)``; "up" decreases the row. Cells outside the grid behave as walls, so an
XSB level may be closed either by walls or by the grid edge.
"""

from __future__ import annotations

import dataclasses

Pos = tuple[int, int]

ACTIONS: tuple[str, ...] = ("up", "down", "left", "right")
DIRECTIONS: dict[str, Pos] = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}

# Observation grid symbols.
WALL, FLOOR, TARGET, BOX, BOX_ON_TARGET, PLAYER, PLAYER_ON_TARGET = "#", "_", "O", "X", "√", "P", "S"
LEGEND = (
    f"{WALL} wall, {FLOOR} floor, {TARGET} target, {BOX} box, {BOX_ON_TARGET} box on target, "
    f"{PLAYER} player, {PLAYER_ON_TARGET} player on target"
)

# XSB symbols; "-" and "_" are common alternative floor marks in level files.
_XSB_WALL, _XSB_FLOOR, _XSB_GOAL, _XSB_BOX, _XSB_BOX_GOAL, _XSB_PLAYER, _XSB_PLAYER_GOAL = "# .$*@+"
_XSB_FLOOR_ALIASES = frozenset(" -_")


@dataclasses.dataclass(frozen=True)
class Board:
    """The static part of a room: grid size, walls and targets."""

    height: int
    width: int
    walls: frozenset[Pos]
    targets: frozenset[Pos]
    # Non-wall cells the player can never reach (the blank margin of XSB levels): drawn as walls
    # in the observation, as blanks in XSB.
    exterior: frozenset[Pos] = frozenset()

    def blocked(self, pos: Pos) -> bool:
        """True for walls and for cells outside the grid."""
        r, c = pos
        return not (0 <= r < self.height and 0 <= c < self.width) or pos in self.walls


@dataclasses.dataclass(frozen=True)
class State:
    """The movable part of a room."""

    player: Pos
    boxes: frozenset[Pos]


def shift(pos: Pos, action: str) -> Pos:
    dr, dc = DIRECTIONS[action]
    return (pos[0] + dr, pos[1] + dc)


def boxes_on_target(board: Board, state: State) -> int:
    return len(state.boxes & board.targets)


def is_solved(board: Board, state: State) -> bool:
    return state.boxes == board.targets


def _draw(board: Board, state: State, symbols: str, exterior: str) -> list[str]:
    """One string per row; `symbols` lists wall, floor, target, box, box on target, player and player
    on target in that order; cells outside the walls get `exterior`."""
    wall, floor, target, box, box_on_target, player, player_on_target = symbols
    rows = []
    for r in range(board.height):
        row = []
        for c in range(board.width):
            p = (r, c)
            on_target = p in board.targets
            if p in board.walls:
                row.append(wall)
            elif p in board.exterior:
                row.append(exterior)
            elif p == state.player:
                row.append(player_on_target if on_target else player)
            elif p in state.boxes:
                row.append(box_on_target if on_target else box)
            else:
                row.append(target if on_target else floor)
        rows.append("".join(row))
    return rows


def render_grid(board: Board, state: State, separator: str = "") -> str:
    """The observation grid, one row per line, cells joined by `separator`."""
    symbols = WALL + FLOOR + TARGET + BOX + BOX_ON_TARGET + PLAYER + PLAYER_ON_TARGET
    return "\n".join(separator.join(row) for row in _draw(board, state, symbols, exterior=WALL))


def render_positions(board: Board, state: State) -> str:
    """Where the player, boxes and targets are, as (row, column) pairs counted from 0 at the top left."""
    def cells(ps):
        return " ".join(f"({r},{c})" for r, c in sorted(ps))

    return f"Player {cells([state.player])}. Boxes {cells(state.boxes)}. Targets {cells(board.targets)}."


def to_xsb(board: Board, state: State) -> str:
    """XSB text of the room, one row per line, trailing blanks removed."""
    symbols = (_XSB_WALL + _XSB_FLOOR + _XSB_GOAL + _XSB_BOX + _XSB_BOX_GOAL + _XSB_PLAYER + _XSB_PLAYER_GOAL)
    return "\n".join(row.rstrip() for row in _draw(board, state, symbols, exterior=_XSB_FLOOR))


def parse_xsb(text: str) -> tuple[Board, State]:
    """Parses and validates one XSB level; raises ValueError naming the problem.

    Lines starting with ``;`` (titles, comments) and surrounding blank lines are ignored.
    Requires exactly one player, as many boxes as goals (at least one), and every box and goal
    inside the player's region (the cells reachable from the player when boxes are ignored).
    """
    if not isinstance(text, str):
        raise ValueError(f"XSB level must be a str, got {type(text).__name__}")
    lines = [ln.rstrip("\r\n").rstrip() for ln in text.split("\n")]
    lines = [ln for ln in lines if not ln.lstrip().startswith(";")]
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise ValueError("XSB level is empty")
    height, width = len(lines), max(len(ln) for ln in lines)
    walls: set[Pos] = set()
    targets: set[Pos] = set()
    boxes: set[Pos] = set()
    players: list[Pos] = []
    for r, line in enumerate(lines):
        for c, ch in enumerate(line):
            p = (r, c)
            if ch == _XSB_WALL:
                walls.add(p)
            elif ch in _XSB_FLOOR_ALIASES:
                pass
            elif ch == _XSB_GOAL:
                targets.add(p)
            elif ch == _XSB_BOX:
                boxes.add(p)
            elif ch == _XSB_BOX_GOAL:
                boxes.add(p)
                targets.add(p)
            elif ch == _XSB_PLAYER:
                players.append(p)
            elif ch == _XSB_PLAYER_GOAL:
                players.append(p)
                targets.add(p)
            else:
                raise ValueError(f"XSB level: unknown character {ch!r} at row {r}, column {c}")
    if len(players) != 1:
        raise ValueError(f"XSB level must have exactly one player (@ or +), found {len(players)}")
    if not boxes:
        raise ValueError("XSB level has no boxes ($ or *)")
    if len(boxes) != len(targets):
        raise ValueError(f"XSB level has {len(boxes)} boxes but {len(targets)} goals; they must match")
    board = Board(height, width, frozenset(walls), frozenset(targets))
    region = reachable(board, players[0], frozenset())
    for kind, cells in (("box", boxes), ("goal", targets)):
        outside = sorted(cells - region)
        if outside:
            raise ValueError(f"XSB level: {kind} at (row, col) {outside[0]} is outside the player's region")
    exterior = frozenset((r, c) for r in range(height) for c in range(width)) - region - board.walls
    return dataclasses.replace(board, exterior=exterior), State(players[0], frozenset(boxes))


def reachable(board: Board, start: Pos, boxes: frozenset[Pos]) -> frozenset[Pos]:
    """Cells the player can walk to from `start` without pushing any of `boxes`."""
    seen = {start}
    stack = [start]
    while stack:
        p = stack.pop()
        for a in ACTIONS:
            q = shift(p, a)
            if q not in seen and not board.blocked(q) and q not in boxes:
                seen.add(q)
                stack.append(q)
    return frozenset(seen)
