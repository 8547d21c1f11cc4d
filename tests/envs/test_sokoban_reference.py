"""Blind reference policies on Sokoban: the success earned by answering in format alone."""

from skillsd_jax.envs import make
from skillsd_jax.envs.sokoban.reference import blind_policy_success, main


def test_single_move_policy_counts_the_levels_that_move_solves():
    seeds = range(24)
    solved = 0
    for seed in seeds:
        env = make("sokoban", preset="verl_agent")
        env.reset(seed=seed)
        done = False
        while not done:
            _, _, done, _ = env.step("<action>left</action>")
        solved += bool(env.won)
    assert blind_policy_success(seeds, weights=[0.0, 0.0, 1.0, 0.0]) == solved / 24


def test_uniform_policy_is_reproducible_and_split_aware():
    a = blind_policy_success(range(16), repeats=2, rng_seed=3)
    assert a == blind_policy_success(range(16), repeats=2, rng_seed=3)
    assert 0.0 < a < 1.0
    out = main(["--levels", "8", "--repeats", "1", "--split", "val"])
    assert set(out) == {"uniform", "only_up", "only_down", "only_left", "only_right"}
