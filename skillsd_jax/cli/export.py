"""`skillsd-export`: a training checkpoint -> a Hugging Face directory that transformers loads.

    skillsd-export --config=configs/sokoban.py --checkpoint=runs/sokoban_verl_agent_skill_sd --out=/ckpt/exported

Writes config.json, safetensors and the tokenizer (with its chat template); the result also works with
`--hf` of `skillsd-eval`, `python -m skillsd_jax.serve --model` and `config.model.path`.
"""

from __future__ import annotations

import os
from typing import Any

from absl import flags

from skillsd_jax.cli.common import console_entry, define_checkpoint_flags, load_policy, parse_flags, run_reporting

EXPORT_DTYPES = ("float32", "bfloat16")


def _define(values: flags.FlagValues) -> None:
    define_checkpoint_flags(values)
    flags.DEFINE_string("out", None, "The HF directory to write.", flag_values=values)
    flags.DEFINE_enum("dtype", None, EXPORT_DTYPES, "Tensor dtype of the export (default: as trained).",
                      flag_values=values)


def export(config: Any, checkpoint: str, out: str, *, step: int | None = None, dtype: str | None = None) -> str:
    """Writes the policy of `checkpoint` to `out`; returns a description of what was exported."""
    import jax.numpy as jnp

    from skillsd_jax.models import save_hf_model

    model, tokenizer, source = load_policy(config, checkpoint=checkpoint, step=step)
    save_hf_model(model, out, dtype=jnp.dtype(dtype) if dtype else None, tokenizer=tokenizer)
    return source


def main(argv: list[str]) -> dict[str, Any]:
    values = parse_flags(argv, _define, __doc__)
    if not values.checkpoint or not values.out:
        raise SystemExit("skillsd-export: --checkpoint and --out are required")
    if os.path.exists(os.path.join(values.out, "config.json")):
        raise SystemExit(f"skillsd-export: {values.out} already holds a model; choose an empty directory")
    return run_reporting("skillsd-export", lambda: {
        "source": export(values.config, values.checkpoint, values.out, step=values.step, dtype=values.dtype),
        "out": os.path.abspath(values.out)})


def run() -> None:
    """Console-script entry (`skillsd-export`)."""
    console_entry(main)


if __name__ == "__main__":
    run()
