"""A serving team's path, against a real `mlflow server` process on 127.0.0.1: a model registered by the
training side is pulled by alias into an EMPTY Bento store, containerized up to the build context, and
served with `behaviorflow serve` — then answers over HTTP exactly like the numpy reference."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import mlflow
import pytest

from components import registry
from components.packaging import build_bento, export_bento, save_bundle_to_store
from components.registry.tracking import log_folder, log_onnx_model
from tests.helpers import ROOT, free_port, running_server
from tests.tiny_bundle import embeddings, item_id, make_tiny_bundle, reference_top_k

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", (root / "artifacts").as_uri(),
    ]
    with running_server(command, dict(os.environ), root / "server.log", url, ready_path="/health", timeout=120):
        yield url


@pytest.fixture(scope="module")
def registered(mlflow_server, tmp_path_factory, monkeypatch_module):
    """The training side: bundle → Bento → MLflow run (bundle/, bento/*.bento, ONNX model) → version @champion."""
    monkeypatch_module.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    work = tmp_path_factory.mktemp("training-side")
    bundle = make_tiny_bundle(work / "bundle", n_items=30, dim=8, seed=3)
    model_tag = save_bundle_to_store(bundle)
    bento_tag = build_bento(model_tag)
    archive = export_bento(bento_tag, work / "model.bento")
    registry.configure(experiment="pull-test")
    with mlflow.start_run() as run:
        log_folder(bundle, "bundle")
        mlflow.log_artifact(str(archive), artifact_path="bento")
        uri = log_onnx_model(bundle / "model.onnx", {})
        with registry.pending_version(uri, run.info.run_id) as version:
            registry.finalize_version(version, {"bento_tag": bento_tag, "bento_model_tag": model_tag}, promote=True)
    return {"bento_tag": bento_tag, "model_tag": model_tag, "version": version}


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def serving_env(tmp_path, url: str) -> dict:
    """A serving team's machine: only the MLflow address, an empty Bento store of its own."""
    return {**os.environ, "MLFLOW_TRACKING_URI": url, "BENTOML_HOME": str(tmp_path / "bentoml"), "BEHAVIORFLOW_HOME": str(tmp_path / "state")}


def cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_pull_by_alias_into_an_empty_store_then_containerize_context(registered, mlflow_server, tmp_path):
    env = serving_env(tmp_path, mlflow_server)
    first = cli(env, "bento", "pull", "--alias", "champion")
    assert first.returncode == 0, first.stderr
    assert f"= version {registered['version']} = Bento {registered['bento_tag']} (imported into" in first.stdout
    listed = subprocess.run([sys.executable, "-m", "bentoml", "list", "-o", "json"], env=env, capture_output=True, text=True, cwd=ROOT)
    assert registered["bento_tag"] in listed.stdout
    again = cli(env, "bento", "pull", "--version", registered["version"])
    assert again.returncode == 0 and "(already in the local Bento store" in again.stdout

    context = tmp_path / "ctx"
    out = cli(env, "bento", "containerize", "--alias", "champion", "--context-only", str(context))
    assert out.returncode == 0, out.stderr
    dockerfile = (context / "env" / "docker" / "Dockerfile").read_text()
    assert "FROM" in dockerfile and "requirements" in (context / "env" / "python" / "requirements.txt").name
    requirements = (context / "env" / "python" / "requirements.txt").read_text().lower()
    assert "onnxruntime" in requirements and "torch" not in requirements
    assert any((context / "models").rglob("model.onnx"))  # the model travels inside the build context


def test_unknown_alias_is_one_line(registered, mlflow_server, tmp_path):
    out = cli(serving_env(tmp_path, mlflow_server), "bento", "pull", "--alias", "staging")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "has no alias 'staging'" in out.stderr and "@champion = version 1" in out.stderr


def test_serve_pulls_and_answers_like_the_reference(registered, mlflow_server, tmp_path):
    env = serving_env(tmp_path, mlflow_server)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "flows.cli", "serve", "--alias", "champion", "--port", str(port)]
    with running_server(command, env, tmp_path / "serve.log", url, timeout=120):
        history = [item_id(i) for i in (4, 9, 2)]
        reply = httpx.post(f"{url}/recommend", json={"history": history, "k": 5}, timeout=30).json()
        meta = httpx.get(f"{url}/metadata", timeout=30).json()
    want, _ = reference_top_k(embeddings(30, 8, 3), [4, 9, 2], 5, exclude_seen=True)
    assert [r["item_id"] for r in reply["items"]] == [item_id(i) for i in want]
    assert meta["bento_model_tag"] == registered["model_tag"]
    assert meta["alias"] == "champion"  # the alias `serve` resolved, passed to the service
