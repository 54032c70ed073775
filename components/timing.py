"""Timing engines against each other on a shared CPU, fairly."""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

from components.interrupts import raise_if_stopped


def timed_in_turns(engines: Sequence[Callable[[int], object]], calls: int, block: int) -> list[list[float]]:
    """Seconds per call of each engine, `calls` each, engine `e`'s i-th counted call being `engines[e](i)`.

    The engines take turns in blocks of `block` calls, the order rotating every round, and each block
    starts with one call (`engines[e](0)`) that is not counted. Not call by call: ONNX Runtime's worker
    threads keep spinning for a while after a call returns (`session.intra_op.allow_spinning`, on by
    default), so a call made right after another engine's shares the cores with them. Interleaved call
    by call, torch eager at batch 64, history 200, took ~55 ms against ~25 ms alone, and ONNX looked
    1.4-3.8x faster than it is. Rotating the blocks still spreads slow drift over every engine.
    """
    times: list[list[float]] = [[] for _ in engines]
    order = list(range(len(engines)))
    for round_ in range(math.ceil(calls / block)):
        shift = round_ % len(order)
        for e in order[shift:] + order[:shift]:
            engines[e](0)  # absorbs the previous engine's spinning threads; not counted
            for _ in range(min(block, calls - len(times[e]))):
                i = len(times[e])
                started = time.perf_counter()
                engines[e](i)
                times[e].append(time.perf_counter() - started)
    return times


class Stages:
    """Wall-clock seconds per named stage of a flow, for its summary: `with stages("train"): ...`."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self.clock = clock
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        raise_if_stopped()  # no stage starts after a stop signal whose interrupt was swallowed (components/interrupts.py)
        started = self.clock()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + self.clock() - started, 1)
