"""Run a command as a child process that cannot outlive this one, and pass SIGTERM, SIGINT and SIGHUP on to it.

`behaviorflow serve` hands over to this module to run `bentoml serve` (by exec: the same pid, with a bare
interpreter's memory instead of the CLI's ~230 MB of imports). Without it, kill -9 of `behaviorflow serve`
killed BentoML's arbiter, which had no chance to stop its service workers: they ran on as orphans, still
answering on the port, and the next `behaviorflow serve` on that port failed with 'Address already in use'.
Now the kernel sends the child (the arbiter) SIGTERM when this process dies, however it dies (prctl
PR_SET_PDEATHSIG, Linux only), and the arbiter stops its workers as it does on any SIGTERM.

    python -I components/lifetime.py COMMAND [ARG ...]      # exits with the command's status (128 + N for signal N)

Standard library only, so that it runs as a file in isolated mode and starts at once.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _die_with(parent: int):
    """A preexec_fn: the child gets SIGTERM when `parent` dies; if it died already, the child exits at once."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork, not in the child

    def preexec() -> None:
        if prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the parent died between fork and prctl: no signal will come
            os._exit(128 + signal.SIGTERM)

    return preexec


def run(command: list[str]) -> int:
    """Run `command` until it exits; its exit status (128 + N when signal N ended it)."""
    preexec = _die_with(os.getpid()) if sys.platform.startswith("linux") else None
    child = subprocess.Popen(command, preexec_fn=preexec)

    def forward(signum, _frame) -> None:
        child.send_signal(signum)  # a no-op once the child has exited

    for signum in FORWARDED:
        signal.signal(signum, forward)
    status = child.wait()
    return 128 - status if status < 0 else status


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python -I components/lifetime.py COMMAND [ARG ...]")
    sys.exit(run(sys.argv[1:]))
