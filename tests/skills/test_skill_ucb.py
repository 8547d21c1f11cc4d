"""UCB selection through the bank: untried first (oldest first), then exactly mean + c*sqrt(ln N / n)."""

import math

import pytest

from skillsd_jax.skills.bank import SkillBank
from skillsd_jax.skills.skill import Skill
from skillsd_jax.skills.ucb import select_index, ucb_score


def _skill(task: str, k: int) -> Skill:
    return Skill(task, f"success {k}", f"mistake {k}", f"workflow {k}")


def _bank_with_stats(path, c: float) -> tuple[SkillBank, list[int]]:
    bank = SkillBank(path, ucb_c=c)
    ids = [bank.add(_skill("t", k)) for k in range(3)]
    for r in (0.0, 1.0):  # mean 0.5, n = 2
        bank.update(ids[0], r)
    for _ in range(3):  # mean 0.7, n = 3
        bank.update(ids[1], 0.7)
    for _ in range(5):  # mean 0.6, n = 5
        bank.update(ids[2], 0.6)
    return bank, ids


def test_untried_first_oldest_first(tmp_path):
    bank = SkillBank(tmp_path / "b.db")
    ids = [bank.add(_skill("t", k)) for k in range(3)]
    assert bank.select("t").skill_id == ids[0]
    bank.update(ids[0], 5.0)
    bank.update(ids[2], 5.0)
    assert bank.select("t").skill_id == ids[1]  # the only untried one, despite lower means elsewhere
    new = bank.add(_skill("t", 9))
    assert bank.select("t").skill_id == ids[1]  # two untried: the oldest first
    bank.update(ids[1], 0.0)
    assert bank.select("t").skill_id == new
    assert bank.select("other") is None


def test_formula_matches_hand_computation(tmp_path):
    # N = 10. Scores by hand (ln 10 = 2.302585):
    #   c=1: 0.5+sqrt(2.302585/2)=1.57298, 0.7+sqrt(2.302585/3)=1.57608, 0.6+sqrt(2.302585/5)=1.27861 -> skill 1
    #   c=2: 0.5+2*1.07298=2.64596, 0.7+2*0.87608=2.45216, 0.6+2*0.67861=1.95722 -> skill 0
    #   c=0: plain means -> skill 1
    for c, expected, score in ((1.0, 1, 1.57608), (2.0, 0, 2.64596), (0.0, 1, 0.7)):
        bank, ids = _bank_with_stats(tmp_path / f"bank_c{c}.db", c)
        chosen = bank.select("t")
        assert chosen.skill_id == ids[expected], c
        assert ucb_score(chosen.mean_reward, chosen.count, 10, c) == pytest.approx(score, abs=1e-5)
        bank.close()


def test_update_incremental_mean_and_count(tmp_path):
    bank = SkillBank(tmp_path / "b.db")
    sid = bank.add(_skill("t", 0))
    for r in (1.0, 2.0, 6.0):
        assert bank.update(sid, r)
    s = bank.get(sid)
    assert (s.count, s.mean_reward) == (3, pytest.approx(3.0))
    assert not bank.update(sid + 100, 1.0)  # unknown id: reported, not raised
    with pytest.raises(ValueError, match="finite"):
        bank.update(sid, float("nan"))


def test_reopen_restores_skills_and_statistics(tmp_path):
    bank, ids = _bank_with_stats(tmp_path / "b.db", 1.0)
    before = bank.skills("t")
    bank.close()
    again = SkillBank(tmp_path / "b.db", ucb_c=1.0)
    assert again.skills("t") == before
    assert [s.count for s in before] == [2, 3, 5]
    assert again.select("t").skill_id == ids[1]
    assert again.add(_skill("t", 7)) > max(ids)  # ids keep growing after reopening


def test_select_index_pure():
    assert select_index([], [], 1.0) is None
    assert select_index([9.0, 0.0, 0.0], [1, 0, 0], 1.0) == 1
    # ties go to the older skill
    assert select_index([0.5, 0.5], [2, 2], 1.0) == 0
    # one tried skill: ln(1) = 0, score is the mean
    assert ucb_score(0.3, 1, 1, 5.0) == pytest.approx(0.3)
    assert ucb_score(0.0, 0, 3, 1.0) == math.inf
    with pytest.raises(ValueError):
        select_index([1.0], [1, 2], 1.0)


def test_bad_bank_config(tmp_path):
    with pytest.raises(ValueError, match="capacity_per_task"):
        SkillBank(tmp_path / "a.db", capacity_per_task=0)
    with pytest.raises(ValueError, match="ucb_c"):
        SkillBank(tmp_path / "a.db", ucb_c=-1.0)


def test_ucb_explores_among_skills_of_one_task_on_the_success_scale(tmp_path):
    """Credits are success rates in [0, 1] (the default won_rate_next_visit): with c = 1 every skill is
    tried again after its first use, and the most useful one ends up used most."""
    import numpy as np

    from skillsd_jax.skills import CreditTracker, Skill, SkillBank

    bank = SkillBank(tmp_path / "b.db", ucb_c=1.0)
    tracker = CreditTracker(bank, mode="won_rate_next_visit")
    quality = {}
    for k, q in enumerate([0.2, 0.7, 0.4]):
        sid = bank.add(Skill(task_id="t", success_analysis=f"s{k}", mistake_analysis="m", golden_workflow="w"))
        quality[sid] = q
    rng = np.random.default_rng(0)
    uses: dict[int, int] = {sid: 0 for sid in quality}
    chosen = None
    for step in range(60):
        if chosen is not None:  # the group of this visit credits the skill used at the last one
            won = list(rng.random(8) < quality[chosen])
            tracker.observe_group("t", step, [float(w) for w in won], won)
        chosen = bank.select("t").skill_id
        tracker.record_use("t", chosen, step)
        uses[chosen] += 1
    assert min(uses.values()) >= 3  # exploration: no skill abandoned after one try
    best = max(quality, key=quality.get)
    assert uses[best] == max(uses.values()) and uses[best] > 30
    assert all(0.0 <= s.mean_reward <= 1.0 for s in bank.skills("t"))
