"""Progress of long steps: a bar on a terminal, log lines everywhere else.

A retraining flow mostly runs where nobody watches a terminal: a Prefect worker, cron, CI. There a
tqdm bar is either switched off (no TTY) or a smear of carriage returns in the log, and a ten-minute
embedding step looks like a hang. So off a terminal the same loop logs a line at most every `every_s`
seconds: how far, how fast, about how long is left.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


class LoggedProgress:
    """Iterates like tqdm (and takes set_postfix), but reports through `logger` every `every_s` seconds."""

    def __init__(self, iterable: Iterable[T], total: int, desc: str, unit: str, logger: logging.Logger, every_s: float, clock=time.monotonic):
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.logger, self.every_s, self.clock = logger, every_s, clock
        self.postfix: dict[str, object] = {}

    def set_postfix(self, **values: object) -> None:
        self.postfix = values

    def close(self) -> None:  # as tqdm's: a loop left early ends its bar (nothing to end in a log)
        pass

    def __iter__(self) -> Iterator[T]:
        start = last = self.clock()
        for done, item in enumerate(self.iterable, 1):
            yield item
            now = self.clock()
            if now - last >= self.every_s and done < self.total:
                last = now
                left = (self.total - done) * (now - start) / done
                extra = "".join(f", {k} {v}" for k, v in self.postfix.items())
                self.logger.info(
                    "%s: %d/%d (%d%%), %.3g %s/s, %s elapsed, ~%s left%s",
                    self.desc, done, self.total, 100 * done // self.total, done / (now - start), self.unit,
                    format_duration(now - start), format_duration(left), extra,
                )


class _Silent:
    def __init__(self, iterable):
        self.iterable = iterable

    def set_postfix(self, **values: object) -> None:
        pass

    def close(self) -> None:
        pass

    def __iter__(self):
        return iter(self.iterable)


def progress(iterable: Iterable[T], *, total: int, desc: str, unit: str, logger: logging.Logger, enabled: bool = True, every_s: float = 30.0):
    """tqdm on a terminal, LoggedProgress elsewhere, nothing when not `enabled`. All take set_postfix and close."""
    if not enabled:
        return _Silent(iterable)
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=False)
    return LoggedProgress(iterable, total, desc, unit, logger, every_s)


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
