"""Preparation: deduplicated, chronological per-user item sequences and a leakage-safe split."""

from components.preparation.prepare import SPLITS, EvalCases, PrepareConfig, PreparedData, prepare

__all__ = ["SPLITS", "EvalCases", "PrepareConfig", "PreparedData", "prepare"]
