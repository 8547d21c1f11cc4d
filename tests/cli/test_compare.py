"""skillsd-compare: two answer files compared task by task."""

import json
import math

import pytest

from skillsd_jax.cli import compare as compare_cli


def _answers(path, outcomes):
    """outcomes: {task: [won per episode]}; two turns per episode, as skillsd-eval --answers writes them."""
    with open(path, "w") as f:
        for task, wins in outcomes.items():
            for e, won in enumerate(wins):
                for turn in range(2):
                    f.write(json.dumps({"task_id": task, "episode_id": f"eval/{task}/{e}", "turn": turn,
                                        "response": "", "action": "up", "valid": True, "stop_reason": "stop",
                                        "reward": 0.0, "won": won, "error": None}) + "\n")
    return str(path)


def test_paired_difference_counts_tasks_and_episodes(tmp_path, capsys):
    a = _answers(tmp_path / "a.jsonl", {"t0": [True, True], "t1": [True, False], "t2": [False], "t3": [True],
                                        "only_a": [True]})
    b = _answers(tmp_path / "b.jsonl", {"t0": [False, False], "t1": [True, True], "t2": [False], "t3": [True]})
    r = compare_cli.main([a, b, f"--output={tmp_path / 'out.json'}"])
    assert r["tasks"] == 4 and r["only_in_a"] == 1 and r["only_in_b"] == 0
    assert r["a_success_rate"] == pytest.approx((1 + 0.5 + 0 + 1) / 4) and r["b_success_rate"] == pytest.approx(0.5)
    diffs = [1.0, -0.5, 0.0, 0.0]
    assert r["difference"] == pytest.approx(sum(diffs) / 4)
    sd = math.sqrt(sum((d - 0.125) ** 2 for d in diffs) / 3)
    assert r["difference_ci95_hi"] - r["difference"] == pytest.approx(3.182 * sd / 2)  # t with 3 dof
    assert r["tasks_a_better"] == 1 and r["tasks_b_better"] == 1
    assert json.loads((tmp_path / "out.json").read_text()) == r
    assert "A - B, paired by task: +12.5 points" in capsys.readouterr().out


def test_bad_files_are_named(tmp_path):
    a = _answers(tmp_path / "a.jsonl", {"t0": [True]})
    b = _answers(tmp_path / "b.jsonl", {"t1": [True]})
    with pytest.raises(SystemExit, match="share no task"):
        compare_cli.main([a, b])
    with pytest.raises(SystemExit, match="no such answers file"):
        compare_cli.main([a, str(tmp_path / "missing.jsonl")])
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"task_id": "t0", "episode_id": "e", "won": true}\nnot json\n')
    with pytest.raises(SystemExit, match=r"broken.jsonl:2 is not an answer record"):
        compare_cli.main([str(broken), a])
