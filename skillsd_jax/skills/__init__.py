"""Skills: summarizing finished episodes, a persistent per-task skill bank with UCB selection,
credit assignment, and the skill block prepended to the teacher's prompt (docs/algorithm.md, steps 2-4).

Typical use in the training loop (per task x at step t)::

    bank = SkillBank(path); tracker = CreditTracker(bank)
    pool = AsyncSummarizer(RuleSummarizer(), bank)            # or OpenAISummarizer / PolicySummarizer
    pool.submit(group_episodes, step=t)                         # never blocks
    tracker.observe_group(x, t, [e.total_reward for e in group], [e.won for e in group])
    skill = bank.select(x)                                      # None -> no teacher signal for x
    if skill: tracker.record_use(x, skill.skill_id, t)
    block = render_skill_block(skill, tokenizer=tok, max_tokens=512) if skill else ""
"""

from skillsd_jax.skills.backends import LLMSummarizer, OpenAISummarizer, PolicySummarizer, RuleSummarizer
from skillsd_jax.skills.bank import SkillBank, SkillBankError
from skillsd_jax.skills.credit import CREDIT_MODES, CreditTracker
from skillsd_jax.skills.prompting import (FieldLimits, SkillParseError, build_summary_messages, parse_skill_reply,
                                          render_skill_block)
from skillsd_jax.skills.skill import SKILL_FIELDS, Skill
from skillsd_jax.skills.summarizer import AsyncSummarizer, Summarizer, group_by_task
from skillsd_jax.skills.ucb import select_index, select_skill, ucb_score

__all__ = [
    "AsyncSummarizer", "CREDIT_MODES", "CreditTracker", "FieldLimits", "LLMSummarizer", "OpenAISummarizer",
    "PolicySummarizer", "RuleSummarizer", "SKILL_FIELDS", "Skill", "SkillBank", "SkillBankError", "SkillParseError",
    "Summarizer", "build_summary_messages", "group_by_task", "parse_skill_reply", "render_skill_block",
    "select_index", "select_skill", "ucb_score",
]
