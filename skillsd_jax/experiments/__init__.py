"""Experiment sweeps: every method x seed at one budget, resumable, aggregated into a results page."""

from skillsd_jax.experiments.spec import EXPERIMENTS, Experiment, get_experiment
from skillsd_jax.experiments.runner import run_experiment

__all__ = ["EXPERIMENTS", "Experiment", "get_experiment", "run_experiment"]
