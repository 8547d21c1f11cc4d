"""Entry point: `python -m skillsd_jax.main --config=configs/sokoban.py[:switches] [--config.field=value ...]`.

With no --config it runs the embedded default: the tiny model learning Sokoban with Skill-SD on CPU.
"""

from __future__ import annotations

import json
import logging
import os
import sys

from absl import app, flags
from ml_collections import config_flags

from skillsd_jax.cli.common import DEFAULT_CONFIG

config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "Run config (a configs/*.py file with get_config).")
flags.DEFINE_string("workdir", None, "Overrides config.workdir (checkpoints, metrics, plots, skill bank).")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize (multi-host TPU pods / GPU clusters).")
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("absl", "jax._src", "orbax", "httpx", "skillsd_jax.sampling.engine"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    config = FLAGS.config
    if config.cpu_devices != 1:  # before anything starts a JAX backend
        from skillsd_jax.sharding import split_cpu_devices

        split_cpu_devices(config.cpu_devices)
    if FLAGS.distributed:
        from skillsd_jax.sharding import initialize_distributed

        initialize_distributed()
    from skillsd_jax.train.loop import train

    final = train(config, workdir=FLAGS.workdir)
    summary = {k: v for k, v in final.items()
               if k.startswith(("eval", "train/success", "train/return"))}
    print(json.dumps({"workdir": os.path.abspath(FLAGS.workdir or config.workdir), **summary}, sort_keys=True))
    print(held_out_summary(final, config.method, config.eval.temperature, config.env.eval_kwargs.get("split", "test")))


def held_out_summary(final: dict, method: str, temperature: float = 0.0, split: str = "test") -> str:
    """Held-out success before and after RL on the `split` levels, each with its 95% interval and the
    change in points (and the greedy policy's on a second line when a sampled evaluation also played it,
    and a blind policy's on the same levels when the evaluation played one)."""

    def one(prefix: str) -> str:
        if f"{prefix}/success_rate" not in final:
            return "n/a"
        return (f"{final[f'{prefix}/success_rate']:.3f} [95% CI {final.get(f'{prefix}/success_ci95_lo', 0):.3f}, "
                f"{final.get(f'{prefix}/success_ci95_hi', 1):.3f}]")

    def change(start: str, end: str) -> str:
        if f"{start}/success_rate" not in final or f"{end}/success_rate" not in final:
            return ""
        return f" ({100 * (final[f'{end}/success_rate'] - final[f'{start}/success_rate']):+.1f} points)"

    n = int(final.get("eval/episodes", 0))
    how = "one greedy episode each" if temperature <= 0 else f"one episode each sampled at T={temperature:g}"
    lines = [f"held-out success ({method}, {n} {split} levels, {how}): "
             f"start of RL {one('eval_start')} -> end {one('eval')}{change('eval_start', 'eval')}"]
    if "eval_greedy/success_rate" in final:
        lines.append(f"held-out success ({method}, {n} {split} levels, one greedy episode each): "
                     f"start of RL {one('eval_start_greedy')} -> end {one('eval_greedy')}"
                     f"{change('eval_start_greedy', 'eval_greedy')}")
    if "eval/blind_success_rate" in final:
        per_level = final.get("eval/blind_episodes", 0) / max(n, 1)
        lines.append(f"reference on the same levels: a policy that reads no observation (every answer drawn "
                     f"uniformly from the environment's fixed set, {per_level:g} episodes a level) wins "
                     f"{final['eval/blind_success_rate']:.3f}; success above it is acting on what the policy sees")
    return "\n".join(lines)


def run() -> None:
    """Console-script entry (`skillsd-train`)."""
    sys.path.insert(0, os.getcwd())  # so --config=configs/x.py can import configs.common
    app.run(main)


if __name__ == "__main__":
    run()
