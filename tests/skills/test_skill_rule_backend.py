"""Rule summarizer: the generic analyzer on hand-made episodes, the Sokoban analyzer on a hand-checked level
(with a FAKE Sokoban implementing the env contract; the real env is exercised in the end-to-end test)."""

import sokoban_fake
from skills_testlib import episode, turn

from skillsd_jax.agent.episode import Episode, Turn
from skillsd_jax.skills.analyzers.generic import GenericAnalyzer
from skillsd_jax.skills.analyzers.sokoban import SokobanAnalyzer, SokobanOracleAnalyzer, stuck_box_after_push
from skillsd_jax.skills.backends.rule_backend import RuleSummarizer

# Player (3,1), box (2,2), goal (3,4). Optimal plan by hand: up, right, right (box to (2,4)), up, right,
# down (box onto the goal): 6 moves; 3 pushes are needed plus 3 repositioning moves.
LEVEL = "######\n#    #\n# $  #\n#@  .#\n######"


def play(env_cls, xsb: str, actions: list[str | None], eid: str, task: str = "sokoban/t1") -> Episode:
    """Plays `actions` (None = an invalid answer) through an env honouring the Sokoban contract."""
    env = env_cls.from_text(xsb, max_steps=100)
    env.reset(0)
    turns, won = [], False
    for a in actions:
        obs = env.to_text()
        text = f"<think>x</think><action>{a}</action>" if a else "no idea"
        _, r, done, info = env.step(text)
        won = bool(info.get("won"))
        turns.append(Turn(observation=obs, response_text=text, action=a if info.get("action_valid") else None,
                          action_valid=bool(info.get("action_valid")), reward=r, done=done))
        if done:
            break
    return Episode(episode_id=eid, env_name="sokoban", task_id=task, seed=0, initial_observation=xsb,
                   initial_info={"xsb": xsb}, turns=turns, won=won)


def sokoban_group(env_cls) -> list[Episode]:
    return [
        play(env_cls, LEVEL, ["left", None, "up", "right", "right", "up", "right", "down"], "short"),  # bump+invalid
        play(env_cls, LEVEL, ["up", "down", "up", "right", "right", "up", "right", "down"], "long"),
        play(env_cls, LEVEL, ["right", "up", "left", "left"], "dead"),  # 'up' pushes the box against the top wall
        play(env_cls, LEVEL, [None, None, "up"], "invalid"),
    ]


def fake_analyzer() -> SokobanOracleAnalyzer:
    return SokobanOracleAnalyzer(env_from_text=sokoban_fake.FakeSokobanEnv.from_text, solve_fn=sokoban_fake.solve,
                                 is_dead_fn=sokoban_fake.is_dead)


def faithful_analyzer() -> SokobanAnalyzer:
    return SokobanAnalyzer(env_from_text=sokoban_fake.FakeSokobanEnv.from_text)


def test_faithful_sokoban_analysis_on_hand_checked_level():
    """Same facts a reader of the episodes sees: wins, the visibly stuck push, invalid and wasted moves."""
    group = sokoban_group(sokoban_fake.FakeSokobanEnv)
    a = faithful_analyzer().analyze(group)
    assert a.success_analysis == "2/4 attempts solved the level. The shortest solution used 6 moves."
    assert a.golden_workflow == "Solve it in 6 moves:\nStep 1: up\nStep 2: right\nStep 3: right\nStep 4: up\nStep 5: right\nStep 6: down"
    assert "1/4 attempts pushed a box where it can never reach a target" in a.mistake_analysis
    assert "Do not push up in this position (attempt dead, move 2)" in a.mistake_analysis
    assert a.metadata["privileged"] is False and a.metadata["deadlocks"] == 1


def test_faithful_sokoban_without_wins_gives_no_plan():
    group = sokoban_group(sokoban_fake.FakeSokobanEnv)[2:]
    a = faithful_analyzer().analyze(group)
    assert a.metadata["workflow_source"] == "advice"
    assert "Optimal" not in a.golden_workflow and "optimal" not in a.success_analysis
    assert "corner" in a.golden_workflow  # general advice, no level-specific solution


def test_stuck_box_rules():
    """The two by-eye rules, each with a case where a target on the wall keeps the box alive."""
    corner = ("#####\n#  .#\n#   #\n# $@#\n#####", "#####\n#  .#\n#   #\n#$@ #\n#####")
    assert stuck_box_after_push(*corner)  # pushed left into the bottom-left corner
    bare_wall = ("######\n#    #\n# $  #\n# @ .#\n######", "######\n# $  #\n# @  #\n#   .#\n######")
    assert stuck_box_after_push(*bare_wall)  # against the top wall, no target along it
    wall_with_target = ("######\n#  @ #\n#  $ #\n#.   #\n######", "######\n#    #\n#  @ #\n#. $ #\n######")
    assert not stuck_box_after_push(*wall_with_target)  # the bottom wall's stretch holds a target
    next_to_target = ("#####\n#.  #\n# $ #\n# @ #\n#####", "#####\n#.$ #\n# @ #\n#   #\n#####")
    assert not stuck_box_after_push(*next_to_target)
    assert not stuck_box_after_push(corner[1], corner[1])  # nothing moved


def test_sokoban_analysis_on_hand_checked_level():
    group = sokoban_group(sokoban_fake.FakeSokobanEnv)
    assert [e.won for e in group] == [True, True, False, False]
    a = fake_analyzer().analyze(group)
    assert a.success_analysis.startswith("2/4 attempts solved the level. The shortest solution used 6 moves")
    assert a.golden_workflow == "Solve it in 6 moves:\nStep 1: up\nStep 2: right\nStep 3: right\nStep 4: up\nStep 5: right\nStep 6: down"
    assert "1/4 attempts made a push after which the level could no longer be solved" in a.mistake_analysis
    assert "Do not push up in this position (attempt dead, move 2):\n######\n#    #\n# $  #\n# @ .#\n######" \
        in a.mistake_analysis
    assert "3 invalid answers" in a.mistake_analysis
    assert "2 moves walked into a wall" in a.mistake_analysis
    assert a.metadata["deadlocks"] == 1 and a.metadata["workflow_source"] == "episode:short"


def test_oracle_sokoban_without_wins_uses_the_solver_plan():
    group = sokoban_group(sokoban_fake.FakeSokobanEnv)[2:]
    a = fake_analyzer().analyze(group)
    assert a.success_analysis == ("No attempt solved the level (2 tries). "
                                  "The best attempt ended with 0/1 boxes on targets.")
    assert a.golden_workflow == "Optimal plan (6 moves):\nStep 1: up\nStep 2: right\nStep 3: right\nStep 4: up\nStep 5: right\nStep 6: down"
    assert a.metadata["workflow_source"] == "solver"


def test_rule_summarizer_falls_back_to_generic_without_xsb():
    summ = RuleSummarizer({"sokoban": fake_analyzer()})
    ep = episode("s1", [turn("up", -0.1)], task="sokoban/x", env="sokoban")  # no initial_info["xsb"]
    skills = summ.summarize([ep], step=2)
    assert len(skills) == 1 and skills[0].metadata["analyzer"] == "generic"
    assert summ.stats()["sokoban_analyzer_errors"] == 1


def _tw_group() -> list[Episode]:
    win = [turn("open door", 0.0), turn("go east", 0.0), turn("take coin", 10.0, done=True)]
    long_win = [turn("look", 0.0), turn("open door", 0.0), turn("go west", 0.0), turn("go east", 0.0),
                turn("go east", 0.0), turn("take coin", 10.0, done=True)]
    loss = [turn("look", 0.0), turn(None, -0.1, response="<action>fly</action>"), turn("look", 0.0),
            turn("look", 0.0), turn(None, -0.1, response="<action>fly</action>"), turn("look", 0.0)]
    return [episode("a", long_win, won=True), episode("b", loss), episode("c", win, won=True)]


def test_generic_analysis_textworld():
    a = GenericAnalyzer().analyze(_tw_group())
    assert a.success_analysis.startswith("2/3 attempts succeeded")
    assert "The shortest success took 3 actions: open door; go east; take coin." in a.success_analysis
    assert a.golden_workflow == "1. open door\n2. go east\n3. take coin"
    assert "2 invalid actions in 1/3 attempts" in a.mistake_analysis
    assert "Most repeated failing action: 'look' (4 times)" in a.mistake_analysis


def _qa(eid: str, turns: list[Turn], won: bool = False) -> Episode:
    return episode(eid, turns, task="search_qa/toy/q1", env="search_qa", won=won,
                   info={"answers": ["Paris", "City of Paris"], "task": "What is the capital of France?"})


def _search(q: str) -> Turn:
    return turn(q, 0.0, response=f"<think>.</think><search>{q}</search>")


def _answer(a: str, r: float) -> Turn:
    return turn(a, r, response=f"<answer>{a}</answer>", done=True)


def test_generic_analysis_search_qa_answers_vs_gold():
    group = [_qa("q1", [_search("capital of france"), _answer("Lyon", 0.0)]),
             _qa("q2", [_answer("lyon.", 0.0)]),
             _qa("q3", [_search("france"), _search("france city")])]
    a = GenericAnalyzer(reveal_answers=True).analyze(group)  # the oracle's setting
    assert "Wrong final answers: 'Lyon' (2x); the expected answer is 'Paris'." in a.mistake_analysis
    assert "1/3 attempts never gave an <answer>" in a.mistake_analysis
    assert a.success_analysis.startswith("No attempt succeeded (3 tries")
    hidden = GenericAnalyzer().analyze(group)  # the default never quotes the gold answer
    assert "Paris" not in hidden.mistake_analysis + hidden.success_analysis + hidden.golden_workflow
    won = GenericAnalyzer().analyze(group + [_qa("q4", [_search("capital of france"), _answer("the Paris", 1.0)],
                                                 won=True)])
    assert won.golden_workflow == "1. search 'capital of france'\n2. answer 'the Paris'"
    assert "'the Paris'" not in won.mistake_analysis  # normalized to a gold answer: not wrong


def test_crashed_episodes_and_analyzer_bugs_give_no_skill(caplog):
    class Broken:
        def analyze(self, episodes):
            raise KeyError("boom")

    crashed = [episode("x", [turn("look", 0.0)], error="env died")]
    assert RuleSummarizer().summarize(crashed, step=0) == []  # nothing to learn from crashed episodes
    summ = RuleSummarizer({}, default=Broken())
    assert summ.summarize(_tw_group(), step=0) == []
    assert summ.stats() == {"generic_analyzer_errors": 1, "failures": 1} and "boom" in caplog.text
