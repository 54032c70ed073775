"""Errors a user can act on. The CLI prints them as one line (no traceback unless --debug)."""

from __future__ import annotations


class BehaviorflowError(Exception):
    """A mistake in input or configuration: the message names what is wrong, where, and what to do."""


class ConfigFieldError(BehaviorflowError):
    """One configuration field has a value it cannot take; `field` names it (so a CLI can name its flag)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class DataContractError(BehaviorflowError):
    """Input data does not follow the data contract (missing file, column, unparseable values)."""


class ValidationFailed(BehaviorflowError):
    """Great Expectations found data that breaks a suite; the flow stops before training."""

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report


class GateFailed(BehaviorflowError):
    """The candidate model is not good enough to promote; nothing was registered."""

    def __init__(self, message: str, summary: dict):
        super().__init__(message)
        self.summary = summary


class ParityFailed(BehaviorflowError):
    """The exported ONNX model does not reproduce the torch model; nothing was registered."""
