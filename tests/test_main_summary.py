"""The main job's closing lines: held-out success at the start and end of RL with 95% intervals."""

from skillsd_jax.main import held_out_summary


def test_summary_names_the_protocol_and_intervals():
    final = {"eval/episodes": 256.0, "eval/success_rate": 0.3, "eval/success_ci95_lo": 0.25,
             "eval/success_ci95_hi": 0.36, "eval_start/success_rate": 0.12, "eval_start/success_ci95_lo": 0.08,
             "eval_start/success_ci95_hi": 0.17}
    line = held_out_summary(final, "skill_sd", temperature=1.0)
    assert line == ("held-out success (skill_sd, 256 test levels, one episode each sampled at T=1): "
                    "start of RL 0.120 [95% CI 0.080, 0.170] -> end 0.300 [95% CI 0.250, 0.360] (+18.0 points)")
    assert "one greedy episode each" in held_out_summary(final, "grpo")
    final.update({"eval_greedy/success_rate": 0.2, "eval_start_greedy/success_rate": 0.1})
    lines = held_out_summary(final, "skill_sd", temperature=1.0).split("\n")
    assert len(lines) == 2 and lines[1].startswith("held-out success (skill_sd, 256 test levels, one greedy")
    assert "start of RL 0.100" in lines[1] and "end 0.200" in lines[1] and lines[1].endswith("(+10.0 points)")
    assert "256 val levels" in held_out_summary(final, "grpo", split="val")


def test_summary_without_a_start_evaluation():
    assert held_out_summary({"eval/success_rate": 0.5}, "grpo").endswith("start of RL n/a -> end 0.500 [95% CI 0.000, 1.000]")


def test_summary_names_the_blind_reference():
    final = {"eval/episodes": 256.0, "eval/success_rate": 0.2, "eval/blind_success_rate": 0.184,
             "eval/blind_episodes": 4096.0}
    last = held_out_summary(final, "grpo", temperature=1.0).split("\n")[-1]
    assert last.startswith("reference on the same levels: a policy that reads no observation")
    assert "16 episodes a level) wins 0.184" in last
