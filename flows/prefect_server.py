"""The temporary Prefect API server of a local run, kept out of the terminal's Ctrl-C.

Without PREFECT_API_URL, Prefect runs a flow against a temporary API server: `uvicorn` in a child process
(prefect.server.api.server.SubprocessASGIServer), in behaviorflow's own process group. Ctrl-C in a terminal sends
SIGINT to that whole group, so the server stopped together with the flow, and the flow's last step — Prefect
reporting the run as Crashed through that server — retried the dead server for about 80 s, then ended in an
httpx.ConnectError traceback and exit code 1 instead of the one-line exit 130 (`behaviorflow retrain` on a
20,000-item catalog, Ctrl-C in the validation or the embedding stage: 86-88 s).

`start_outside_ctrl_c()` starts that server in a process group of its own, so that a terminal's SIGINT reaches
behaviorflow alone. It stops with behaviorflow as before: Prefect's atexit handler terminates it on every exit
that runs atexit, and the kernel sends it SIGTERM when behaviorflow dies without it (kill -9, the SIGHUP of a
closed terminal: prctl PR_SET_PDEATHSIG, Linux only), as components/lifetime.py does for `behaviorflow serve`.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading

log = logging.getLogger(__name__)


def _popen_in_own_group(*args, **kwargs) -> subprocess.Popen:
    if sys.platform.startswith("linux") and threading.current_thread() is threading.main_thread():
        # PR_SET_PDEATHSIG follows the thread that forks: only the main thread lives as long as this process.
        from components.lifetime import die_with

        kwargs.setdefault("preexec_fn", die_with(os.getpid()))
    return subprocess.Popen(*args, process_group=0, **kwargs)


class _Subprocess:
    """The `subprocess` module, but Popen starts a process group of its own."""

    Popen = staticmethod(_popen_in_own_group)

    def __getattr__(self, name: str):
        return getattr(subprocess, name)


def start_outside_ctrl_c() -> str | None:
    """Start the temporary Prefect API server a run without PREFECT_API_URL uses, in its own process group (module
    docstring), and return its API URL; None when a server is configured (PREFECT_API_URL), or when this Prefect
    does not start its temporary server the way this was written for (a warning; the server then starts as Prefect
    starts it). Call it on the main thread, before the flow: the flow's clients then find it running."""
    from prefect.settings import get_current_settings

    if get_current_settings().api.url:
        return None
    from prefect.server.api import server as prefect_server

    if getattr(prefect_server, "subprocess", None) is not subprocess or not hasattr(prefect_server.SubprocessASGIServer, "_run_uvicorn_command"):
        log.warning("prefect_server: Prefect's temporary API server is not started as expected; it stays in this process group, "
                    "and Ctrl-C may stop it before the run has recorded its end")
        return None
    # Prefect's own command line and environment, started with one more Popen argument: only that module's
    # `subprocess` name is replaced, and only while this call starts the server.
    prefect_server.subprocess = _Subprocess()
    try:
        server = prefect_server.SubprocessASGIServer()
        server.start()
    finally:
        prefect_server.subprocess = subprocess
    return server.api_url
