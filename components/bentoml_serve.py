"""Run BentoML's command line with a Prometheus folder of this server's own.

BentoML keeps the counters behind /metrics in one folder per BentoML home (`$BENTOML_HOME/prometheus_multiproc_dir`)
and empties it whenever a `bentoml serve` starts. Two servers on one host under one BentoML home (the champion
and a challenger side by side, or a second `serve` started by mistake on a port in use) therefore shared their
counts — each /metrics added up both servers' requests — and each start wiped the other's. `behaviorflow serve`
runs `bentoml serve` through this module instead, which gives the server `$BENTOML_HOME/behaviorflow-prometheus/
HOST-PID` (PID: this process, BentoML's arbiter), removes it when the server stops and, at start, the folders of
servers on this host that have ended without removing theirs (kill -9).

    python -I components/bentoml_serve.py serve TAG [ARG ...]      # as `bentoml serve TAG [ARG ...]`

Run as a file in isolated mode, like components/lifetime.py, which runs it: it imports only BentoML.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

FOLDER = "behaviorflow-prometheus"


def metrics_folder(bentoml_home: Path, pid: int | None = None) -> Path:
    """The Prometheus folder of the server whose arbiter is `pid` (this process by default)."""
    return bentoml_home / FOLDER / f"{socket.gethostname()}-{os.getpid() if pid is None else pid}"


def remove_ended(bentoml_home: Path) -> None:
    """Remove the folders of this host's servers whose process has ended."""
    host = socket.gethostname()
    for folder in (bentoml_home / FOLDER).glob(f"{host}-*"):
        pid = folder.name[len(host) + 1 :]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    """components.registry.repair.pid_alive's first answer (without its zombie check): that module cannot be
    imported here, run as a file in isolated mode, and a zombie's folder only waits for the next start."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def main(argv: list[str]) -> int:
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml_cli.cli import cli

    home = Path(BentoMLContainer.bentoml_home.get())
    remove_ended(home)
    folder = metrics_folder(home)
    # Read by BentoML when `serve` starts: it empties this folder instead of the shared one and hands it to the
    # service workers as PROMETHEUS_MULTIPROC_DIR.
    BentoMLContainer.prometheus_multiproc_dir.set(str(folder))
    try:
        return cli.main(args=argv, prog_name="bentoml", standalone_mode=True)
    except SystemExit as done:  # click ends the command this way, also on success
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
