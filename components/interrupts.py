"""Interrupts that stop a run cleanly: Ctrl-C (SIGINT), and SIGTERM and SIGHUP made to act like it.

SIGTERM is how operators stop a run: Kubernetes on pod deletion or eviction (SIGKILL follows after the pod's
terminationGracePeriodSeconds, 30 s by default), `docker stop`, a Prefect worker cancelling a flow run. Python's
default action for it kills the process at once, and the rollbacks that Ctrl-C runs never ran. While a Prefect flow
runs, Prefect's own SIGTERM handler raises `prefect.exceptions.TerminationSignal` instead, which ended the MLflow run
FAILED, after which Prefect re-sent the signal to the process's previous handler: Python's default, death.
`stop_on_termination()` installs a handler that raises `Terminated`, a KeyboardInterrupt: every `except
KeyboardInterrupt` cleanup (the MLflow run ended KILLED, a registration rolled back, the CLI's one line) runs for it
as for Ctrl-C; Prefect, in a flow, then hands it on to this handler. `stopped_by(exc)` names the signal of any of these.

An interrupt that some code swallows. Once in the six runs in which SIGTERM reached `behaviorflow retrain` in its
package and register stage (`benchmarks/results/interrupt_latency_sigterm_after*.json`), the exception it raised
vanished before MLflow registered the version (where was not found: no traceback, no 'Exception ignored'): the run went
on, registered version 1 and exited 0. `watch_stop_requests()` notes every SIGINT, SIGTERM and SIGHUP the process receives, whichever Python handler runs
for it, and `raise_if_stopped()` raises it again where going on would commit something: before a version is
registered or finalized, and as each stage of a flow starts.

Ctrl-C that Python would drop. A KeyboardInterrupt raised while a weakref callback or a `__del__` runs cannot
propagate: Python prints 'Exception ignored in …' and goes on. torch's ONNX export frees many weakly referenced
objects: a Ctrl-C in `behaviorflow retrain`'s export stage was lost that way, and the run went on to register a
version and exit 0 (`benchmarks/interrupt_latency.py`, its one run that sent SIGINT there). `keep_interrupts()` makes such an interrupt count: the
main thread is interrupted again (`_thread.interrupt_main`, from another thread, with the same signal), and the
exception is raised in the code it runs then, without the 'Exception ignored' traceback.

`held_signals()`: a rollback (a registration undone after the first Ctrl-C or SIGTERM) must not be cut short by a
second one, which left a version `in progress` with its run ended. Inside it, SIGINT, SIGTERM and SIGHUP are held
and the first is delivered when it ends."""

from __future__ import annotations

import _thread
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from typing import Iterator

TERMINATING = (signal.SIGTERM, signal.SIGHUP)  # stopped like Ctrl-C by stop_on_termination()


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where Ctrl-C raises KeyboardInterrupt (module docstring)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_terminated(signum: int, _frame) -> None:
    raise Terminated(signum)


def stop_on_termination() -> list[str]:
    """SIGTERM and SIGHUP raise `Terminated` in this process from now on (module docstring); a signal already ignored
    (SIG_IGN: `nohup` ignores SIGHUP) stays ignored, and one with a handler of its own keeps it. Call it on the main
    thread. Returns the names of the signals it now handles."""
    handled = []
    for signum in TERMINATING:
        if signal.getsignal(signum) is signal.SIG_DFL:
            signal.signal(signum, _raise_terminated)
            handled.append(signal.Signals(signum).name)
    return handled


def stopped_by(exc: BaseException) -> int | None:
    """The signal an exception stands for — SIGINT for KeyboardInterrupt (Ctrl-C), SIGTERM or SIGHUP for `Terminated`
    and for Prefect's TerminationSignal — or None when it is no interruption."""
    if isinstance(exc, Terminated):
        return exc.signum
    if isinstance(exc, KeyboardInterrupt):
        return signal.SIGINT
    prefect = sys.modules.get("prefect.exceptions")  # only Prefect raises it, so it is imported when it was raised
    if prefect is not None and isinstance(exc, getattr(prefect, "TerminationSignal", ())):
        return int(getattr(exc, "signal", signal.SIGTERM))
    return None


_stop_request: int | None = None  # the first stop signal this process received, once watch_stop_requests() runs


def watch_stop_requests() -> bool:
    """Note every SIGINT, SIGTERM and SIGHUP this process receives from now on (module docstring), through the
    interpreter's wakeup fd, to which its C-level handler writes each signal's number before any Python handler (ours,
    Prefect's, Ctrl-C's) runs. Call it on the main thread; False (nothing watched) when the wakeup fd is someone
    else's already (an asyncio event loop's signal handling)."""
    read, write = os.pipe()
    os.set_blocking(write, False)
    try:
        previous = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    except ValueError:  # not the main thread
        previous = None
    if previous != -1:
        if previous is not None:
            signal.set_wakeup_fd(previous)
        os.close(read)
        os.close(write)
        return False
    global _watch_fd
    _watch_fd = write
    threading.Thread(target=_note_stop_requests, args=(read,), name="behaviorflow-stop-requests", daemon=True).start()
    return True


_watch_fd: int | None = None  # the pipe's write end that watch_stop_requests() gave the interpreter


def _note_stop_requests(read: int) -> None:
    global _stop_request
    stops = {int(signal.SIGINT), *map(int, TERMINATING)}
    while data := os.read(read, 64):  # b"" once stop_watching() closes the write end
        if _stop_request is None:
            _stop_request = next((signum for signum in data if signum in stops), None)
    os.close(read)


def stop_watching() -> None:
    """Undo watch_stop_requests(): the interpreter's wakeup fd unset (if it is still ours), the watcher thread ended,
    and no stop request left to raise."""
    global _watch_fd, _stop_request
    if _watch_fd is None:
        return
    if signal.set_wakeup_fd(-1) not in (_watch_fd, -1):  # someone set theirs since: put it back
        signal.set_wakeup_fd(_watch_fd)
        return
    os.close(_watch_fd)
    _watch_fd, _stop_request = None, None


@contextmanager
def stopped_like_ctrl_c() -> Iterator[None]:
    """A command's: `stop_on_termination()` and `watch_stop_requests()` while the block runs, both undone when it ends
    (the previous SIGTERM and SIGHUP handlers, the wakeup fd, no stop request left), so that a process that runs
    commands one after another (the tests, a notebook calling the CLI's main) is left as it was."""
    previous = {signum: signal.getsignal(signum) for signum in TERMINATING}
    stop_on_termination()
    watch_stop_requests()
    try:
        yield
    finally:
        stop_watching()
        for signum, handler in previous.items():
            if handler is not None:
                signal.signal(signum, handler)


def raise_if_stopped() -> None:
    """Raise the interrupt a stop signal received earlier stands for (KeyboardInterrupt for SIGINT, `Terminated` for
    SIGTERM and SIGHUP), if one was and the process is still going: its exception was swallowed (module docstring).
    Call it where going on would commit something. A no-op unless watch_stop_requests() runs."""
    if _stop_request is not None:
        raise KeyboardInterrupt() if _stop_request == signal.SIGINT else Terminated(_stop_request)


def describe(signum: int) -> str:
    """'SIGINT (Ctrl-C)', 'SIGTERM', 'SIGHUP': for messages and the MLflow run's `interrupted` tag."""
    name = signal.Signals(signum).name
    return f"{name} (Ctrl-C)" if signum == signal.SIGINT else name


def _interrupt_main_soon(signum: int) -> None:
    time.sleep(0.05)  # by then the main thread has left the hook: the interrupt is raised in the code it runs
    _thread.interrupt_main(signum)  # runs the signal's Python handler: ours, Prefect's or Ctrl-C's


def _hook(unraisable) -> None:
    exc = unraisable.exc_value
    signum = stopped_by(exc) if isinstance(exc, BaseException) else None
    if signum is not None:
        # From another thread: interrupt_main() on this one would raise here, in the hook, where it is lost again.
        _thread.start_new_thread(_interrupt_main_soon, (signum,))
        return
    _previous(unraisable)


_previous = sys.unraisablehook


def keep_interrupts() -> None:
    """Install the hook (module docstring) for this process; idempotent."""
    global _previous
    if sys.unraisablehook is not _hook:
        _previous = sys.unraisablehook
        sys.unraisablehook = _hook


HELD = (signal.SIGINT, *TERMINATING)


@contextmanager
def held_signals(what: str) -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP while the block runs (`what`: a short account of it, e.g. "the registration's
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
