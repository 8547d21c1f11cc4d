"""End to end: episodes -> rule summaries (through the async pool) -> bank -> UCB select -> credit ->
teacher skill block within a token budget, for a generic env and for Sokoban (real env when present)."""

import importlib

import pytest
import sokoban_fake
from skills_testlib import char_tokenizer, word_tokenizer
from test_skill_rule_backend import LEVEL, _tw_group, fake_analyzer, sokoban_group

from skillsd_jax.skills import (AsyncSummarizer, CreditTracker, RuleSummarizer, SkillBank,
                                render_skill_block)
from skillsd_jax.skills.prompting import BLOCK_HEADER


def _real_sokoban():
    try:
        mod = importlib.import_module("skillsd_jax.envs.sokoban")
        solver = importlib.import_module("skillsd_jax.envs.sokoban.solver")
        return mod.SokobanEnv, solver
    except (ImportError, AttributeError) as e:
        pytest.skip(f"skillsd_jax.envs.sokoban (SokobanEnv + solver) not available yet: {e}")


def _pipeline(tmp_path, summarizer, group, task):
    bank = SkillBank(tmp_path / "bank.db")
    tracker = CreditTracker(bank)
    with AsyncSummarizer(summarizer, bank, max_workers=1) as pool:
        assert pool.submit(group, step=0)
        assert pool.drain(timeout=30)
        assert pool.stats()["skills_added"] == 1
    skill = bank.select(task)
    assert skill is not None and skill.skill_id is not None
    tracker.record_use(task, skill.skill_id, 0)
    tracker.observe_group(task, 1, [e.total_reward for e in group])
    assert bank.get(skill.skill_id).count == 1
    return bank, skill


def _check_blocks(skill, must_have: str):
    for tok, budget in ((word_tokenizer(), 60), (char_tokenizer(), 300), (word_tokenizer(), 10_000)):
        block = render_skill_block(skill, tokenizer=tok, max_tokens=budget)
        assert len(tok.encode(block, add_special_tokens=False)) <= budget
        assert block.startswith(BLOCK_HEADER) and "### Golden workflow" in block
        assert must_have in block  # the workflow's first step survives small budgets
    assert render_skill_block(skill, tokenizer=word_tokenizer(), max_tokens=3) == ""


def test_generic_env_end_to_end(tmp_path):
    bank, skill = _pipeline(tmp_path, RuleSummarizer(), _tw_group(), "tw/1")
    assert skill.golden_workflow == "1. open door\n2. go east\n3. take coin"
    _check_blocks(skill, "1. open door")


def test_sokoban_end_to_end_with_fake_env(tmp_path):
    group = sokoban_group(sokoban_fake.FakeSokobanEnv)
    bank, skill = _pipeline(tmp_path, RuleSummarizer({"sokoban": fake_analyzer()}), group, "sokoban/t1")
    assert skill.golden_workflow.startswith("Solve it in 6 moves:\nStep 1: up")
    _check_blocks(skill, "Step 1: up")


def test_sokoban_end_to_end_with_real_env(tmp_path):
    SokobanEnv, solver = _real_sokoban()
    assert solver.solve(LEVEL) is not None and len(solver.solve(LEVEL)) == 6  # hand-checked optimum
    assert solver.is_dead("######\n# $  #\n# @  #\n#   .#\n######")
    group = sokoban_group(SokobanEnv)
    assert [e.won for e in group] == [True, True, False, False]
    bank, skill = _pipeline(tmp_path, RuleSummarizer(), group, "sokoban/t1")  # default analyzers: the real env
    assert skill.metadata["analyzer"] == "sokoban"
    assert skill.success_analysis.startswith("2/4 attempts solved the level. The shortest solution used 6 moves")
    assert "Do not push up in this position (attempt dead, move 2)" in skill.mistake_analysis
    assert skill.golden_workflow == "Solve it in 6 moves:\nStep 1: up\nStep 2: right\nStep 3: right\nStep 4: up\nStep 5: right\nStep 6: down"
    no_win = RuleSummarizer().summarize(group[2:], step=0)[0]
    assert no_win.metadata["workflow_source"] == "advice" and "Optimal" not in no_win.golden_workflow
    from skillsd_jax.skills.backends.rule_backend import oracle_summarizer

    oracle = oracle_summarizer().summarize(group[2:], step=0)[0]
    assert oracle.golden_workflow.startswith("Optimal plan (6 moves):") and oracle.metadata["privileged"]
    _check_blocks(skill, "Step 1: up")
