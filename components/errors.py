"""Errors a user can act on. The CLI prints them as one line (no traceback unless --debug)."""

from __future__ import annotations

import errno


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


_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}  # no space left, quota exceeded, file-size limit (ulimit -f)
_FULL_TEXTS = (
    "no space left on device", "disk quota exceeded", "file too large", "database or disk is full",
    # torch.save's C++ writer on a short write: the stream's failure, then the zip writer's position check
    "file write failed", "basic_ios::clear: iostream error", "unexpected pos ",
)


def out_of_space(exc: BaseException | None) -> BaseException | None:
    """The exception in `exc`'s chain (causes and contexts) that says a disk or a file-size limit is full:
    an OSError with its errno, or a library's own words for it (SQLite's 'database or disk is full',
    torch's short-write messages), whatever wraps it (SQLAlchemy, MLflow, Prefect). None if there is none."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if (isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS) or any(text in str(exc).lower() for text in _FULL_TEXTS):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None
