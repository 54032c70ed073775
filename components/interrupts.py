"""Ctrl-C that Python would drop. A KeyboardInterrupt raised while a weakref callback or a `__del__` runs cannot
propagate: Python prints 'Exception ignored in …' and goes on. torch's ONNX export frees many weakly referenced
objects: a Ctrl-C in `behaviorflow retrain`'s export stage was lost that way, and the run went on to register a
version and exit 0 (`benchmarks/interrupt_latency.py`, its one run that sent SIGINT there). `keep_interrupts()` makes such an interrupt count: the
main thread is interrupted again (`_thread.interrupt_main`, from another thread), and KeyboardInterrupt is raised in the
code it runs then, without the 'Exception ignored' traceback."""

from __future__ import annotations

import _thread
import sys
import time


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
