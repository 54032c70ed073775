"""Serving in three layers, against a tiny real ONNX bundle and an independent numpy reference:

1. the Bento service class in-process (ranking, k, exclusion, truncation, errors, start-up checks);
2. a real `bentoml serve` process, called with `bentoml.SyncHTTPClient` and raw HTTP (bad payloads → 4xx);
3. packaging: bundle → Bento model → a slim Bento → a `.bento` archive.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import bentoml
import httpx
import numpy as np
import pydantic
import pytest
from bentoml.exceptions import BentoMLException, InvalidArgument, NotFound

from components.errors import BehaviorflowError
from components.packaging import bento_requirements, build_bento, export_bento, save_bundle_to_store
from serving.contract import MODEL_TAG_ENV
from serving import contract
from tests.helpers import ROOT, free_port, running_server
from tests.tiny_bundle import (
    MAX_LEN,
    REGISTRY_VERSION,
    embeddings,
    item_id,
    make_tiny_bundle,
    reference_top_k,
)

N_ITEMS, DIM, SEED = 30, 8, 0
TRAINING_STACK = ("torch", "transformers", "prefect", "mlflow", "great-expectations", "great_expectations",
                  "pandas")
SCORE_TOL = 1e-5


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("bundle"), n_items=N_ITEMS, dim=DIM, seed=SEED)


@pytest.fixture(scope="module")
def table() -> np.ndarray:
    return embeddings(N_ITEMS, DIM, SEED)


@pytest.fixture(scope="module")
def users(bundle_dir) -> dict[str, list[str]]:
    return json.loads((bundle_dir / contract.USERS_FILE).read_text())


@pytest.fixture(scope="module")
def model_tag(bundle_dir) -> str:
    return save_bundle_to_store(bundle_dir, labels={"source": "tests"}, metadata={"data_fingerprint": "abc"})


def load_service(tag: str):
    """A fresh import of serving.service bound to `tag` (the model is picked at import), instantiated."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(MODEL_TAG_ENV, tag)
        mp.delitem(sys.modules, "serving.service", raising=False)
        module = importlib.import_module("serving.service")
        return module.Recommender()


@pytest.fixture(scope="module")
def service(model_tag):
    return load_service(model_tag)


def expected(table, history_ids: list[str], k: int, exclude_seen: bool) -> tuple[list[str], np.ndarray]:
    top, scores = reference_top_k(table, [int(i[1:]) for i in history_ids], k, exclude_seen)
    return [item_id(i) for i in top], scores


def assert_matches(response: dict, table, history_ids: list[str], k: int, exclude_seen: bool) -> None:
    want_ids, want_scores = expected(table, history_ids, k, exclude_seen)
    got_ids = [row["item_id"] for row in response["items"]]
    assert got_ids == want_ids
    np.testing.assert_allclose([row["score"] for row in response["items"]], want_scores, atol=SCORE_TOL)
    assert [row["title"] for row in response["items"]] == [f"Item {int(i[1:])}" for i in want_ids]
    assert response["model_version"] == REGISTRY_VERSION


# ---------------------------------------------------------------------------------------- in-process


@pytest.mark.parametrize(
    "history, k, exclude_seen",
    [
        (["i001"], 1, True),
        (["i003", "i005", "i007"], 10, True),
        (["i003", "i005", "i007"], 10, False),
        (["i002", "i002", "i009", "i004"], 5, True),  # a repeated item counts twice in the mean
        ([item_id(i) for i in range(1, 26)], 30, True),  # > max_len: items before the window stay excluded
    ],
)
def test_recommend_by_history_matches_reference(service, table, history, k, exclude_seen):
    response = service.recommend(history=history, k=k, exclude_seen=exclude_seen).model_dump()
    assert_matches(response, table, history, k, exclude_seen)


def test_recommend_by_user_matches_reference(service, table, users):
    for user, history in users.items():
        response = service.recommend(user_id=user, k=7).model_dump()
        assert_matches(response, table, history, 7, exclude_seen=True)


def test_history_is_truncated_to_max_len(service, table, users):
    history = users["u_long"]
    assert len(history) > MAX_LEN
    response = service.recommend(history=history, k=5, exclude_seen=False).model_dump()
    assert_matches(response, table, history, 5, exclude_seen=False)
    # The check above could not tell truncation apart unless the whole history ranks differently.
    whole, _ = reference_top_k(table, [int(i[1:]) for i in history], 5, False, max_len=10_000)
    assert [int(r["item_id"][1:]) for r in response["items"]] != whole


def test_exclude_seen_removes_exactly_the_history(service):
    history = ["i001", "i002", "i010", "i002"]
    everything = service.recommend(history=history, k=N_ITEMS, exclude_seen=False).items
    unseen = service.recommend(history=history, k=N_ITEMS, exclude_seen=True).items
    assert sorted(r.item_id for r in everything) == [item_id(i) for i in range(1, N_ITEMS + 1)]
    assert {r.item_id for r in unseen} == {r.item_id for r in everything} - set(history)
    assert all(np.isfinite(r.score) for r in unseen)  # excluded items never fill the list with -inf


def test_default_k_and_bounds(service):
    default_k = contract.RecommendRequest.model_fields["k"].default
    assert len(service.recommend(history=["i001"]).items) == default_k
    assert len(service.recommend(history=["i001"], k=3).items) == 3
    with pytest.raises(pydantic.ValidationError, match="greater than or equal to 1"):
        service.recommend(history=["i001"], k=0)
    with pytest.raises(pydantic.ValidationError, match="exactly one of 'user_id' or 'history'"):
        service.recommend(user_id="u0", history=["i001"])


def test_unknown_items_are_listed(service):
    with pytest.raises(InvalidArgument) as err:
        service.recommend(history=["x", "i001", "y", "x"])
    assert err.value.error_code == 400
    assert str(err.value) == (
        f"history: unknown item ids ['x', 'y'] (not in the model's catalog of {N_ITEMS} items)"
    )
    many = [f"unknown{i}" for i in range(25)]
    with pytest.raises(InvalidArgument, match=r"\['unknown0', .*'unknown19'\] and 5 more \(not in"):
        service.recommend(history=many)


def test_unknown_user_is_not_found(service):
    with pytest.raises(NotFound, match="unknown user 'ghost'") as err:
        service.recommend(user_id="ghost")
    assert err.value.error_code == 404


def test_metadata(service, model_tag):
    meta = service.metadata()
    assert meta["model_tag"] == model_tag
    assert meta["model_version"] == REGISTRY_VERSION
    assert meta["n_items"] == N_ITEMS
    assert meta["manifest"]["max_len"] == MAX_LEN and meta["manifest"]["data_fingerprint"] == "abc"


def test_sample_request_is_valid(service):
    body = (ROOT / "serving" / "sample_request.json").read_text()
    request = contract.RecommendRequest.model_validate_json(body)
    assert len(service.recommend(**request.model_dump()).items) == request.k


@pytest.mark.parametrize(
    "keep_items, users, message",
    [
        (N_ITEMS - 3, {"u0": ["i001"]}, r"graph returns 30 items per row, but items.json lists 27 items"),
        (N_ITEMS, {"u0": ["i001", "i999"]}, r"users.json mentions 1 item ids missing .* \(e.g. \['i999'\]\)"),
    ],
)
def test_inconsistent_bundle_fails_at_start_up(tmp_path, keep_items, users, message):
    bundle = make_tiny_bundle(tmp_path / "bundle", n_items=N_ITEMS, dim=DIM, seed=SEED)
    items = json.loads((bundle / contract.ITEMS_FILE).read_text())
    (bundle / contract.ITEMS_FILE).write_text(json.dumps(items[:keep_items]))
    (bundle / contract.USERS_FILE).write_text(json.dumps(users))
    with pytest.raises(ValueError, match=message):
        load_service(save_bundle_to_store(bundle))


def test_service_imports_no_training_stack():
    probe = "import sys, serving.service; print([m for m in sys.argv[1:] if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", probe, *TRAINING_STACK, "components"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---------------------------------------------------------------------------------------- real server


@pytest.fixture(scope="module")
def server(model_tag, tmp_path_factory):
    """One `bentoml serve` process for the module; yields its base URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "serve.log"
    env = {**os.environ, MODEL_TAG_ENV: model_tag}
    command = [sys.executable, "-m", "bentoml", "serve", "serving.service:Recommender", "--host", "127.0.0.1", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    with running_server(command, env, log, url) as seconds:
        print(f"bentoml serve ready in {seconds:.1f} s")
        yield url


def test_server_with_bentoml_client(server, table, users):
    with bentoml.SyncHTTPClient(server) as client:
        by_history = client.recommend(history=["i003", "i005", "i007"], k=10, exclude_seen=True)
        by_user = client.recommend(user_id="u2", k=4)
        with pytest.raises(BentoMLException, match=r"unknown item ids \['nope'\]") as err:
            client.recommend(history=["nope"])
    assert_matches(by_history, table, ["i003", "i005", "i007"], 10, True)
    assert_matches(by_user, table, users["u2"], 4, True)
    assert err.value.error_code == 400


def test_server_with_raw_http(server, table, model_tag):
    history = [item_id(i) for i in np.random.default_rng(3).integers(1, N_ITEMS + 1, size=500)]
    response = httpx.post(f"{server}/recommend", json={"history": history, "k": 3, "exclude_seen": False})
    assert response.status_code == 200, response.text
    assert_matches(response.json(), table, history, 3, False)
    meta = httpx.get(f"{server}/metadata")
    assert meta.status_code == 200 and meta.json()["model_tag"] == model_tag


@pytest.mark.parametrize(
    "body, status, needles",
    [
        ({"history": ["i001"], "k": 0}, 400, ['"k"', "greater than or equal to 1"]),
        ({"history": ["i001"], "k": 101}, 400, ['"k"', "less than or equal to 100"]),
        ({"history": ["i001"], "k": "ten"}, 400, ['"k"', "valid integer"]),
        ({"user_id": "u0", "history": ["i001"]}, 400, ["exactly one of 'user_id' or 'history'"]),
        ({}, 400, ["exactly one of 'user_id' or 'history'"]),
        ({"history": []}, 400, ["'history' is empty"]),
        ({"history": "i001"}, 400, ['"history"', "valid array"]),
        ({"history": [1, 2]}, 400, ['"history"', "valid string"]),
        ({"user_id": "u0", "exclude_seen": "maybe"}, 400, ['"exclude_seen"', "valid boolean"]),
        ({"history": ["nope", "i001", "zz"]}, 400, ["history: unknown item ids ['nope', 'zz']", "30 items"]),
        ({"user_id": "ghost"}, 404, ["user_id: unknown user 'ghost'"]),
        ("{not json", 400, ["Invalid JSON"]),
        ("[1, 2]", 400, ["Input should be an object"]),
    ],
)
def test_server_rejects_bad_payloads(server, body, status, needles):
    if isinstance(body, str):
        headers = {"content-type": "application/json"}
        response = httpx.post(f"{server}/recommend", content=body, headers=headers)
    else:
        response = httpx.post(f"{server}/recommend", json=body)
    assert response.status_code == status, response.text
    for needle in needles:
        assert needle in response.text


# ---------------------------------------------------------------------------------------- packaging


def test_save_bundle_to_store(model_tag, bundle_dir):
    model = bentoml.models.get(model_tag)
    assert model.tag.name == "behaviorflow-recommender"
    assert model.info.labels == {"source": "tests"} and model.info.metadata == {"data_fingerprint": "abc"}
    for name in (contract.MODEL_FILE, contract.ITEMS_FILE, contract.USERS_FILE, contract.MANIFEST_FILE):
        assert Path(model.path_of(name)).read_bytes() == (bundle_dir / name).read_bytes()


def test_save_bundle_rejects_incomplete_bundle(tmp_path):
    (tmp_path / contract.MODEL_FILE).write_bytes(b"")
    with pytest.raises(BehaviorflowError, match=r"missing \['items.json', 'manifest.json'\]"):
        save_bundle_to_store(tmp_path)


@pytest.fixture(scope="module")
def bento_tag(model_tag):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(MODEL_TAG_ENV, "someone-elses-model:1")
        tag = build_bento(model_tag, labels={"registry_version": "7"}, version="t1")
        assert os.environ[MODEL_TAG_ENV] == "someone-elses-model:1"  # restored
    return tag


def test_bento_is_slim_and_records_the_model(bento_tag, model_tag):
    assert bento_tag == "behaviorflow_recommender:t1"
    requirements = bento_requirements(bento_tag)
    names = [req.split("==")[0].split(">")[0].split("<")[0].strip().lower() for req in requirements]
    assert "onnxruntime==1.32.0" in requirements
    assert not set(names) & set(TRAINING_STACK), requirements
    bento = bentoml.bentos.get(bento_tag)
    assert [str(m.tag) for m in bento.info.all_models] == [model_tag]
    assert bento.info.labels["registry_version"] == "7"
    src = Path(bento.path) / "src"
    files = sorted(p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file())
    assert {"serving/service.py", "serving/contract.py", "serving/sample_request.json"} <= set(files)
    packaged = [f for f in files if f != "bentofile.yaml"]
    assert all(f.startswith("serving/") and f.endswith((".py", ".json")) for f in packaged), files


def test_export_bento(bento_tag, model_tag, tmp_path):
    path = export_bento(bento_tag, tmp_path / "out" / "recommender.bento")
    assert path == tmp_path / "out" / "recommender.bento" and path.stat().st_size > 0
    print(f".bento archive: {path.stat().st_size} bytes")
    with tarfile.open(path) as archive:
        names = archive.getnames()
    name, version = model_tag.split(":")
    assert any(n.endswith(f"models/{name}/{version}/{contract.MODEL_FILE}") for n in names), names
    assert any(n.endswith("src/serving/service.py") for n in names), names
