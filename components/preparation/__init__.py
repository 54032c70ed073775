"""Preparation: deduplicated, chronological per-user item sequences and a leakage-safe split."""

from components.preparation.prepare import SPLITS, EvalCases, PrepareConfig, PreparedData, check_leave_one_out, prepare, repeat_target_note, tied_target_note

__all__ = ["SPLITS", "EvalCases", "PrepareConfig", "PreparedData", "check_leave_one_out", "prepare", "repeat_target_note", "tied_target_note"]
