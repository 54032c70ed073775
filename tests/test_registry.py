"""All-or-nothing registration against a real MLflow SQLite store."""

from __future__ import annotations

import os

import mlflow
import pytest
from mlflow import MlflowClient

from components import registry, settings
from components.registry.tracking import log_onnx_model
from tests.tiny_bundle import make_tiny_bundle

NAME = "registry-test-model"


@pytest.fixture()
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    registry.configure(experiment="registry-test")
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    bundle = make_tiny_bundle(tmp_path / "bundle", n_items=5, dim=4)
    with mlflow.start_run() as run:
        uri = log_onnx_model(bundle / "model.onnx", {})
    return client, uri, run.info.run_id


def test_pending_version_then_finalize_sets_tags_and_aliases(store):
    client, uri, run_id = store
    with registry.pending_version(uri, run_id, name=NAME) as v1:
        aliases = registry.finalize_version(v1, {"bento_tag": "b:1"}, promote=True, name=NAME)
    assert aliases == ["challenger", "champion"]
    with registry.pending_version(uri, run_id, name=NAME) as v2:
        registry.finalize_version(v2, {"bento_tag": "b:2"}, promote=False, name=NAME)
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == v1 == "1"
    assert str(client.get_model_version_by_alias(NAME, "challenger").version) == v2 == "2"
    assert client.get_model_version(NAME, v2).tags["bento_tag"] == "b:2"
    assert registry.version_by_alias("champion", name=NAME).tags["promoted"] == "true"


def test_a_failure_inside_the_block_deletes_the_version_and_restores_aliases(store):
    client, uri, run_id = store
    with registry.pending_version(uri, run_id, name=NAME) as v1:
        registry.finalize_version(v1, {}, promote=True, name=NAME)
    with pytest.raises(RuntimeError, match="bento build failed"):
        with registry.pending_version(uri, run_id, name=NAME) as v2:
            registry.finalize_version(v2, {}, promote=True, name=NAME)  # aliases already moved to v2 ...
            raise RuntimeError("bento build failed")  # ... then packaging fails
    assert [str(v.version) for v in client.search_model_versions(f"name='{NAME}'")] == ["1"]
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
    assert str(client.get_model_version_by_alias(NAME, "challenger").version) == "1"


def test_no_champion_on_first_run(store, tmp_path):
    assert registry.find_champion(tmp_path, name=NAME) is None
    assert registry.version_by_alias(settings.CHAMPION_ALIAS, name=NAME) is None
