"""What an experiment is: a base config, the methods (each a config variant), seeds and one budget.

`sokoban_cpu`: the embedded tiny model on Sokoban (6x6, 1 box, 15 steps) from a short cold start;
every method gets the same cold start per seed, the same environment-step budget and the same
held-out test levels. `skill_sd_oracle` is Skill-SD with the privileged `oracle` summarizer (solver
plans): an upper bound that uses OPD-class information, labelled as such.
`sokoban_cpu_val`: the same runs on the validation split (level seeds disjoint from train and test)
with Skill-SD's lambda and teacher sync period varied: where its settings are chosen, never on the
test levels.
`quick`: one seed x two methods at a tiny budget (a smoke test of the whole pipeline).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

from configs.sokoban import get_config
from skillsd_jax.train.config_utils import set_fields

# method name in the results -> (config method, extra overrides)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "grpo": ("grpo", {}),
    "opd": ("opd", {}),
    "opsd_grpo": ("opsd_grpo", {}),
    "skill_grpo": ("skill_grpo", {}),
    "skill_sd": ("skill_sd", {}),
    "skill_sd_frozen": ("skill_sd_frozen", {}),
    "skill_sd_offpolicy": ("skill_sd_offpolicy", {}),
    "skill_sd_oracle": ("skill_sd", {"skills.backend": "oracle"}),
    # Skill-SD settings the validation experiment varies (lambda, teacher sync period).
    "skill_sd_lambda1": ("skill_sd", {"loss.sdl_coef": 1.0}),
    "skill_sd_lambda10": ("skill_sd", {"loss.sdl_coef": 10.0}),
    "skill_sd_sync10": ("skill_sd", {"teacher_sync.every": 10}),
}
PRIVILEGED = {"opd", "opsd_grpo", "skill_sd_oracle"}  # use the level's solution (labelled in reports)
RESULT_FILE = "result.json"  # written in a run's directory when its final evaluation ends


def run_dir(out_dir: str, method: str, seed: int) -> str:
    """The workdir of one method x seed of an experiment (checkpoints, metrics.jsonl, skills, result)."""
    return os.path.join(out_dir, "runs", method, f"seed{seed}")


@dataclasses.dataclass(frozen=True)
class Experiment:
    name: str
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    base: Callable[[], Any]  # () -> ConfigDict shared by every run (method and seed are set per run)
    description: str = ""

    def config(self, method: str, seed: int):
        base_method, overrides = VARIANTS[method]
        c = self.base()
        c.method = base_method
        c.seed = seed
        return set_fields(c, overrides)


def _sokoban_cpu():
    c = get_config("")
    # The settings these runs were made with (the main job's defaults of that time; the main job has
    # since moved to a shorter cold start and a larger learning rate).
    c.warmstart.steps = 100
    c.optimizer.learning_rate = 1e-4
    c.optimizer.total_steps = 120  # the schedule of 30 iterations x 4 PPO steps
    c.eval.num_tasks = 256  # the same 256 held-out test levels for every run
    c.num_iterations = 60  # a cap; the budget below ends each run
    c.budget_env_steps = 12_000  # ~30 iterations of 8 tasks x 4 episodes
    c.eval.every = 15  # a middle point of the curves
    c.eval.at_start = False  # the cold start is evaluated once per seed
    c.eval.greedy_too = False  # methods are ranked by the sampled policy RL trains; greedy would double eval time
    c.checkpoint.every = 10
    c.progress_bar = True
    return c


def _sokoban_cpu_val():
    c = _sokoban_cpu()
    c.env.eval_kwargs.split = "val"  # 256 validation levels
    return c


def _quick():
    c = get_config("smoke")
    c.warmstart.steps = 4
    c.eval.num_tasks = 8
    c.eval.every = 0
    c.eval.at_start = False
    c.num_iterations = 4
    c.budget_env_steps = 24
    c.checkpoint.every = 2
    c.progress_bar = False
    return c


EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in [
    Experiment("sokoban_cpu", ("grpo", "opd", "opsd_grpo", "skill_grpo", "skill_sd", "skill_sd_frozen",
                               "skill_sd_offpolicy", "skill_sd_oracle"), (0, 1, 2), _sokoban_cpu,
               "tiny model, Sokoban 6x6 / 1 box / 15 steps, 256 test levels"),
    Experiment("sokoban_cpu_val", ("grpo", "skill_sd", "skill_sd_lambda1", "skill_sd_lambda10", "skill_sd_sync10"), (0,),
               _sokoban_cpu_val,
               "tiny model, Sokoban 6x6 / 1 box / 15 steps, Skill-SD settings on 256 validation levels"),
    Experiment("quick", ("grpo", "skill_sd"), (0,), _quick, "smoke: 1 seed x 2 methods, tiny budget"),
]}


def get_experiment(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; known: {sorted(EXPERIMENTS)}")
    return EXPERIMENTS[name]
