"""The experiment runner's quick mode end to end: cold start, two methods, resume-skip, results files."""

import json
import os

from skillsd_jax.experiments.__main__ import main


def test_quick_experiment_writes_results_and_skips_finished_runs(tmp_path, monkeypatch):
    out, docs = tmp_path / "runs", tmp_path / "docs"
    args = ["quick", "--out", str(out), "--docs", str(docs)]
    assert main(args) == 0
    summary = json.loads((docs / "results" / "quick.json").read_text())
    assert set(summary["methods"]) == {"grpo", "skill_sd"}
    for m in summary["methods"].values():
        assert m["seeds"] == 1 and 0.0 <= m["mean"] <= 1.0 and len(m["per_seed"]) == 1
        assert m["per_seed"][0]["env_steps"] >= summary["budget"]["env_steps_per_run"]
    assert summary["paired"]["seeds"] == [0] and summary["commit"]
    page = (docs / "results.md").read_text()
    assert "| grpo |" in page and "quick.png" in page and (docs / "results" / "quick.png").exists()
    # A second invocation skips the finished runs (their result files stay as they were).
    result = out / "runs" / "grpo" / "seed0" / "result.json"
    before = os.path.getmtime(result)
    assert main(args + ["--no-report"]) == 0
    assert os.path.getmtime(result) == before
    # --report-only rebuilds the files from the finished runs without running anything.
    (docs / "results" / "quick.json").unlink()
    assert main(["quick", "--out", str(out), "--docs", str(docs), "--report-only", "--methods", "grpo"]) == 0
    partial = json.loads((docs / "results" / "quick.json").read_text())
    assert set(partial["methods"]) == {"grpo"} and partial["methods"]["grpo"] == summary["methods"]["grpo"]
    assert partial["run_commits"] == summary["run_commits"] != ["unknown"]
    assert os.path.getmtime(result) == before


def test_report_only_without_finished_runs_is_a_clear_error(tmp_path, capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["quick", "--out", str(tmp_path / "none"), "--docs", str(tmp_path / "docs"), "--report-only"])
    assert "no finished runs of quick" in capsys.readouterr().err
    assert not (tmp_path / "docs").exists()
