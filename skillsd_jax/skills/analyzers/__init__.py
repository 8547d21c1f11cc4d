"""Deterministic per-environment episode analyzers used by the rule summarizer."""

from skillsd_jax.skills.analyzers.common import Analysis, Analyzer
from skillsd_jax.skills.analyzers.generic import GenericAnalyzer
from skillsd_jax.skills.analyzers.sokoban import SokobanAnalyzer, SokobanOracleAnalyzer

__all__ = ["Analysis", "Analyzer", "GenericAnalyzer", "SokobanAnalyzer", "SokobanOracleAnalyzer"]
