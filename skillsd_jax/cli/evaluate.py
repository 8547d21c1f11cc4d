"""`skillsd-eval`: the success rate (with its 95% Wilson interval) of a policy on an environment's test split.

    skillsd-eval --config=configs/sokoban.py --checkpoint=runs/sokoban_verl_agent_skill_sd
    skillsd-eval --config=configs/sokoban.py --hf=/ckpt/exported --num_tasks=64 --output=eval.json
    skillsd-eval --config=configs/sokoban.py --checkpoint=<run> --answers=answers.jsonl  # every answer, as text

The policy comes from a training checkpoint (the run's config says its architecture) or a local HF
directory. Episodes are played exactly as the training loop's evaluation plays them (same prompts,
rollout engine and metrics; `config.eval.temperature`, greedy by default): one per test task. With
`config.eval.blind_repeats` > 0 (the Sokoban config's default) it also reports `blind_success_rate`: a
policy that reads no observation, on the same tasks.
"""

from __future__ import annotations

import json
import os
from typing import Any

from absl import flags

from skillsd_jax.cli.common import console_entry, define_checkpoint_flags, load_policy, parse_flags, run_reporting


def _define(values: flags.FlagValues) -> None:
    define_checkpoint_flags(values)
    flags.DEFINE_string("hf", None, "A local Hugging Face model directory (instead of --checkpoint).",
                        flag_values=values)
    flags.DEFINE_integer("num_tasks", None, "Test tasks, one episode each (default: config.eval.num_tasks).",
                         flag_values=values)
    flags.DEFINE_string("output", None, "Also write the results as JSON to this file.", flag_values=values)
    flags.DEFINE_string("answers", None, "Also write every turn's answer (decoded text, parsed action, validity, "
                        "reward) as JSON lines to this file.", flag_values=values)


def evaluate(config: Any, *, checkpoint: str | None = None, step: int | None = None,
             hf_dir: str | None = None, answers_path: str | None = None) -> dict[str, Any]:
    """Evaluates the policy on `config.eval.num_tasks` test tasks; metrics without the `eval/` prefix.
    With `answers_path`, every turn's answer is written there as JSON lines (`answer_records`)."""
    from skillsd_jax.sampling import Sampler
    from skillsd_jax.train import builders
    from skillsd_jax.train.evaluate import answer_records, blind_reference, evaluate_policy
    from skillsd_jax.train.tasks import task_seeds

    from flax import nnx

    model, tokenizer, source = load_policy(config, checkpoint=checkpoint, step=step, hf_dir=hf_dir)
    graphdef, params = nnx.split(model)
    sampler = Sampler(graphdef, model.config, cache_dtype=builders.DTYPES[config.model.dtype],
                      decode_kernel=config.cpu_decode_kernel)
    prompts, env_max_turns = builders.prompt_builder(config, tokenizer)
    rollout = builders.eval_rollout(config, sampler, tokenizer, prompts, env_max_turns, builders.rollout_config(config))
    episodes: list = []
    seeds = task_seeds(config)[1]
    try:
        metrics = evaluate_policy(rollout, params, seeds, episodes_out=episodes)
    finally:
        rollout.pool.close()
    metrics.update(blind_reference(builders.env_factory(config.env, "eval"), seeds, config.eval.blind_repeats,
                                   config.rollout.max_turns))
    if answers_path:
        with open(answers_path, "w") as f:
            for record in answer_records(episodes):
                f.write(json.dumps(record) + "\n")
    results = {k.removeprefix("eval/"): v for k, v in metrics.items()}
    return {"source": source, "env": config.env.name, "split": str(config.env.eval_kwargs.get("split", "test")),
            **results}


def main(argv: list[str]) -> dict[str, Any]:
    values = parse_flags(argv, _define, __doc__)
    config = values.config
    if values.num_tasks is not None:
        if values.num_tasks < 1:
            raise SystemExit("--num_tasks must be >= 1")
        config.eval.num_tasks = values.num_tasks
    if config.eval.blind_repeats < 0:
        raise SystemExit("--config.eval.blind_repeats must be >= 0")
    for flag in ("output", "answers"):  # checked before the episodes are played, not after
        path = getattr(values, flag)
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise SystemExit(f"--{flag}={path}: its directory does not exist")
    results = run_reporting("skillsd-eval", lambda: evaluate(config, checkpoint=values.checkpoint, step=values.step,
                                                             hf_dir=values.hf, answers_path=values.answers))
    if values.output:
        with open(values.output, "w") as f:
            f.write(json.dumps(results, sort_keys=True) + "\n")
    return results


def run() -> None:
    """Console-script entry (`skillsd-eval`)."""
    console_entry(main)


if __name__ == "__main__":
    run()
