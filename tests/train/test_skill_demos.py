"""Cold-start skill blocks: written by the faithful summarizer, in the teacher's format, matching or not."""

import numpy as np
import pytest

from skillsd_jax.agent import PromptBuilder
from skillsd_jax.envs.sokoban import SokobanEnv
from skillsd_jax.models.tokenizer import load_tokenizer
from skillsd_jax.skills import RuleSummarizer, render_skill_block
from skillsd_jax.skills.prompting import BLOCK_HEADER
from skillsd_jax.train.sft import demonstration
from skillsd_jax.train.skill_demos import SkillDemoMix, demo_guidance

TEMPLATE = "<think>Next: {action}.</think><action>{action}</action>"


def test_demo_guidance_kinds():
    tok = load_tokenizer()
    env = SokobanEnv()
    prompts = PromptBuilder(tok, env.instructions())
    demos = [demonstration(env, s, prompts, tok, "trajectory", TEMPLATE) for s in range(12)]
    summ = RuleSummarizer()
    render = lambda skill: render_skill_block(skill, tokenizer=tok, max_tokens=256)
    blocks, counts = demo_guidance(demos, env, lambda g: summ.summarize(g, step=0)[0], render,
                                   SkillDemoMix(match=0.5, advice=0.25, other=0.25), TEMPLATE, seed=1)
    assert sum(counts.values()) == 12 and counts["plain"] == 0
    n_match = n_other = 0
    for d in demos:
        block = blocks[d.episode_id]
        assert block.startswith(BLOCK_HEADER)
        plan = [t.action for t in d.turns]
        workflow = block.split("### Golden workflow", 1)[1]
        if "solved the level" in block and "No attempt" not in block:
            own = f"Solve it in {len(plan)} moves" in workflow
            n_match += own
            n_other += not own
        else:
            assert "Optimal" not in block  # no-win skills carry advice only, never the solver's plan
    assert n_match == counts["match"] and n_other <= counts["other"]


def test_bad_mix():
    with pytest.raises(ValueError, match="sum"):
        SkillDemoMix(match=0.8, advice=0.3)


def test_length_buckets_cover_every_row_once_at_a_width_that_fits_it():
    from skillsd_jax.train.sft import length_buckets

    lengths = np.array([300, 40, 700, 650, 64, 65, 1000, 128, 129, 500])
    buckets = length_buckets(lengths, 3, 64)
    rows = np.concatenate([idx for _, idx in buckets])
    assert sorted(rows.tolist()) == list(range(len(lengths)))  # every row, once
    widths = [w for w, _ in buckets]
    assert widths == sorted(widths) and all(w % 64 == 0 for w in widths)
    for width, idx in buckets:
        assert lengths[idx].max() <= width < lengths[idx].max() + 64  # fits, and no wider than it needs
    assert widths[0] < 1024  # short rows are not padded to the longest row
    [(width, idx)] = length_buckets(lengths, 1, 64)
    assert width == 1024 and idx.tolist() == list(range(len(lengths)))
    # buckets that round to the same width merge
    assert len(length_buckets(np.array([10, 20, 30, 40]), 4, 64)) == 1
    with pytest.raises(ValueError, match="length_buckets"):
        length_buckets(lengths, 0, 64)
