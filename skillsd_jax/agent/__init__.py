"""Prompts, the multi-turn rollout and the conversion of episodes into training rows."""

from skillsd_jax.agent.episode import Episode, Turn
from skillsd_jax.agent.prompts import PromptBuilder, PromptConfig, privileged_block, stop_strings
from skillsd_jax.agent.rollout import RolloutConfig, RolloutEngine, RolloutStats
from skillsd_jax.agent.rows import Rows, build_rows, row_advantages, token_advantages

__all__ = ["Episode", "PromptBuilder", "PromptConfig", "RolloutConfig", "RolloutEngine", "RolloutStats", "Rows",
           "Turn", "build_rows", "privileged_block", "row_advantages", "stop_strings",
           "token_advantages"]
