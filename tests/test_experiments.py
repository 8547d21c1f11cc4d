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
        assert m["std"] is None and m["ci95"] is None  # one seed: no spread claimed
        assert m["per_seed"][0]["env_steps"] >= summary["budget"]["env_steps_per_run"]
    assert summary["paired"]["seeds"] == [0] and summary["paired"]["ci95"] is None and summary["commit"]
    assert summary["paired_vs_grpo"] == {"skill_sd": summary["paired"]}  # every method but grpo, against grpo
    page = (docs / "results.md").read_text()
    assert "n/a (one seed)" in page and f"{summary['paired']['mean']:+.3f} (one seed)" in page
    assert "| grpo |" in page and "quick.png" in page and (docs / "results" / "quick.png").exists()
    sampled = summary["config"]["eval"]["temperature"] > 0  # the page names how episodes were evaluated
    assert ("sampled at T=" in page) == sampled and ("one greedy episode each" in page) == (not sampled)
    assert f"runs made at `{summary['run_commits'][0][:10]}`" in page
    # A second invocation skips the finished runs (their result files stay as they were).
    result = out / "runs" / "grpo" / "seed0" / "result.json"
    before = os.path.getmtime(result)
    assert main(args + ["--no-report"]) == 0
    assert os.path.getmtime(result) == before
    # Cold-start parameters without their evaluation are evaluated again, not warmed up again.
    cold_json, cold_npz = out / "cold_start" / "seed0.json", out / "cold_start" / "seed0.npz"
    cold_eval, npz_time = json.loads(cold_json.read_text())["eval"], os.path.getmtime(cold_npz)
    cold_json.unlink()
    assert main(args + ["--no-report"]) == 0
    assert os.path.getmtime(cold_npz) == npz_time
    assert json.loads(cold_json.read_text())["eval"]["eval/success_rate"] == cold_eval["eval/success_rate"]
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


def test_curve_points_use_finished_runs_and_place_the_final_evaluation_at_its_steps(tmp_path):
    from skillsd_jax.experiments import get_experiment
    from skillsd_jax.experiments.report import curve_points

    exp = get_experiment("quick")

    def run(method, seed, records, finished, root=tmp_path):
        d = root / "runs" / method / f"seed{seed}"
        d.mkdir(parents=True)
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        if finished:
            (d / "result.json").write_text("{}")

    run("grpo", 0, [{"iteration": 1, "progress/env_steps": 50.0, "eval/success_rate": 0.25},
            {"iteration": 2, "progress/env_steps": 100.0},
            {"iteration": 2, "eval/success_rate": 0.5}], finished=True)  # the final evaluation: no step count
    run("skill_sd", 0, [{"iteration": 1, "progress/env_steps": 60.0, "eval/success_rate": 0.0}], finished=False)
    assert curve_points(exp, str(tmp_path), "grpo") == [[(50.0, 0.25)], [(100.0, 0.5)]]
    # sokoban_cpu evaluates every 15 iterations: a final evaluation one iteration after the one at 30
    # replaces it (the same stage of training), one at 15 does not
    sok = get_experiment("sokoban_cpu")
    run("grpo", 1, root=tmp_path / "sok", records=[{"iteration": 15, "progress/env_steps": 6000.0, "eval/success_rate": 0.2},
                    {"iteration": 30, "progress/env_steps": 11900.0, "eval/success_rate": 0.3},
                    {"iteration": 31, "progress/env_steps": 12300.0},
                    {"iteration": 31, "eval/success_rate": 0.4}], finished=True)
    assert curve_points(sok, str(tmp_path / "sok"), "grpo") == [[(6000.0, 0.2)], [(12300.0, 0.4)]]
    assert curve_points(exp, str(tmp_path), "skill_sd") == []


def test_validation_experiment_plays_the_val_split_and_varies_skill_sd_settings():
    from skillsd_jax.experiments import get_experiment
    from skillsd_jax.experiments.report import markdown_table

    val, test = get_experiment("sokoban_cpu_val"), get_experiment("sokoban_cpu")
    assert not any("lambda" in m or "sync" in m for m in test.methods)  # the test sweep keeps its eight methods
    assert val.config("grpo", 0).env.eval_kwargs.split == "val"
    assert test.config("grpo", 0).env.eval_kwargs.split == "test"
    base = val.config("skill_sd", 0)
    assert val.config("skill_sd_lambda10", 0).loss.sdl_coef == 10.0 != base.loss.sdl_coef
    assert val.config("skill_sd_sync10", 0).teacher_sync.every == 10 != base.teacher_sync.every
    assert val.config("skill_sd_sync10", 0).method == "skill_sd"
    # The same budget as the test experiment: settings chosen here carry over.
    assert val.config("grpo", 0).budget_env_steps == test.config("grpo", 0).budget_env_steps
    summary = {"experiment": val.name, "description": val.description, "commit": "abc", "run_commits": ["abc"],
               "config": {"eval": {"temperature": 1.0}}, "cold_start": {"mean": None},
               "budget": {"env_steps_per_run": 10, "test_levels": 256, "eval_split": "val"}, "methods": {}}
    assert "256 held-out val levels" in markdown_table(summary, "x.png", "cmd")
