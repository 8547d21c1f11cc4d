"""SokobanEnv protocol: presets, info keys, action parsing, invalid and garbage answers, seeds."""

import subprocess
import sys
import time

import pytest

from skillsd_jax.envs import make, registered
from skillsd_jax.envs.sokoban import PRESETS, SokobanEnv

LEVEL = "######\n#@ $.#\n#    #\n######"


def _fresh(level: str = LEVEL, max_steps: int = 10) -> SokobanEnv:
    env = SokobanEnv.from_text(level, max_steps=max_steps)
    env.reset(0)
    return env


def test_registered_with_presets_and_overrides():
    assert "sokoban" in registered()
    env = make("sokoban", preset="skill_sd", max_steps=50)
    assert env.config.num_boxes == 2 and env.config.dim_room == (6, 6)
    assert env.max_steps == env.max_turns == 50 and env.num_levels == 96
    assert make("sokoban", preset="skill_sd", split="test").num_levels == 64
    verl = make("sokoban", preset="verl_agent")
    assert (verl.config.num_boxes, verl.config.search_depth, verl.max_turns) == (1, 30, 15)
    plain = make("sokoban")
    assert (plain.config.dim_room, plain.config.num_boxes, plain.max_steps) == ((6, 6), 1, 15)
    assert plain.invalid_action_penalty == 0.1 and plain.split == "train"
    with pytest.raises(ValueError, match="unknown Sokoban preset"):
        make("sokoban", preset="nope")
    with pytest.raises(ValueError, match="split"):
        make("sokoban", split="dev")
    assert set(PRESETS) == {"verl_agent", "skill_sd"}


def test_reset_info_and_privileged_plan_wins():
    env = make("sokoban", preset="skill_sd")
    obs, info = env.reset(5)
    for key in ("won", "action_valid", "task_id", "xsb", "privileged", "optimal_length"):
        assert key in info
    assert info["task_id"] == "sokoban/6x6b2/train/5" and info["action_valid"] and not info["won"]
    assert info["privileged"] == ", ".join(info["optimal_plan"]) and info["optimal_length"] == len(info["optimal_plan"])
    assert env.to_text() == info["xsb"]
    assert "Legend:" in obs and obs.count("\n") >= 6
    for a in info["privileged"].split(", "):
        obs, r, done, step_info = env.step(f"<think>plan</think><action>{a}</action>")
        for key in ("won", "action_valid", "action", "boxes_on_target", "num_boxes", "task_id"):
            assert key in step_info
    assert done and step_info["won"] and step_info["boxes_on_target"] == 2
    assert step_info["task_id"] == info["task_id"]


def test_fixed_level_count_wraps_seeds():
    env = make("sokoban", preset="skill_sd")
    assert env.reset(96 + 7)[1]["task_id"] == env.reset(7)[1]["task_id"] == "sokoban/6x6b2/train/7"
    assert env.reset(96 + 7)[1]["xsb"] == env.reset(7)[1]["xsb"]
    free = make("sokoban", preset="verl_agent")
    assert free.reset(96 + 7)[1]["xsb"] != free.reset(7)[1]["xsb"]
    with pytest.raises(ValueError, match="seed"):
        free.reset(-1)
    with pytest.raises(ValueError, match="seed"):
        free.reset(2**31)
    assert "d50" in make("sokoban", search_depth=50).reset(0)[1]["task_id"]


@pytest.mark.parametrize(
    "answer, action",
    [
        ("<think>go</think><action>up</action>", "up"),
        ("<action>Up</action>", "up"),
        ("<action> PUSH  LEFT </action>", "left"),
        ("<action>push right.</action>", "right"),
        ("<action>move down</action>", "down"),
        ("<action>**d**</action>", "down"),
        ("<ACTION>r</ACTION>", "right"),
        ("<action>←</action>", "left"),
        ("I think <action>up|down|left|right</action>... final: <action>down</action>", "down"),
    ],
)
def test_accepted_actions_and_aliases(answer, action):
    env = _fresh()
    _, _, _, info = env.step(answer)
    assert info["action_valid"] and info["action"] == action


GARBAGE = [
    "",
    "up",  # no tag: the answer format is required
    "<action>jump</action>",
    "<action></action>",
    "<action>up down</action>",
    "<action>up, right</action>",
    "<action>上</action>",
    "<action>\x00up</action>",
    "<action>up",
    "<think>unclosed",
    "🙂" * 1000,
    None,
    123,
    b"<action>up</action>",
    ["<action>up</action>"],
    "x" * 1_000_000,
    "<action>" * 200_000,  # quadratic-time trap for a naive regex
    "<action>" * 100_000 + "</action>",
    "<action>" + "u" * 100_000 + "p</action>",
]


@pytest.mark.parametrize("answer", GARBAGE, ids=range(len(GARBAGE)))
def test_garbage_answers_are_invalid_steps_and_never_raise(answer):
    env = _fresh(max_steps=3)
    before = env.to_text()
    t0 = time.perf_counter()
    obs, r, done, info = env.step(answer)
    assert time.perf_counter() - t0 < 1.0
    assert not info["action_valid"] and info["action"] is None
    assert r == pytest.approx(-0.1) and not done
    assert env.to_text() == before and info["num_steps"] == 1


def test_invalid_penalty_is_configurable_and_invalid_steps_count_toward_max_steps():
    env = SokobanEnv.from_text(LEVEL, max_steps=2, invalid_action_penalty=0.5)
    env.reset(0)
    _, r1, d1, _ = env.step("nothing")
    _, r2, d2, info = env.step("<action>fly</action>")
    assert (r1, r2) == (-0.5, -0.5) and (d1, d2) == (False, True) and not info["won"]


def test_step_after_done_and_before_reset():
    env = _fresh("#####\n#@$.#\n#####")
    _, _, done, _ = env.step("<action>right</action>")
    assert done
    obs, r, done2, info = env.step("<action>left</action>")
    assert done2 and r == 0.0 and not info["action_valid"] and info["won"]
    with pytest.raises(RuntimeError, match="before reset"):
        SokobanEnv().step("<action>up</action>")


def test_unsolvable_fixed_level_has_no_privileged_plan():
    env = SokobanEnv.from_text("#####\n#$ .#\n# @ #\n#####")
    _, info = env.reset(0)
    assert info["privileged"] == "" and info["optimal_length"] is None and info["optimal_plan"] is None
    assert info["level_seed"] is None and not info["won"]


def test_reset_restarts_the_episode():
    env = _fresh(max_steps=2)
    env.step("<action>right</action>")
    env.step("<action>right</action>")
    obs, info = env.reset(0)
    assert env.to_text() == LEVEL and not env.done and env.num_steps == 0


def test_instructions_explain_symbols_rules_and_format():
    text = make("sokoban", preset="skill_sd").instructions()
    for piece in ("#", "_", "O", "X", "√", "P", "S", "<think>", "<action>up|down|left|right</action>", "40"):
        assert piece in text


def test_no_jax_import():
    code = (
        "import sys\n"
        "import skillsd_jax.envs, skillsd_jax.envs.pool, skillsd_jax.data.sokoban_levels\n"
        "from skillsd_jax.envs import make\n"
        "make('sokoban').reset(0)\n"
        "print(sorted(m for m in sys.modules if m == 'jax' or m.startswith(('jax.', 'tensorflow.'))"
        " or m == 'tensorflow'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=_root())
    assert out.stdout.strip() == "[]"


def _root() -> str:
    import os

    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_cells_observation_style_one_token_per_cell_and_positions():
    from skillsd_jax.models.tokenizer import load_tokenizer

    grid_env = make("sokoban", preset="verl_agent", split="train")
    cells_env = make("sokoban", preset="verl_agent", split="train", observation_style="cells")
    grid_obs, _ = grid_env.reset(3)
    obs, info = cells_env.reset(3)
    rows = obs.split("\n")[:6]
    # the same room, cell for cell; the legend stays in the instructions only
    assert [r.replace(" ", "") for r in rows] == grid_obs.split("\n")[:6]
    assert "Legend" not in obs and "Legend" in grid_obs
    board = {(r, c): ch for r, row in enumerate(rows) for c, ch in enumerate(row.split(" "))}
    player = next(p for p, ch in board.items() if ch in "PS")
    box = next(p for p, ch in board.items() if ch in "X√")
    assert f"Player ({player[0]},{player[1]})." in obs and f"Boxes ({box[0]},{box[1]})." in obs
    tok = load_tokenizer()
    assert len(tok.encode(rows[2], add_special_tokens=False)) == 6  # one token per cell
    # the style changes the text only: after the same moves both show the same room
    for action in info["optimal_plan"][:3]:
        a, ra, _, _ = cells_env.step(f"<action>{action}</action>")
        b, rb, _, _ = grid_env.step(f"<action>{action}</action>")
        assert [r.replace(" ", "") for r in a.split("\n")[:6]] == b.split("\n")[:6] and ra == rb
    with pytest.raises(ValueError, match="observation_style"):
        make("sokoban", preset="verl_agent", observation_style="pixels")
