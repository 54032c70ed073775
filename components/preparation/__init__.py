"""Preparation: deduplicated, chronological per-user item sequences and a leakage-safe split."""

from components.preparation.prepare import PrepareConfig, PreparedData, prepare

__all__ = ["PrepareConfig", "PreparedData", "prepare"]
