"""The deployment files in deploy/ — checked statically, and used for real end to end.

The e2e test does what docs/deploy.md tells an operator to do, on 127.0.0.1 and without mocks: start a
Prefect server, create the process work pool from deploy/work-pool-process.json, deploy
deploy/prefect.yaml with the CLI, trigger `retrain-on-demand` with a tiny config, let
`prefect worker start --run-once` execute it, then check the flow run through the Prefect API and
the new model version in the MLflow registry the worker was pointed at; then the same for
`add-items-on-demand` (two new items onto that version).

    python -m pytest tests/test_deployment.py -q -s        # about 2 minutes on 2 CPU cores
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from components import settings
from tests.helpers import ROOT, free_port, running_server, stop_process

DEPLOY = ROOT / "deploy"
PREFECT = [sys.executable, "-m", "prefect"]
FLOW_NAME = "behaviorflow-retrain"
POOL = "behaviorflow-cpu"

# OFFLINE_ENV entries the work pool deliberately leaves out (see the template's `env` description).
NOT_IN_POOL_ENV = {"PREFECT_LOGGING_LEVEL", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"}


# --- static checks: cheap, and they name the file and field that drifted ---


def test_prefect_yaml_declares_the_deployments():
    spec = yaml.safe_load((DEPLOY / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in spec["deployments"]}
    assert set(deployments) == {"retrain-nightly", "retrain-on-demand", "add-items-on-demand"}
    assert spec["pull"] == [{"prefect.deployments.steps.set_working_directory": {"directory": "{{ $BEHAVIORFLOW_REPO }}"}}]
    for name, deployment in deployments.items():
        path, _, function = deployment["entrypoint"].partition(":")
        assert f"def {function}(" in (ROOT / path).read_text(), f"{name}: entrypoint {deployment['entrypoint']} not found"
        assert deployment["work_pool"]["name"] == POOL
        assert deployment["parameters"] == ({} if name == "add-items-on-demand" else {"config": {}})
    assert deployments["retrain-nightly"]["schedules"] == [{"cron": "0 3 * * *", "timezone": "UTC", "active": True}]
    assert deployments["retrain-on-demand"]["schedules"] == []


def test_work_pool_template_keeps_runs_offline():
    template = json.loads((DEPLOY / "work-pool-process.json").read_text())
    variables = template["variables"]["properties"]
    expected = {k: v for k, v in settings.OFFLINE_ENV.items() if k not in NOT_IN_POOL_ENV}
    assert variables["env"]["default"] == expected
    placeholders = set(re.findall(r"{{\s*(\w+)\s*}}", json.dumps(template["job_configuration"])))
    assert placeholders <= set(variables), f"undeclared job variables: {placeholders - set(variables)}"


def test_compose_and_kubernetes_files_parse():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert set(compose["services"]) == {"mlflow", "prefect-server", "prefect-worker"}
    worker_env = compose["services"]["prefect-worker"]["environment"]
    assert worker_env["BEHAVIORFLOW_REPO"] == "/app"
    assert worker_env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert worker_env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"

    docs = list(yaml.safe_load_all((DEPLOY / "k8s" / "recommender.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"Deployment", "Service"}
    container = kinds["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].startswith(f"{settings.BENTO_SERVICE_NAME}:")
    assert container["ports"][0]["containerPort"] == 3000
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["resources"]["limits"]["cpu"] == "2"
    service = kinds["Service"]["spec"]
    assert service["selector"] == kinds["Deployment"]["spec"]["selector"]["matchLabels"]
    assert service["ports"][0]["targetPort"] == 3000


# --- end to end: server, work pool, deploy, run, worker, registry ---


def _tail(path: Path, chars: int = 6000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


def _prefect(args: list[str], env: dict, log: Path, timeout: float = 120) -> str:
    """Run a prefect CLI command, fail with its output when it fails, return its stdout."""
    result = subprocess.run([*PREFECT, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    with log.open("a") as out:
        out.write(f"$ prefect {' '.join(args)}\n{result.stdout}{result.stderr}\n")
    assert result.returncode == 0, f"prefect {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture
def prefect_server(tmp_path):
    """A real Prefect server on a free 127.0.0.1 port with its own SQLite database; yields its API URL."""
    port = free_port()
    env = os.environ | settings.OFFLINE_ENV | {"PREFECT_HOME": str(tmp_path / "prefect-server")}
    env.pop("PREFECT_API_URL", None)
    api = f"http://127.0.0.1:{port}/api"
    # No UI (nothing looks at it); no scheduler, so the nightly schedule creates no runs here.
    command = [*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui", "--no-scheduler"]
    # ~20 s on a fresh database, more on a busy machine
    with running_server(command, env, tmp_path / "prefect-server.log", api, ready_path="/health", timeout=120, cwd=tmp_path):
        yield api


def _deployed_run(prefect_server: str, tmp_path: Path, config: dict) -> tuple[dict, Path, str, str]:
    """The process work pool from deploy/, the deployments of deploy/prefect.yaml, and a run of retrain-on-demand with
    `config`, created on the Prefect server (a worker picks it up). Returns (the worker's environment, the CLI log, the
    flow run's id, the MLflow tracking URI)."""
    # The worker's environment is what an operator sets on the worker host; the work pool template
    # adds the offline defaults on top for every flow run.
    home = tmp_path / "behaviorflow-home"
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = os.environ | settings.OFFLINE_ENV | {
        "PREFECT_API_URL": prefect_server,
        "PREFECT_HOME": str(tmp_path / "prefect-client"),
        "PREFECT_LOGGING_LEVEL": "INFO",  # the worker log shows the flow run's progress
        "BEHAVIORFLOW_REPO": str(ROOT),
        "BEHAVIORFLOW_HOME": str(home),
        "BENTOML_HOME": str(home / "bentoml"),
        "MLFLOW_TRACKING_URI": tracking_uri,
    }
    log = tmp_path / "cli.log"
    _prefect(["work-pool", "create", POOL, "--type", "process", "--base-job-template", str(DEPLOY / "work-pool-process.json")], env, log)
    _prefect(["--no-prompt", "deploy", "--prefect-file", "deploy/prefect.yaml", "--all"], env, log)
    out = _prefect(["deployment", "run", f"{FLOW_NAME}/retrain-on-demand", "--params", json.dumps({"config": config})], env, log)
    return env, log, re.search(r"UUID:\s*([0-9a-f-]{36})", out).group(1), tracking_uri


@pytest.mark.e2e
def test_deploy_run_on_a_process_worker_and_register(prefect_server, tmp_path):
    from components.data.sample import SampleConfig, write_sample

    events, items = write_sample(tmp_path / "data", SampleConfig(n_users=200, series_per_category=2))
    home = tmp_path / "behaviorflow-home"
    config = {
        "data": {"events": str(events), "items": str(items)},
        "train": {"max_epochs": 2, "progress": False},
        "model": {"d_model": 32, "n_layers": 1, "n_heads": 1},
        "export": {"probe_size": 32},
    }
    env, log, flow_run_id, tracking_uri = _deployed_run(prefect_server, tmp_path, config)
    worker_log = tmp_path / "worker.log"
    _run_once(env, tmp_path, worker_log)

    # The flow run, as the Prefect API sees it.
    run = httpx.get(f"{prefect_server}/flow_runs/{flow_run_id}", timeout=10).json()
    assert run["state"]["type"] == "COMPLETED", f"flow run {flow_run_id}: {run['state']}\n{_tail(worker_log)}"
    assert run["parameters"] == {"config": config}
    # The flow's own lines reach the run's logs in the UI (stages, epochs, the gate), not only Prefect's.
    logs = httpx.post(f"{prefect_server}/logs/filter", json={"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200}, timeout=10).json()
    messages = [entry["message"] for entry in logs]
    for expected in ("[1/9] load and validate data", "[6/9] gate", "[8/9] package the Bento and [9/9] register in MLflow"):
        assert expected in messages, messages
    assert any(m.startswith("MLflow run ") and tracking_uri in m for m in messages) and any(m.startswith("epoch 2  loss") for m in messages)
    # What the run decided, in the UI: its Markdown artifact, attached to this flow run.
    artifacts = httpx.post(f"{prefect_server}/artifacts/filter", json={"artifacts": {"key": {"any_": ["retrain-summary"]}}}, timeout=10).json()
    assert [a["flow_run_id"] for a in artifacts] == [flow_run_id] and artifacts[0]["type"] == "markdown"
    assert "registered **behaviorflow-recommender version 1** — aliases: challenger, champion" in artifacts[0]["data"]
    deployments = httpx.post(f"{prefect_server}/deployments/filter", json={}, timeout=10).json()
    nightly = next(d for d in deployments if d["name"] == "retrain-nightly")
    assert [s["schedule"]["cron"] for s in nightly["schedules"]] == ["0 3 * * *"]

    # The registry the worker was pointed at: version 1, challenger and (gate passed) champion.
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    versions = client.search_model_versions(f"name='{settings.REGISTERED_MODEL_NAME}'")
    assert [str(v.version) for v in versions] == ["1"]
    for alias in (settings.CHALLENGER_ALIAS, settings.CHAMPION_ALIAS):
        assert str(client.get_model_version_by_alias(settings.REGISTERED_MODEL_NAME, alias).version) == "1"
    # ...and the Bento went into the worker's BENTOML_HOME, not the default ~/bentoml.
    assert list((home / "bentoml" / "bentos" / settings.BENTO_SERVICE_NAME).iterdir())

    # The add-items deployment on the same worker: two new items onto the champion, as version 2 (challenger).
    new_items = tmp_path / "new_items.csv"
    new_items.write_text("item_id,title,category\nNEW-1,Alpenrock hiking boot Atlas 9,hiking boots\nNEW-2,Fernway plant Falcon 9,indoor plants\n")
    out = _prefect(["deployment", "run", "behaviorflow-add-items/add-items-on-demand", "--params", json.dumps({"items": str(new_items)})], env, log)
    add_run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", out).group(1)
    _run_once(env, tmp_path, tmp_path / "worker-add-items.log")
    run = httpx.get(f"{prefect_server}/flow_runs/{add_run_id}", timeout=10).json()
    assert run["state"]["type"] == "COMPLETED", f"flow run {add_run_id}: {run['state']}\n{_tail(tmp_path / 'worker-add-items.log')}"
    added = client.get_model_version_by_alias(settings.REGISTERED_MODEL_NAME, settings.CHALLENGER_ALIAS)
    assert str(added.version) == "2" and added.tags["added_items_to"] == f"{settings.REGISTERED_MODEL_NAME}/1"
    assert str(client.get_model_version_by_alias(settings.REGISTERED_MODEL_NAME, settings.CHAMPION_ALIAS).version) == "1"


def _run_once(env: dict, cwd: Path, worker_log: Path, meanwhile=None, timeout_s: float = 360) -> None:
    """A process worker that picks up one scheduled flow run, runs it and exits; `meanwhile(worker)` runs as soon as it
    has started, and the worker then has `timeout_s` seconds to end."""
    with worker_log.open("w") as wl:
        worker = subprocess.Popen(
            [*PREFECT, "worker", "start", "--pool", POOL, "--run-once"],
            cwd=cwd, env=env, stdout=wl, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        if meanwhile is not None:
            meanwhile(worker)
        worker.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker did not end the flow run within {timeout_s:.0f} s:\n{_tail(worker_log)}")
    finally:
        stop_process(worker)


@pytest.mark.e2e
def test_a_flow_run_cancelled_from_prefect_ends_its_mlflow_run_killed(prefect_server, tmp_path):
    """A cancellation from Prefect (`prefect flow-run cancel`, the UI's Cancel): the worker sends the flow-run process
    SIGTERM, which Prefect's handler turns into TerminationSignal. Before, the MLflow run ended FAILED like any crash;
    now it ends KILLED with the `interrupted` tag, as Ctrl-C leaves it, and the flow run is Cancelled."""
    from components.data.sample import SampleConfig, write_sample

    events, items = write_sample(tmp_path / "data", SampleConfig(n_users=200, series_per_category=2))
    config = {"data": {"events": str(events), "items": str(items)}, "train": {"max_epochs": 200, "patience": 200, "progress": False},
              "model": {"d_model": 32, "n_layers": 1, "n_heads": 1}}  # still training when the cancel comes
    env, log, flow_run_id, tracking_uri = _deployed_run(prefect_server, tmp_path, config)
    worker_log = tmp_path / "worker.log"

    def cancel_in_training(worker) -> None:
        deadline = time.monotonic() + 300
        while not re.search(r"epoch 2  loss", _tail(worker_log, 100_000)):
            assert worker.poll() is None, f"the worker exited {worker.returncode} before training:\n{_tail(worker_log)}"
            assert time.monotonic() < deadline, f"no training epoch within 5 minutes:\n{_tail(worker_log)}"
            time.sleep(0.5)
        _prefect(["flow-run", "cancel", flow_run_id], env, log)

    _run_once(env, tmp_path, worker_log, meanwhile=cancel_in_training, timeout_s=120)  # 120 s after the cancel, at most

    run = httpx.get(f"{prefect_server}/flow_runs/{flow_run_id}", timeout=10).json()
    assert run["state"]["type"] == "CANCELLED", f"flow run {flow_run_id}: {run['state']}\n{_tail(worker_log)}"
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(settings.EXPERIMENT_NAME).experiment_id])
    assert [r.info.status for r in runs] == ["KILLED"], f"{[r.info.status for r in runs]}\n{_tail(worker_log)}"
    assert runs[0].data.tags["interrupted"].startswith("by SIGTERM at 20")
    assert client.search_model_versions() == []
