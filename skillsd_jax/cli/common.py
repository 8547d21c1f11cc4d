"""What the command-line tools share: the run-config flag and loading the policy to work on."""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any, Callable

from absl import flags
from ml_collections import config_flags

from skillsd_jax.train.checkpoint import CheckpointError

# Bad paths, configs that do not fit the checkpoint: reported as one line, without a traceback.
USER_ERRORS = (ValueError, FileNotFoundError, CheckpointError)
DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                              "configs", "sokoban.py")


def parse_flags(argv: list[str], define: Callable[[flags.FlagValues], None], usage: str) -> flags.FlagValues:
    """`--config=configs/x.py[:switches]` with `--config.field=value` overrides, plus the tool's own flags
    (`define` adds them); `--help` prints `usage` and the flags. Own flag set, so several tools (and the
    training entry point) can share a process."""
    values = flags.FlagValues()
    # `sys_argv`: the `--config.field=value` overrides are found in the arguments parsed here.
    config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "The run config the policy was trained with "
                                    "(a configs/*.py file).", flag_values=values, sys_argv=list(argv))
    define(values)
    if any(a in ("-h", "--help", "--helpfull") for a in argv[1:]):
        print(f"{usage.strip()}\n\nflags:\n{values.get_help()}")
        raise SystemExit(0)
    sys.path.insert(0, os.getcwd())  # so --config=configs/x.py can import configs.common
    try:
        values(argv)
    except flags.Error as e:
        raise SystemExit(f"{os.path.basename(argv[0])}: {e} (--help lists the flags)") from None
    return values


def define_checkpoint_flags(values: flags.FlagValues) -> None:
    flags.DEFINE_string("checkpoint", None, "A run's workdir or its checkpoints/ folder.", flag_values=values)
    flags.DEFINE_integer("step", None, "Checkpoint iteration (default: the latest).", flag_values=values)


def load_policy(config: Any, *, checkpoint: str | None = None, step: int | None = None,
                hf_dir: str | None = None) -> tuple[Any, Any, str]:
    """(model, tokenizer, description) from a training checkpoint or a local HF directory; the HF
    directory's own tokenizer is used when it has one, else the config's."""
    from skillsd_jax.models import load_hf_model
    from skillsd_jax.models.tokenizer import load_tokenizer
    from skillsd_jax.train import builders

    if (checkpoint is None) == (hf_dir is None):
        raise ValueError("give exactly one of --checkpoint (a training run) or --hf (a Hugging Face directory)")
    if hf_dir is not None:
        if not os.path.isfile(os.path.join(hf_dir, "config.json")):
            raise ValueError(f"--hf={hf_dir} has no config.json (a local Hugging Face model directory is needed)")
        has_tokenizer = os.path.isfile(os.path.join(hf_dir, "tokenizer.json"))
        tokenizer = load_tokenizer(hf_dir if has_tokenizer else (config.tokenizer or None))
        model = load_hf_model(hf_dir, dtype=builders.DTYPES[config.model.dtype])
        return model, tokenizer, f"hf:{os.path.abspath(hf_dir)}"
    model, iteration = builders.checkpoint_model(config.model, checkpoint, step)
    tokenizer = load_tokenizer(config.tokenizer or None)
    return model, tokenizer, f"checkpoint:{os.path.abspath(checkpoint)}@{iteration}"


def run_reporting(tool: str, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Runs `work` and prints its result as one JSON line; a user error exits with one line naming
    `tool`, without a traceback."""
    try:
        result = work()
    except USER_ERRORS as e:
        raise SystemExit(f"{tool}: {e}") from None
    print(json.dumps(result, sort_keys=True))
    return result


def console_entry(main: Callable[[list[str]], Any]) -> None:
    """What a console script runs: warnings-only logging, then `main(sys.argv)`."""
    logging.basicConfig(level=logging.WARNING)
    main(sys.argv)
