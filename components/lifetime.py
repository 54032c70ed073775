"""Run a command as a child process that cannot outlive this one, and pass SIGTERM, SIGINT and SIGHUP on to it.

`behaviorflow serve` hands over to this module to run `bentoml serve` (by exec: the same pid, with a bare
interpreter's memory instead of the CLI's ~230 MB of imports). Without it, kill -9 of `behaviorflow serve`
killed BentoML's arbiter, which had no chance to stop its service workers: they ran on as orphans, still
answering on the port, and the next `behaviorflow serve` on that port failed with 'Address already in use'.
Now the kernel sends the child (the arbiter) SIGTERM when this process dies, however it dies (prctl
PR_SET_PDEATHSIG, Linux only), and the arbiter stops its workers as it does on any SIGTERM.

The other way round too: when the arbiter itself dies without stopping its workers (kill -9 of it), they are
orphans, each in a session of its own (circus calls setsid), that would hold the port. This process is their
subreaper (prctl PR_SET_CHILD_SUBREAPER, Linux only): the kernel hands them to it rather than to init, and once
the arbiter has ended, it sends whatever it was handed SIGTERM, then SIGKILL after STOP_GRACE_S, and exits with
the arbiter's status.

    python -I components/lifetime.py COMMAND [ARG ...]      # exits with the command's status (128 + N for signal N)

Standard library only, so that it runs as a file in isolated mode and starts at once.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PR_SET_CHILD_SUBREAPER = 36
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
STOP_GRACE_S = 10.0  # how long orphans left by the command get to stop on SIGTERM before SIGKILL


def die_with(parent: int):
    """A preexec_fn: the child gets SIGTERM when `parent` dies; if it died already, the child exits at once."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork, not in the child

    def preexec() -> None:
        if prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the parent died between fork and prctl: no signal will come
            os._exit(128 + signal.SIGTERM)

    return preexec


def supervise(command: list[str]) -> int:
    """`run(command)` as this process's only job (the module run as a program): its subreaper, so that what the
    command leaves when it dies is stopped too (module docstring). Not for a process with children of its own:
    every process it has been handed when the command ends is stopped."""
    if not sys.platform.startswith("linux"):
        return run(command)
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # best effort: without it, as before
    status = run(command)
    _stop_orphans()
    return status


def run(command: list[str]) -> int:
    """Run `command` until it exits; its exit status (128 + N when signal N ended it)."""
    preexec = die_with(os.getpid()) if sys.platform.startswith("linux") else None
    child = subprocess.Popen(command, preexec_fn=preexec)

    def forward(signum, _frame) -> None:
        child.send_signal(signum)  # a no-op once the child has exited

    for signum in FORWARDED:
        signal.signal(signum, forward)
    status = child.wait()
    return 128 - status if status < 0 else status


def _children() -> list[int]:
    """The processes whose parent is this one (those it was handed as subreaper, once the command has ended)."""
    me, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rpartition(")")[2].split()
            except OSError:  # ended meanwhile
                continue
            if len(fields) > 1 and int(fields[1]) == me:
                found.append(int(entry))
    return found


def _stop_orphans() -> None:
    """SIGTERM to every process this one was handed, SIGKILL to those still there after STOP_GRACE_S; reaps them."""
    deadline, asked = time.monotonic() + STOP_GRACE_S, False
    while True:
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:  # reap what has ended, so that it no longer counts
                pass
        except ChildProcessError:  # no child at all
            return
        left = _children()
        if not left:
            return
        if not asked or time.monotonic() > deadline:
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL if asked else signal.SIGTERM)
                except ProcessLookupError:
                    pass
            asked = True
        time.sleep(0.1)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python -I components/lifetime.py COMMAND [ARG ...]")
    sys.exit(supervise(sys.argv[1:]))
