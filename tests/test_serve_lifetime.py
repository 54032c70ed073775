"""`behaviorflow serve` and the processes it starts (bentoml's arbiter, its service workers) end together:
whatever signal ends the pid a user started — kill -9 included — no server process is left holding the port.
Real processes: a tiny model registered in the session's MLflow SQLite store, its Bento in the local store,
and `behaviorflow serve` on a free 127.0.0.1 port."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import mlflow
import psutil
import pytest

from components import bentoml_serve, lifetime, registry
from components.packaging import build_bento, save_bundle_to_store
from components.registry.tracking import log_folder, log_onnx_model
from tests.helpers import ROOT, free_port
from tests.tiny_bundle import make_tiny_bundle

MODEL = "behaviorflow-lifetime-test"  # its own registered model: other tests of the session move the default one's aliases


@pytest.fixture(scope="module")
def registered(tmp_path_factory) -> str:
    """A tiny bundle → Bento (local store) → a registered version @champion of MODEL."""
    work = tmp_path_factory.mktemp("lifetime")
    bundle = make_tiny_bundle(work / "bundle", n_items=30, dim=8, seed=5)
    model_tag = save_bundle_to_store(bundle)
    bento_tag = build_bento(model_tag)
    registry.configure(experiment="lifetime-test")
    with mlflow.start_run() as active:
        log_folder(bundle, "bundle")
        uri = log_onnx_model(bundle / "model.onnx", {})
        with registry.pending_version(uri, active.info.run_id, name=MODEL) as version:
            registry.finalize_version(version, {"bento_tag": bento_tag, "bento_model_tag": model_tag}, promote=True, name=MODEL)
    return bento_tag


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # connections in TIME_WAIT do not count
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _serve(port: int, log) -> subprocess.Popen:
    command = [sys.executable, "-m", "flows.cli", "serve", "--model", MODEL, "--alias", "champion", "--port", str(port)]
    proc = subprocess.Popen(command, cwd=ROOT, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            pytest.fail(f"behaviorflow serve exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("behaviorflow serve not ready after 120 s")
        time.sleep(0.2)


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=["kill-9", "SIGTERM", "SIGINT"])
def test_serve_leaves_no_server_behind_whatever_ends_it(registered, tmp_path, signum):
    port = free_port()
    with (tmp_path / "serve.log").open("w") as log:
        proc = _serve(port, log)
    tree = psutil.Process(proc.pid).children(recursive=True)  # bentoml's arbiter and its workers
    try:
        assert tree, "behaviorflow serve started no process"
        os.kill(proc.pid, signum)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 15
        while (left := [p.pid for p in tree if _alive(p)]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert left == [], f"after {signum.name} of behaviorflow serve (pid {proc.pid}) these still run: {left}\n{(tmp_path / 'serve.log').read_text()[-2000:]}"
        assert _port_free(port), f"port {port} is still held after {signum.name} of behaviorflow serve"
    finally:
        for process in tree:  # what a failure left, so that it does not outlive the test
            if _alive(process):
                process.kill()


def test_the_workers_a_killed_arbiter_leaves_are_stopped_and_serve_exits_with_its_status(registered, tmp_path):
    """kill -9 of BentoML's arbiter itself: its workers, each in a session of its own, would run on holding the
    port; the supervisor they are handed to stops them and ends with the arbiter's status."""
    port = free_port()
    with (tmp_path / "serve.log").open("w") as log:
        proc = _serve(port, log)
    (arbiter,) = psutil.Process(proc.pid).children()
    workers = arbiter.children(recursive=True)
    try:
        assert workers, "the arbiter started no worker"
        arbiter.kill()
        assert proc.wait(timeout=30) == 128 + signal.SIGKILL
        assert [w.pid for w in workers if _alive(w)] == [], (tmp_path / "serve.log").read_text()[-2000:]
        assert _port_free(port), f"port {port} is still held after kill -9 of the arbiter"
    finally:
        for process in [arbiter, *workers]:
            if _alive(process):
                process.kill()


def _recommend_count(port: int, expected: float) -> float:
    """What the server's /metrics counts of /recommend requests answered 200: `expected` once it reads so, or
    what it reads after 5 s (the count is written as the response ends)."""
    deadline = time.monotonic() + 5
    while True:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        found = re.findall(r'^bentoml_service_request_total\{endpoint="/recommend",http_response_code="200",[^}]*\} (\S+)$', text, re.M)
        assert len(found) == 1, text[-2000:]
        if float(found[0]) == expected or time.monotonic() > deadline:
            return float(found[0])
        time.sleep(0.2)


def test_two_servers_under_one_bentoml_home_keep_their_own_metrics(registered, tmp_path):
    """BentoML keeps /metrics counts in one folder per BentoML home and empties it when a server starts: a second
    server zeroed the first's counts, and each /metrics added up both. Each `behaviorflow serve` has its own
    folder (components/bentoml_serve.py), removed when it stops; those of servers that died are removed at the next start."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    home = Path(BentoMLContainer.bentoml_home.get())
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    stale = bentoml_serve.metrics_folder(home, ended.pid)  # left by a server that was killed -9
    stale.mkdir(parents=True)
    (stale / "counter_1.db").write_bytes(b"x")
    ports, procs = (free_port(), free_port()), []
    try:
        with (tmp_path / "a.log").open("w") as log:
            procs.append(_serve(ports[0], log))
        assert not stale.exists()
        for _ in range(3):
            assert httpx.post(f"http://127.0.0.1:{ports[0]}/recommend", json={"history": [], "k": 2}).status_code == 200
        assert _recommend_count(ports[0], 3) == 3
        with (tmp_path / "b.log").open("w") as log:
            procs.append(_serve(ports[1], log))
        for _ in range(2):
            assert httpx.post(f"http://127.0.0.1:{ports[1]}/recommend", json={"history": [], "k": 2}).status_code == 200
        assert (_recommend_count(ports[0], 3), _recommend_count(ports[1], 2)) == (3, 2)
        folders = [bentoml_serve.metrics_folder(home, psutil.Process(p.pid).children()[0].pid) for p in procs]  # the arbiters'
        assert all(any(folder.iterdir()) for folder in folders), folders
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    assert [folder for folder in folders if folder.exists()] == []


def test_lifetime_stops_what_its_command_left_when_the_command_dies(tmp_path):
    """Without bentoml: a command that starts a process in a session of its own (as circus starts workers) and is
    then killed. The supervisor is handed the orphan, stops it, and exits 128 + 9."""
    script = ("import os, signal, subprocess, sys; "
              "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'], start_new_session=True); "
              "print(p.pid, flush=True); os.kill(os.getpid(), signal.SIGKILL)")
    proc = subprocess.Popen([sys.executable, "-I", lifetime.__file__, sys.executable, "-c", script], cwd=tmp_path,
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    orphan = psutil.Process(int(proc.stdout.readline()))
    try:
        assert proc.wait(timeout=30) == 128 + signal.SIGKILL
        assert not _alive(orphan)
    finally:
        if _alive(orphan):
            orphan.kill()


def test_the_child_of_lifetime_gets_sigterm_when_it_is_killed(tmp_path):
    """components.lifetime on its own: kill -9 of it ends its child, which would otherwise sleep on."""
    script = "import time; print('up', flush=True); time.sleep(300)"
    proc = subprocess.Popen([sys.executable, "-I", lifetime.__file__, sys.executable, "-c", script], cwd=tmp_path,
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout.readline() == "up\n"
    (child,) = psutil.Process(proc.pid).children()
    try:
        proc.kill()
        proc.wait(timeout=10)
        child.wait(timeout=10)  # raises psutil.TimeoutExpired while it sleeps on
    finally:
        if _alive(child):
            child.kill()


def test_lifetime_exits_with_the_status_of_its_command():
    assert lifetime.run([sys.executable, "-c", "raise SystemExit(3)"]) == 3
    assert lifetime.run([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"]) == 128 + signal.SIGTERM
