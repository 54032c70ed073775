"""Ctrl-C that Python would drop. A KeyboardInterrupt raised while a weakref callback or a `__del__` runs cannot
propagate: Python prints 'Exception ignored in …' and goes on. torch's ONNX export frees many weakly referenced
objects: a Ctrl-C in `behaviorflow retrain`'s export stage was lost that way, and the run went on to register a
version and exit 0 (`benchmarks/interrupt_latency.py`, its one run that sent SIGINT there). `keep_interrupts()` makes such an interrupt count: the
main thread is interrupted again (`_thread.interrupt_main`, from another thread), and KeyboardInterrupt is raised in the
code it runs then, without the 'Exception ignored' traceback.

`held_signals()` is the other half: a rollback (a registration undone after the first Ctrl-C) must not be cut
short by a second one, which left a version `in progress` with its run ended. Inside it, SIGINT and SIGTERM are
held and delivered when it ends."""

from __future__ import annotations

import _thread
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from typing import Iterator


def _interrupt_main_soon() -> None:
    time.sleep(0.05)  # by then the main thread has left the hook: the interrupt is raised in the code it runs
    _thread.interrupt_main()


def _hook(unraisable) -> None:
    if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
        # From another thread: interrupt_main() on this one would raise here, in the hook, where it is lost again.
        _thread.start_new_thread(_interrupt_main_soon, ())
        return
    _previous(unraisable)


_previous = sys.unraisablehook


def keep_interrupts() -> None:
    """Install the hook (module docstring) for this process; idempotent."""
    global _previous
    if sys.unraisablehook is not _hook:
        _previous = sys.unraisablehook
        sys.unraisablehook = _hook


HELD = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def held_signals(what: str) -> Iterator[None]:
    """Hold SIGINT and SIGTERM while the block runs (`what`: a short account of it, e.g. "the registration's
    rollback"), say so on stderr when one arrives, and deliver the first one held to the handler it would have
    met once the block ends. Only the main thread can set handlers: elsewhere the block runs unprotected."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []

    def hold(signum, _frame) -> None:
        if not held:
            os.write(2, f"{signal.Signals(signum).name} held until {what} has finished\n".encode())
        held.append(signum)

    previous = {}
    for signum in HELD:
        handler = signal.getsignal(signum)
        if handler is not None:  # None: set outside Python, and then it could not be put back
            previous[signum] = handler
            signal.signal(signum, hold)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if held:
            signal.raise_signal(held[0])
