"""Serving in three layers, against a tiny real ONNX bundle and an independent numpy reference:

1. the Bento service classes in-process (ranking, k, exclusion, truncation, `because`, /score
   probabilities, limits, errors, start-up checks, batching by length);
2. a real `bentoml serve` process, called with `bentoml.SyncHTTPClient` and raw HTTP (bad payloads → 4xx,
   concurrent requests batched and still exact);
3. packaging: bundle → Bento model → a slim Bento → a `.bento` archive.

The fuzzing of the served OpenAPI spec lives in tests/test_serving_fuzz.py.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import aiohttp
import bentoml
import httpx
import time

import numpy as np
import pydantic
import pytest
from bentoml.exceptions import BentoMLException, InvalidArgument, NotFound

from components.errors import BehaviorflowError
from components.packaging import bento_requirements, build_bento, export_bento, save_bundle_to_store
from serving.contract import MODEL_TAG_ENV
from serving import contract
from tests.helpers import ROOT, bentoml_serve, mapped_packages, server_workers
from tests.tiny_bundle import (
    CREATED_AT,
    MAX_LEN,
    MODEL_NAME,
    REGISTRY_VERSION,
    embeddings,
    item_id,
    make_tiny_bundle,
    reference_because,
    reference_popular,
    reference_probabilities,
    reference_top_k,
)

N_ITEMS, DIM, SEED = 30, 8, 0
TRAINING_STACK = ("torch", "transformers", "prefect", "mlflow", "great-expectations", "great_expectations",
                  "pandas")
SCORE_TOL = 1e-5
PROBABILITY_TOL = 1e-5


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


def load_module(tag: str):
    """A fresh import of serving.service bound to `tag` (the model is picked at import)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(MODEL_TAG_ENV, tag)
        mp.delitem(sys.modules, "serving.service", raising=False)
        return importlib.import_module("serving.service")


class InProcess:
    """A Recommender called in-process as BentoML's server calls it: its API methods (recommend, score) are
    awaited when they are async (the unbatched layout runs them on the event loop: serving/service.py, _api),
    so a test reads the answer either way. Every other attribute, read or set, is the service's own."""

    def __init__(self, service):
        object.__setattr__(self, "service", service)

    def __getattr__(self, name: str):
        value = getattr(self.service, name)
        if name not in ("recommend", "score"):
            return value

        def call(**fields):
            answer = value(**fields)
            return asyncio.run(answer) if asyncio.iscoroutine(answer) else answer

        return call

    def __setattr__(self, name: str, value) -> None:
        setattr(self.service, name, value)


def load_service(tag: str) -> InProcess:
    """The Recommender of a fresh serving.service bound to `tag`; in-process it builds its Ranker too."""
    return InProcess(load_module(tag).Recommender())


@pytest.fixture(scope="module")
def service(model_tag):
    return load_service(model_tag)


def indices(ids: list[str]) -> list[int]:
    return [int(i[1:]) for i in ids]


def expected(table, history_ids: list[str], k: int, exclude_seen: bool) -> tuple[list[str], np.ndarray]:
    top, scores = reference_top_k(table, indices(history_ids), k, exclude_seen)
    return [item_id(i) for i in top], scores


def assert_matches(response: dict, table, history_ids: list[str], k: int, exclude_seen: bool) -> None:
    """Items, scores, titles, `because` and version all equal the numpy reference."""
    want_ids, want_scores = expected(table, history_ids, k, exclude_seen)
    got_ids = [row["item_id"] for row in response["items"]]
    assert got_ids == want_ids
    np.testing.assert_allclose([row["score"] for row in response["items"]], want_scores, atol=SCORE_TOL)
    assert [row["title"] for row in response["items"]] == [f"Item {int(i[1:])}" for i in want_ids]
    want_because = reference_because(table, indices(history_ids), indices(want_ids))
    assert [indices(row["because"]) for row in response["items"]] == want_because
    assert response["model_version"] == REGISTRY_VERSION and response["source"] == "model"


def assert_popular(response: dict, users: dict[str, list[str]], k: int) -> None:
    """The answer to an empty history: the k items most frequent in the tiny bundle's training histories
    (its users'), each scored by its share of them, nothing in `because`, marked as popularity."""
    want, shares = reference_popular(users, k)
    assert [row["item_id"] for row in response["items"]] == want
    np.testing.assert_allclose([row["score"] for row in response["items"]], shares, rtol=1e-12)
    assert [row["title"] for row in response["items"]] == [f"Item {int(i[1:])}" for i in want]
    assert all(row["because"] == [] and row["new"] is False for row in response["items"])
    assert response["source"] == "popularity" and response["model_version"] == REGISTRY_VERSION


def assert_probabilities(response: dict, table, history: list[str], candidates: list[str]) -> None:
    """Candidates in the order asked, probabilities equal to the numpy reference."""
    assert [row["item_id"] for row in response["scores"]] == candidates
    got = np.array([row["probability"] for row in response["scores"]])
    np.testing.assert_allclose(got, reference_probabilities(table, indices(history), indices(candidates)), atol=PROBABILITY_TOL, rtol=0)
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


def test_a_history_longer_than_the_window_still_gets_k_items(tmp_path_factory):
    """With more items than the graph returns (MAX_K), its top MAX_K leaves out only the window's items;
    the items seen before the window, dropped afterwards, are replaced from the item vectors, so the answer
    is the catalog's top k without the history, in the service and in batch prediction alike. Before, this
    history got 46 items for k = 100."""
    from serving.ranking import BundleRanker

    n_items, seed = 250, 1
    bundle = make_tiny_bundle(tmp_path_factory.mktemp("big_bundle"), n_items=n_items, dim=DIM, seed=seed)
    table = embeddings(n_items, DIM, seed)
    history = [item_id(i) for i in range(1, 151)]  # 150 items: 20 in the window, 130 before it
    graph_top = {i for i in reference_top_k(table, indices(history[-MAX_LEN:]), contract.MAX_K, True)[0]}
    assert len(graph_top - set(indices(history))) < 100  # the graph's own top MAX_K falls short here
    service = load_service(save_bundle_to_store(bundle))
    response = service.recommend(history=history, k=100).model_dump()
    assert len(response["items"]) == 100
    assert_matches(response, table, history, 100, exclude_seen=True)
    assert BundleRanker(bundle).topk([history], 100) == [[row["item_id"] for row in response["items"]]]
    # All the unseen items, when k asks for more of them than there are:
    rest = service.recommend(history=[item_id(i) for i in range(1, 211)], k=100).model_dump()
    assert sorted(indices([row["item_id"] for row in rest["items"]])) == list(range(211, 251))


def test_filling_up_never_ranks_unscorable_or_banned_items(tmp_path):
    bundle_dir = make_tiny_bundle(tmp_path / "bundle", n_items=N_ITEMS, dim=DIM, seed=SEED)
    items = json.loads((bundle_dir / contract.ITEMS_FILE).read_text())
    for row in items[:10]:
        row["unscorable"] = True  # as an id-only model's untrained items are marked at export
    (bundle_dir / contract.ITEMS_FILE).write_text(json.dumps(items))
    bundle = contract.Bundle(bundle_dir)
    assert bundle.unscorable.tolist() == list(range(1, 11))
    table, user = embeddings(N_ITEMS, DIM, SEED), np.ones(DIM, np.float32)
    filled = bundle.fill_to_k([], 30, user, {0, 11, 12}, table)
    scores = table[1:] @ user
    want = [i for i in np.argsort(-scores, kind="stable") + 1 if i > 12]
    assert [i for i, _ in filled] == want and len(filled) == N_ITEMS - 12
    np.testing.assert_allclose([s for _, s in filled], scores[np.array(want) - 1], rtol=1e-6)
    picks = [(13, 1.0)] * 5
    assert bundle.fill_to_k(picks, 5, user, {0}, table) is picks  # enough already: unchanged
    assert bundle.fill_to_k(picks, 6, user, {0}, None) is picks  # no item vectors: unchanged


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
    with pytest.raises(InvalidArgument, match=r"\['unknown0', .*'unknown19'\] and 5 more \(not in") as err:
        service.recommend(history=many)
    # none known (a user whose items all left the catalog): told how to ask for the new-user answer
    assert str(err.value).endswith(f"{N_ITEMS} items); none of them is known: 'history': [] gives the most popular items (a new user)")
    with pytest.raises(InvalidArgument, match=r"unknown item ids \['" + "y" * 80 + r"\.\.\.'\] \(not in"):
        service.recommend(history=["y" * 5000])  # a long id is quoted cut short


def test_an_empty_history_gets_the_most_popular_items_and_says_so(service, users):
    """A new user (`history: []`): the bundle's most popular training items, not a model ranking; nothing
    to exclude, and new_items / new_item_boost do not apply (new items have no interactions)."""
    answer = service.recommend(history=[], k=5).model_dump()
    assert_popular(answer, users, 5)
    assert service.recommend(history=[], k=5, exclude_seen=False, new_items=2, new_item_boost=1.0).model_dump() == answer
    assert_popular(service.recommend(history=[]).model_dump(), users, contract.RecommendRequest.model_fields["k"].default)
    everything = service.recommend(history=[], k=contract.MAX_K).model_dump()  # every item trained on, no more
    assert_popular(everything, users, contract.MAX_K)
    assert len(everything["items"]) == len({i for h in users.values() for i in h}) < contract.MAX_K
    assert service.recommend(history=["i001"]).source == service.recommend(user_id="u0").source == "model"


def test_unknown_user_is_not_found(service):
    with pytest.raises(NotFound, match="unknown user 'ghost'") as err:
        service.recommend(user_id="ghost")
    assert err.value.error_code == 404
    assert str(err.value) == ("user_id: unknown user 'ghost' (the model knows 5 users); send the user's 'history' of item ids "
                              "instead, or 'history': [] for the most popular items (a new user)")
    with pytest.raises(NotFound, match=r"unknown user '" + "u" * 80 + r"\.\.\.' \(the model knows"):
        service.recommend(user_id="u" * 5000)  # quoted cut short, as unknown item ids are
    with pytest.raises(NotFound) as err:
        service.recommend(user_id="u0\n")  # a known user read from a file with its line break
    assert str(err.value).startswith("user_id: unknown user 'u0\\n' (the model knows 5 users); it holds whitespace, which no user id "
                                     "has (a stray space or line break?); send the user's 'history'")


def test_because_names_the_most_similar_history_items(service, table):
    # Fewer distinct items than MAX_BECAUSE: all of them, repeats once; more: exactly MAX_BECAUSE.
    short = service.recommend(history=["i004", "i004", "i011"], k=4).items
    assert all(sorted(r.because) == ["i004", "i011"] for r in short)
    long = service.recommend(history=[item_id(i) for i in range(1, 11)], k=4).items
    assert all(len(r.because) == contract.MAX_BECAUSE for r in long)
    # Checked by hand for one pick: the window item with the largest dot product comes first.
    pick = int(long[0].item_id[1:])
    best = max(range(1, 11), key=lambda h: float(table[h] @ table[pick]))
    assert long[0].because[0] == item_id(best)
    # Only the window the model reads explains a pick: items before it never appear.
    history = [item_id(1 + i % N_ITEMS) for i in range(MAX_LEN + 5)]
    window = set(history[-MAX_LEN:])
    assert all(set(r.because) <= window for r in service.recommend(history=history, k=5, exclude_seen=False).items)


@pytest.mark.parametrize(
    "history, candidates",
    [
        (["i001"], ["i002"]),
        (["i003", "i005", "i007"], ["i009", "i003", "i030", "i009"]),  # order kept, repeats kept, seen items scored
        ([item_id(i) for i in range(1, 26)], [item_id(i) for i in range(30, 0, -1)]),  # > max_len, whole catalog
    ],
)
def test_score_matches_reference(service, table, history, candidates):
    response = service.score(history=history, candidates=candidates).model_dump()
    assert_probabilities(response, table, history, candidates)
    probabilities = [row["probability"] for row in response["scores"]]
    assert all(0 < p < 1 for p in probabilities)
    distinct = {row["item_id"]: row["probability"] for row in response["scores"]}
    assert sum(distinct.values()) <= 1 + PROBABILITY_TOL
    if len(distinct) == N_ITEMS:  # the whole catalog: a distribution
        assert sum(distinct.values()) == pytest.approx(1.0, abs=PROBABILITY_TOL)


def test_score_is_stable_for_large_logits(model_tag, table):
    """A naive softmax overflows (exp(1000) = inf) or underflows to 0/0; the service's logsumexp does not."""
    service = load_service(model_tag)
    service.item_vectors = table * 400  # logits in the thousands; the graph's user vector is unchanged
    candidates = [item_id(i) for i in range(1, N_ITEMS + 1)]
    probabilities = np.array([s.probability for s in service.score(history=["i001", "i002"], candidates=candidates).scores])
    logits = (table[1:] * 400).astype(np.float64) @ table[[1, 2]].astype(np.float64).mean(axis=0)
    assert np.abs(logits).max() > 1000 and np.isfinite(probabilities).all()
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-9)
    assert probabilities.argmax() == logits.argmax() and probabilities.max() == pytest.approx(1.0, abs=1e-6)


def test_score_gives_an_item_the_model_cannot_score_no_probability(tmp_path):
    """An id-only model's untrained items are marked unscorable at export and their rows of the item table are
    zero: the graph never ranks them, and training never counted them in the softmax. /score put them in its
    normalizer with logit 0, so they took probability from every real item and were themselves given some
    (with most logits below 0, among the most probable items). They get 0; the rest sum to 1 over the others."""
    import onnx

    from tests.tiny_bundle import _graph as tiny_graph

    bundle_dir = make_tiny_bundle(tmp_path / "bundle", n_items=N_ITEMS, dim=DIM, seed=SEED)
    items = json.loads((bundle_dir / contract.ITEMS_FILE).read_text())
    for row in items[:10]:
        row["unscorable"] = True
    (bundle_dir / contract.ITEMS_FILE).write_text(json.dumps(items))
    table = embeddings(N_ITEMS, DIM, SEED)
    vectors = table.copy()
    vectors[1:11] = 0.0  # as the id-only model's table has them (the graph scores with the same table)
    np.save(bundle_dir / contract.ITEM_VECTORS_FILE, vectors)
    onnx.save(tiny_graph(vectors), bundle_dir / contract.MODEL_FILE)
    service = load_service(save_bundle_to_store(bundle_dir))
    history, candidates = ["i012", "i020"], [item_id(i) for i in range(1, N_ITEMS + 1)]
    got = np.array([row.probability for row in service.score(history=history, candidates=candidates).scores])
    logits = table[11:].astype(np.float64) @ table[[12, 20]].astype(np.float64).mean(axis=0)
    want = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert (got[:10] == 0).all()
    np.testing.assert_allclose(got[10:], want, atol=PROBABILITY_TOL, rtol=0)


def test_score_lists_unknown_ids_of_both_fields(service):
    with pytest.raises(InvalidArgument) as err:
        service.score(history=["i001", "ghost"], candidates=["i002", "x", "y", "x"])
    assert err.value.error_code == 400
    assert str(err.value) == (
        f"history: unknown item ids ['ghost']; candidates: unknown item ids ['x', 'y'] "
        f"(not in the model's catalog of {N_ITEMS} items)"
    )


@pytest.mark.parametrize(
    "call, fields, message",
    [
        ("recommend", {"history": ["i001"] * (contract.MAX_HISTORY + 1)}, r"history\n  List should have at most 2000 items"),
        ("score", {"history": ["i001"] * (contract.MAX_HISTORY + 1), "candidates": ["i002"]}, r"history\n  List should have at most 2000 items"),
        ("score", {"history": ["i001"], "candidates": ["i002"] * (contract.MAX_CANDIDATES + 1)}, r"candidates\n  List should have at most 1000 items"),
        ("score", {"history": [], "candidates": ["i002"]}, r"history\n  List should have at least 1 item"),
        ("score", {"history": ["i001"], "candidates": []}, r"candidates\n  List should have at least 1 item"),
        ("score", {"history": ["i001"]}, r"candidates\n  Field required"),
    ],
)
def test_limits_name_the_field_and_the_limit(service, call, fields, message):
    with pytest.raises(pydantic.ValidationError, match=message):
        getattr(service, call)(**fields)


def test_requests_at_the_limits_are_answered(service, table):
    history = [item_id(1 + i % N_ITEMS) for i in range(contract.MAX_HISTORY)]
    assert_matches(service.recommend(history=history, k=contract.MAX_K).model_dump(), table, history, contract.MAX_K, True)
    candidates = [item_id(1 + i % N_ITEMS) for i in range(contract.MAX_CANDIDATES)]
    assert_probabilities(service.score(history=history, candidates=candidates).model_dump(), table, history, candidates)


def test_metadata(service, model_tag):
    meta = service.metadata().model_dump()
    assert meta["bento_model_tag"] == model_tag and meta["bento_tag"] is None  # served from source
    assert meta["model_name"] == MODEL_NAME and meta["model_version"] == REGISTRY_VERSION
    assert meta["alias"] is None  # the tiny manifest records none, and no `behaviorflow serve` named one
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(contract.MODEL_ALIAS_ENV, "champion")
        assert service.metadata().alias == "champion"
    assert meta["metrics"] == {"HR@10": 0.5, "NDCG@10": 0.25} and meta["data_fingerprint"] == "abc"
    assert meta["created_at"] == CREATED_AT
    assert (meta["n_items"], meta["n_users"], meta["max_len"], meta["can_score"]) == (N_ITEMS, 5, MAX_LEN, True)
    assert meta["n_popular_items"] == len(service.recommend(history=[], k=contract.MAX_K).items) > 10
    assert meta["limits"] == {"k": 100, "history": 2000, "candidates": 1000, "because": 3, "body_bytes": 1 << 20}
    assert meta["manifest"]["max_len"] == MAX_LEN and meta["manifest"]["data_fingerprint"] == "abc"


def test_bundle_without_item_vectors(tmp_path, table):
    """No item table: recommendations as before with an empty `because`; /score is a 501 that says why."""
    bundle = make_tiny_bundle(tmp_path / "bundle", n_items=N_ITEMS, dim=DIM, seed=SEED, item_vectors=False)
    manifest = json.loads((bundle / contract.MANIFEST_FILE).read_text())
    manifest.pop("created_at")
    (bundle / contract.MANIFEST_FILE).write_text(json.dumps(manifest))
    module = load_module(save_bundle_to_store(bundle))
    service = InProcess(module.Recommender())
    response = service.recommend(history=["i003", "i005"], k=5).model_dump()
    assert [row["item_id"] for row in response["items"]] == expected(table, ["i003", "i005"], 5, True)[0]
    assert all(row["because"] == [] for row in response["items"])
    with pytest.raises(module.ScoringUnavailable, match=r"no item_vectors.npy .* re-export the model") as err:
        service.score(history=["i001"], candidates=["i002"])
    assert err.value.error_code == 501
    meta = service.metadata()
    assert meta.can_score is False and meta.created_at == service.model_ref.info.creation_time.isoformat()


def test_older_clients_still_parse_recommendations():
    """`because` and `source` are new: a response without them (an older server) still parses, with an
    empty list and the model as its source."""
    old = {"items": [{"item_id": "i001", "title": "Item 1", "score": 1.5}], "model_version": "3"}
    parsed = contract.RecommendResponse.model_validate(old)
    assert parsed.items[0].because == [] and parsed.source == "model"


def test_a_bundle_from_before_the_popularity_list_serves_as_before(tmp_path, table):
    """No popularity list in the manifest: recommendations as before; an empty history is still a 400,
    which now says why; the unknown-user message does not offer what the bundle cannot give."""
    bundle = make_tiny_bundle(tmp_path / "bundle", n_items=N_ITEMS, dim=DIM, seed=SEED, popularity=False)
    assert contract.POPULARITY_FIELD not in json.loads((bundle / contract.MANIFEST_FILE).read_text())
    service = load_service(save_bundle_to_store(bundle))
    assert_matches(service.recommend(history=["i003", "i005"], k=5).model_dump(), table, ["i003", "i005"], 5, True)
    with pytest.raises(InvalidArgument) as err:
        service.recommend(history=[])
    assert err.value.error_code == 400
    assert str(err.value) == f"history: empty, and {contract.POPULARITY_MISSING}; give at least one item id"
    with pytest.raises(NotFound) as err:
        service.recommend(user_id="ghost")
    assert str(err.value).endswith("send the user's 'history' of item ids instead")
    assert service.metadata().n_popular_items == 0


def test_keep_new_items_by_hand():
    picks = [(1, 9.0), (2, 8.0), (3, 7.0), (4, 6.0), (5, 5.0)]  # item 3 is new and already in the top 4
    new_ranked = [(3, 7.0), (8, 4.5), (9, 4.0)]
    assert contract.keep_new_items(picks, new_ranked, {3, 8, 9}, 4, 0) == picks[:4]
    assert contract.keep_new_items(picks, new_ranked, {3, 8, 9}, 4, 1) == picks[:4]  # one is there already
    assert contract.keep_new_items(picks, new_ranked, {3, 8, 9}, 4, 2) == [(1, 9.0), (2, 8.0), (3, 7.0), (8, 4.5)]
    assert contract.keep_new_items(picks, new_ranked, {3, 8, 9}, 4, 3) == [(1, 9.0), (3, 7.0), (8, 4.5), (9, 4.0)]
    assert contract.keep_new_items(picks, new_ranked, {3, 8, 9}, 4, 4) == [(1, 9.0), (3, 7.0), (8, 4.5), (9, 4.0)]  # only 3 exist
    assert contract.keep_new_items(picks[:2], [], {3, 8, 9}, 4, 2) == picks[:2]  # none to add: the list as it is


NEW = [4, 9, 13, 21, 26]  # items of the tiny bundle marked new (no training interactions)


@pytest.fixture(scope="module")
def new_service(tmp_path_factory):
    bundle = make_tiny_bundle(tmp_path_factory.mktemp("new"), n_items=N_ITEMS, dim=DIM, seed=SEED, new_items=NEW)
    return load_service(save_bundle_to_store(bundle))


@pytest.mark.parametrize("history,k,m", [(["i003", "i005"], 10, 6), (["i013", "i002", "i021"], 5, 2), (["i007"], 8, 5)])
def test_new_items_keep_their_places_among_the_model_ranking(new_service, table, history, k, m):
    """With new_items=m the answer holds the best m new items (by the model's scores) and the best k - m
    others (or more of either where the model ranks them in its top k), in score order."""
    plain = new_service.recommend(history=history, k=k).model_dump()["items"]
    assert [r["item_id"] for r in plain] == expected(table, history, k, True)[0]  # default: the ranking as it is
    assert [r["new"] for r in plain] == [int(r["item_id"][1:]) in NEW for r in plain]
    ranking = expected(table, history, N_ITEMS, True)[0]  # every item the answer may hold, best first
    natural_new = sum(int(i[1:]) in NEW for i in ranking[:k])
    new_ranked = [i for i in ranking if int(i[1:]) in NEW]
    n_new = min(max(m, natural_new), len(new_ranked))  # m may ask for more than there are: all of them then
    best_new = new_ranked[:n_new]
    best_other = [i for i in ranking if int(i[1:]) not in NEW][: k - n_new]
    got = new_service.recommend(history=history, k=k, new_items=m).model_dump()["items"]
    assert sorted(r["item_id"] for r in got) == sorted(best_new + best_other)
    assert [r["item_id"] for r in got] == [i for i in ranking if i in set(best_new + best_other)]  # score order
    assert [r["new"] for r in got] == [r["item_id"] in best_new for r in got] and sum(r["new"] for r in got) == n_new
    assert ([r["item_id"] for r in got] != [r["item_id"] for r in plain]) == (natural_new < m)  # changed only where needed
    user = table[indices(history)].mean(axis=0)
    np.testing.assert_allclose([r["score"] for r in got], [table[int(r["item_id"][1:])] @ user for r in got], atol=SCORE_TOL)


def test_new_items_requests_are_checked_and_reported(new_service, service):
    with pytest.raises(pydantic.ValidationError, match=r"new_items \(6\) must be between 0 and k \(5\): reserve at most k places"):
        new_service.recommend(history=["i001"], k=5, new_items=6)
    with pytest.raises(pydantic.ValidationError, match=r"new_items\n  Input should be greater than or equal to 0"):
        new_service.recommend(history=["i001"], k=5, new_items=-1)
    assert new_service.metadata().n_new_items == len(NEW) and service.metadata().n_new_items == 0
    # A bundle that marks no item new: nothing to reserve places for, the ranking as it is.
    assert service.recommend(history=["i003"], k=5, new_items=3).model_dump() == service.recommend(history=["i003"], k=5).model_dump()


def test_boost_new_items_by_hand():
    picks = [(1, 9.0), (2, 8.0), (3, 7.0), (4, 6.0), (5, 5.0)]  # item 3 is new and in the graph's list
    new_ranked = [(3, 7.0), (8, 5.9), (9, 4.0)]  # new items by score, from the item table
    assert contract.boost_new_items(picks, new_ranked, frozenset({3, 8, 9}), 0.5) == [(1, 9.0), (2, 8.0), (3, 7.5), (8, 6.4), (4, 6.0), (5, 5.0), (9, 4.5)]
    assert contract.boost_new_items(picks, new_ranked, frozenset({3, 8, 9}), 3.0)[:4] == [(3, 10.0), (1, 9.0), (8, 8.9), (2, 8.0)]


@pytest.mark.parametrize("history,k,boost", [(["i003", "i005"], 10, 0.05), (["i013", "i002", "i021"], 5, 0.2), (["i007"], 8, 5.0)])
def test_new_item_boost_ranks_by_score_plus_boost(new_service, table, history, k, boost):
    """With new_item_boost=b the answer is the top k of every allowed item by its score, plus b for new items;
    the returned score is that boosted score."""
    top, scores = reference_top_k(table, indices(history), k, True, new=NEW, boost=boost)
    got = new_service.recommend(history=history, k=k, new_item_boost=boost).model_dump()["items"]
    assert [r["item_id"] for r in got] == [item_id(i) for i in top]
    np.testing.assert_allclose([r["score"] for r in got], scores, atol=SCORE_TOL)
    assert [r["new"] for r in got] == [i in NEW for i in top]
    plain = reference_top_k(table, indices(history), k, True)[0]
    assert sum(i in NEW for i in top) >= sum(i in NEW for i in plain)  # new items only move up
    assert [i for i in top if i not in NEW] == [i for i in plain if i not in NEW][: k - sum(i in NEW for i in top)]  # others keep their order


def test_new_item_boost_moves_new_items_up_by_their_own_scores(new_service, table):
    """A boost changes the answer where new items are close to the top and leaves it where none is: unlike
    new_items, which places new items in every answer."""
    histories = [[item_id(i), item_id(j)] for i in range(1, 12) for j in (14, 17, 23)]
    changed = [new_service.recommend(history=h, k=5, new_item_boost=0.3).model_dump() != new_service.recommend(history=h, k=5).model_dump() for h in histories]
    assert 0 < sum(changed) < len(histories)
    # Boost first, then places: with both, at least m new items, the others by boosted score.
    got = new_service.recommend(history=["i003", "i005"], k=6, new_item_boost=0.05, new_items=4).model_dump()["items"]
    boosted, _ = reference_top_k(table, [3, 5], N_ITEMS, True, new=NEW, boost=0.05)  # every allowed item, best first
    n_new = max(4, sum(i in NEW for i in boosted[:6]))
    keep = [i for i in boosted if i in NEW][:n_new] + [i for i in boosted if i not in NEW][: 6 - n_new]
    assert [r["item_id"] for r in got] == [item_id(i) for i in boosted if i in keep]


def test_new_item_boost_requests_are_checked(new_service, service):
    for value, message in [(-0.1, "greater than or equal to 0"), (101, "less than or equal to 100"), (float("nan"), "finite number")]:
        with pytest.raises(pydantic.ValidationError, match=rf"new_item_boost\n  Input should be (a )?{message}"):
            new_service.recommend(history=["i001"], k=5, new_item_boost=value)
    # A bundle that marks no item new: nothing to boost, the ranking as it is.
    assert service.recommend(history=["i003"], k=5, new_item_boost=2.0).model_dump() == service.recommend(history=["i003"], k=5).model_dump()


def test_new_items_without_item_vectors_come_from_the_graphs_list(tmp_path, new_service):
    bundle = make_tiny_bundle(tmp_path / "b", n_items=N_ITEMS, dim=DIM, seed=SEED, item_vectors=False, new_items=NEW)
    bare = load_service(save_bundle_to_store(bundle))
    ids = lambda response: [r["item_id"] for r in response.model_dump()["items"]]  # noqa: E731
    # The tiny graph returns its whole catalog (30 < MAX_K), so the answer is the same as with the item table.
    assert ids(bare.recommend(history=["i003", "i005"], k=6, new_items=4)) == ids(new_service.recommend(history=["i003", "i005"], k=6, new_items=4))


def guarded(module, method: str, path: str, chunks: list[bytes], headers: dict[str, str] | None = None):
    """(status, body, what the app behind it read) for one request through RequestGuard, in-process."""
    seen = []

    async def app(scope, receive, send):
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        seen.append(body)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def run():
        messages = [{"type": "http.request", "body": c, "more_body": j < len(chunks) - 1} for j, c in enumerate(chunks)]
        sent = []

        async def receive():
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        scope = {"type": "http", "method": method, "path": path, "headers": raw}
        await module.RequestGuard(app, max_body_bytes=10)(scope, receive, send)
        return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])

    status, body = asyncio.run(run())
    return status, body, seen


def test_request_guard(model_tag, monkeypatch):
    module = load_module(model_tag)
    assert guarded(module, "POST", "/recommend", [b"12345", b"67890"])[:2] == (200, b"ok")  # 10 bytes: fits
    assert guarded(module, "POST", "/recommend", [b"12345", b"67890"])[2] == [b"1234567890"]  # replayed whole
    status, body, seen = guarded(module, "POST", "/recommend", [b"123456", b"78901"])
    assert (status, seen) == (413, []) and "over 10 bytes, the limit is 10 bytes" in json.loads(body)["error"]
    status, body, seen = guarded(module, "POST", "/recommend", [b"x"], {"Content-Length": "11"})
    assert (status, seen) == (413, []) and "11 bytes, the limit is 10 bytes" in json.loads(body)["error"]
    assert guarded(module, "POST", "/recommend", [b"x"], {"Content-Length": "1"})[0] == 200
    status, body, _ = guarded(module, "POST", "/recommend", [b"x"], {"Content-Length": "-1"})
    assert status == 400 and json.loads(body)["error"] == "Content-Length: b'-1' is not a byte count"
    assert guarded(module, "GET", "/metadata", [b""] * 3)[0] == 200  # GETs pass untouched
    # POST /score answers 501 with its reason when the loaded model cannot score (BentoML would mask it).
    assert guarded(module, "POST", "/score", [b"{}"])[0] == 200
    monkeypatch.setattr(module, "_can_score", lambda: False)
    status, body, seen = guarded(module, "POST", "/score", [b"{}"])
    assert (status, seen) == (501, []) and json.loads(body)["error"].startswith("score: this model cannot score")
    assert guarded(module, "POST", "/recommend", [b"{}"])[0] == 200


def test_a_wrong_path_or_method_is_a_json_error_too(model_tag):
    """README: every 4xx is one JSON object {"error": ...}; the router's own plain-text 404 and 405 were not."""
    module = load_module(model_tag)

    def answer(method: str, path: str, status: int, body: bytes, content_type: bytes = b"text/plain; charset=utf-8"):
        async def app(scope, receive, send):
            await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        async def run():
            sent = []

            async def receive():
                return {"type": "http.request", "body": b"", "more_body": False}

            async def send(message):
                sent.append(message)

            await module.RequestGuard(app)({"type": "http", "method": method, "path": path, "headers": []}, receive, send)
            return sent[0], b"".join(m.get("body", b"") for m in sent[1:])

        start, out = asyncio.run(run())
        return start["status"], dict(start["headers"]), out

    status, headers, body = answer("GET", "/recommend", 405, b"Method Not Allowed")
    assert status == 405 and json.loads(body) == {"error": "Method Not Allowed: GET /recommend"}
    assert headers[b"content-type"] == b"application/json" and int(headers[b"content-length"]) == len(body)
    assert json.loads(answer("POST", "/recomend", 404, b"Not Found")[2]) == {"error": "Not Found: POST /recomend"}
    assert json.loads(answer("GET", "/nope", 404, b"")[2]) == {"error": "Not Found: GET /nope"}
    assert answer("GET", "/metadata", 200, b'{"n_items": 3}', b"application/json")[2] == b'{"n_items": 3}'  # answers pass untouched
    assert answer("GET", "/", 200, b"<html></html>", b"text/html")[2] == b"<html></html>"
    assert answer("GET", "/readyz", 503, b"Service Unavailable")[2] == b"Service Unavailable"  # 5xx: not a client's mistake
    assert answer("HEAD", "/recommend", 405, b"")[:2] == (405, {b"content-type": b"text/plain; charset=utf-8", b"content-length": b"0"})


def test_length_groups():
    from serving.contract import length_groups

    lengths = [20, 1, 3, 17, 2, 1, 9, 4, 0]
    groups = length_groups(lengths, max_len=20)
    assert groups == [[8, 1, 5], [4], [2, 7], [6], [3, 0]]  # shortest first; widths 1, 2, 4, 9, 20
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for group in groups:  # each group pads to at most twice its shortest member
        widths = [max(1, lengths[i]) for i in group]
        assert max(widths) <= 2 * min(widths)
    assert length_groups([], max_len=20) == []


def test_ranker_groups_a_batch_by_length(service, table):
    """One graph call per length group, each padded to its own longest; answers equal one-by-one runs."""
    from serving.service import RankQuery

    ranker = service.ranker
    rng = np.random.default_rng(5)
    windows = [[int(i) for i in rng.integers(1, N_ITEMS + 1, size=n)] for n in (20, 1, 3, 17, 2, 1, 9, 4)]
    queries = [RankQuery(window=w, exclude_seen=bool(j % 2)) for j, w in enumerate(windows)]
    widths = []
    real_run = ranker.session.run

    def spy(names, feeds):
        widths.append(feeds[contract.INPUT_HISTORY].shape)
        return real_run(names, feeds)

    ranker.session.run = spy
    try:
        batched = ranker.rank(queries)
        widths_batched, widths[:] = list(widths), []
        alone = [ranker.rank([q])[0] for q in queries]
    finally:
        ranker.session.run = real_run
    assert widths_batched == [(2, 1), (1, 2), (2, 4), (1, 9), (2, 20)]
    for together, one in zip(batched, alone):  # equal up to float32 rounding (another matmul shape)
        assert together.items == one.items
        np.testing.assert_allclose(together.scores, one.scores, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(together.user_vector, one.user_vector, rtol=1e-6, atol=1e-6)
    for query, answer in zip(queries, batched):
        top, _ = reference_top_k(table, query.window, 10, query.exclude_seen)
        assert [i for i in answer.items if i not in (set(query.window) if query.exclude_seen else set())][:10] == top
        np.testing.assert_allclose(answer.user_vector, table[query.window].mean(axis=0), atol=1e-6)


@pytest.mark.parametrize("batching, inline", [("0", True), ("1", False)], ids=["unbatched", "batched"])
def test_unbatched_requests_are_answered_on_the_event_loop(model_tag, monkeypatch, batching, inline):
    """Unbatched, /recommend and /score are async methods, which BentoML's server awaits on its event loop
    (no hop to a worker thread); batched, they are sync methods, which it runs on its threads while they
    wait for the Ranker's process. Either way the API keeps its name, route, docs and response model."""
    from bentoml._internal.utils import is_async_callable

    monkeypatch.setenv(contract.BATCHING_ENV, batching)
    service = load_module(model_tag).Recommender
    for name, response in (("recommend", contract.RecommendResponse), ("score", contract.ScoreResponse)):
        api = service.apis[name]
        assert is_async_callable(api.func) is inline, name
        assert api.route == f"/{name}" and api.name == name and "JSON body" in api.func.__doc__
        assert set(api.output_spec.model_fields) == set(response.model_fields), api.output_spec
    assert service.config["threads"] == (1 if inline else 32)


@pytest.mark.parametrize("batching, spinning", [("0", "1"), ("1", "0")], ids=["unbatched", "batched"])
def test_the_batched_rankers_onnx_threads_sleep_between_batches(model_tag, monkeypatch, batching, spinning):
    """Batched, the Ranker's ONNX Runtime threads sleep when idle unless BEHAVIORFLOW_ORT_SPIN=1: spinning
    between batches cost 3-4 ms of CPU per request (benchmarks/results/serving_layouts_nospin.json). Unbatched
    (one thread per session) the default stays 1."""
    from serving.ranking import ORT_SPIN_ENV

    monkeypatch.setenv(contract.BATCHING_ENV, batching)
    monkeypatch.delenv(ORT_SPIN_ENV, raising=False)
    options = load_module(model_tag).Ranker().session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == spinning
    monkeypatch.setenv(ORT_SPIN_ENV, "1")
    options = load_module(model_tag).Ranker().session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "1"


def test_a_dropped_connection_to_the_ranker_is_retried_once(service, monkeypatch):
    ranker = service.ranker
    real_rank = ranker.rank
    calls = []

    def flaky(queries):
        calls.append(len(queries))
        if len(calls) == 1:
            raise aiohttp.ServerDisconnectedError()
        return real_rank(queries)

    monkeypatch.setattr(ranker, "rank", flaky)
    assert len(service.recommend(history=["i001"], k=3).items) == 3 and calls == [1, 1]

    def broken(queries):
        calls.append(len(queries))
        raise aiohttp.ServerDisconnectedError()

    calls.clear()
    monkeypatch.setattr(ranker, "rank", broken)
    with pytest.raises(aiohttp.ServerDisconnectedError):  # twice in a row: not hidden
        service.recommend(history=["i001"], k=3)
    assert calls == [1, 1]


def test_sample_request_is_valid_for_the_sample_model(service):
    """The request the service's docstring sends asks for items of the bundled sample catalog (what
    `make run` trains on): two parts of a tent series, whose next part the sample's users mostly visit."""
    from components.data.sample import generate_sample

    body = (ROOT / "serving" / "sample_request.json").read_text()
    request = contract.RecommendRequest.model_validate_json(body)
    titles = generate_sample()[1].set_index("item_id")["title"]
    assert [titles[i] for i in request.history] == ["Basecamp tent Vertex 1", "Basecamp tent Vertex 2"]
    fields = request.model_dump() | {"history": [f"i{i:03d}" for i in range(1, len(request.history) + 1)]}  # the tiny bundle's ids
    assert len(service.recommend(**fields).items) == request.k


@pytest.mark.parametrize(
    "keep_items, users, message",
    [
        (N_ITEMS - 3, {"u0": ["i001"]}, r"graph returns 30 items per row, but items.json lists 27 items"),
        (N_ITEMS, {"u0": ["i001", "i999"]}, r"users.json mentions 1 item ids missing .* \(e.g. \['i999'\]\)"),
    ],
)
def test_inconsistent_bundle_fails_at_start_up(tmp_path, keep_items, users, message):
    bundle = make_tiny_bundle(tmp_path / "bundle", n_items=N_ITEMS, dim=DIM, seed=SEED, popularity=False)
    items = json.loads((bundle / contract.ITEMS_FILE).read_text())
    (bundle / contract.ITEMS_FILE).write_text(json.dumps(items[:keep_items]))
    (bundle / contract.USERS_FILE).write_text(json.dumps(users))
    with pytest.raises(ValueError, match=message):
        load_service(save_bundle_to_store(bundle))


def test_a_popularity_list_naming_items_the_catalog_lacks_fails_at_start_up(tmp_path):
    bundle = make_tiny_bundle(tmp_path / "bundle", n_items=N_ITEMS, dim=DIM, seed=SEED)
    manifest = json.loads((bundle / contract.MANIFEST_FILE).read_text())
    manifest[contract.POPULARITY_FIELD]["items"].insert(1, {"item_id": "gone", "count": 4})
    (bundle / contract.MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"manifest.json's popularity lists 1 item ids missing from items.json \(e.g. \['gone'\]\)"):
        load_service(save_bundle_to_store(bundle))


@pytest.mark.parametrize(
    "vectors, message",
    [
        (lambda table: table[:-1], r"item_vectors.npy has shape \(30, 8\), expected \(n_items \+ 1, d\) = \(31, 8\)"),
        (lambda table: table[:, :4], r"item_vectors.npy has shape \(31, 4\), expected .* = \(31, 8\)"),
        (lambda table: embeddings(N_ITEMS, DIM, SEED + 1), r"differs from the graph's top_scores .* not the ones the graph scores with"),
    ],
    ids=["one row short", "narrower than user_vector", "another model's vectors"],
)
def test_item_vectors_not_the_graphs_fail_at_start_up(tmp_path, table, vectors, message):
    bundle = make_tiny_bundle(tmp_path / "bundle", n_items=N_ITEMS, dim=DIM, seed=SEED)
    np.save(bundle / contract.ITEM_VECTORS_FILE, vectors(table))
    with pytest.raises(ValueError, match=message):
        load_service(save_bundle_to_store(bundle))


def test_int8_graph_with_fp32_item_vectors_is_served(tmp_path, table):
    """An int8 graph scores with a quantized table, ~1% off the fp32 item vectors: still the same model."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    bundle = make_tiny_bundle(tmp_path / "bundle", n_items=N_ITEMS, dim=DIM, seed=SEED)
    quantize_dynamic(str(bundle / contract.MODEL_FILE), str(tmp_path / "int8.onnx"), weight_type=QuantType.QInt8)
    (tmp_path / "int8.onnx").replace(bundle / contract.MODEL_FILE)
    service = load_service(save_bundle_to_store(bundle))
    everything = [item_id(i) for i in range(1, N_ITEMS + 1)]
    probabilities = [s.probability for s in service.score(history=["i001", "i002"], candidates=everything).scores]
    assert sum(probabilities) == pytest.approx(1.0, abs=PROBABILITY_TOL)
    top = service.recommend(history=["i001", "i002"], k=3).items
    assert len(top) == 3 and all(len(r.because) == 2 for r in top)


def test_an_int8_graph_ranks_each_history_alone_so_its_answer_does_not_depend_on_the_batch(tmp_path):
    """Dynamic quantization scales a call's activations by one factor over the whole batch: batched, an int8
    history's scores (and sometimes its order) moved with the histories beside it. Served and in batch
    prediction, an int8 bundle runs one history per graph call."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from serving.ranking import BundleRanker, ort_session
    from serving.service import RankQuery

    bundle = make_tiny_bundle(tmp_path / "bundle", n_items=N_ITEMS, dim=DIM, seed=SEED)
    quantize_dynamic(str(bundle / contract.MODEL_FILE), str(tmp_path / "int8.onnx"), weight_type=QuantType.QInt8)
    (tmp_path / "int8.onnx").replace(bundle / contract.MODEL_FILE)
    manifest = json.loads((bundle / contract.MANIFEST_FILE).read_text())
    (bundle / contract.MANIFEST_FILE).write_text(json.dumps(manifest | {"precision": "int8"}))
    rng = np.random.default_rng(3)
    windows = [[int(i) for i in rng.integers(1, N_ITEMS + 1, size=8)] for _ in range(16)]
    # The graph itself: one history's scores alone and in a batch of 16 differ.
    session = ort_session(bundle / contract.MODEL_FILE)
    def scores(rows):
        return session.run([contract.OUTPUT_SCORES], {contract.INPUT_HISTORY: np.array(rows, dtype=np.int64),
                                                      contract.INPUT_EXCLUDE_SEEN: np.zeros(len(rows), dtype=bool)})[0]
    assert not np.array_equal(scores(windows)[0], scores(windows[:1])[0])
    ranker = load_service(save_bundle_to_store(bundle)).ranker
    queries = [RankQuery(window=w, exclude_seen=False) for w in windows]
    assert ranker.rank(queries) == [ranker.rank([q])[0] for q in queries]  # exactly, scores included
    histories = [[item_id(i) for i in w] for w in windows]
    batch = BundleRanker(bundle).topk(histories, 10, exclude_seen=False, batch_size=16)
    assert batch == [BundleRanker(bundle).topk([h], 10, exclude_seen=False)[0] for h in histories]
    assert contract.Bundle(bundle).rows_per_call == 1 and contract.Bundle(make_tiny_bundle(tmp_path / "fp32")).rows_per_call is None


def test_ort_threading_comes_from_the_environment(tmp_path, monkeypatch):
    from serving.ranking import ORT_SPIN_ENV, ORT_THREADS_ENV, ort_session

    bundle = make_tiny_bundle(tmp_path / "bundle", n_items=N_ITEMS, dim=DIM, seed=SEED)
    monkeypatch.setenv(ORT_THREADS_ENV, "1")
    monkeypatch.setenv(ORT_SPIN_ENV, "0")
    options = ort_session(bundle / contract.MODEL_FILE).get_session_options()
    assert options.intra_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    monkeypatch.delenv(ORT_THREADS_ENV)
    assert ort_session(bundle / contract.MODEL_FILE, default_threads=1).get_session_options().intra_op_num_threads == 1
    assert ort_session(bundle / contract.MODEL_FILE).get_session_options().intra_op_num_threads == 0
    monkeypatch.setenv(ORT_THREADS_ENV, "two")
    with pytest.raises(ValueError, match=r"BEHAVIORFLOW_ORT_THREADS='two': expected a whole number"):
        ort_session(bundle / contract.MODEL_FILE)
    monkeypatch.setenv(ORT_THREADS_ENV, "0")
    monkeypatch.setenv(ORT_SPIN_ENV, "sometimes")
    with pytest.raises(ValueError, match=r"BEHAVIORFLOW_ORT_SPIN='sometimes': expected 1 or 0"):
        ort_session(bundle / contract.MODEL_FILE)
    # The batched Ranker's default: threads that sleep between batches; the environment can still say otherwise.
    monkeypatch.delenv(ORT_SPIN_ENV)
    assert ort_session(bundle / contract.MODEL_FILE, default_spin=False).get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert ort_session(bundle / contract.MODEL_FILE).get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "1"
    monkeypatch.setenv(ORT_SPIN_ENV, "1")
    assert ort_session(bundle / contract.MODEL_FILE, default_spin=False).get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "1"
    # The shadow challenger's session: one thread that sleeps when idle, whatever the environment says.
    monkeypatch.setenv(ORT_THREADS_ENV, "2")
    monkeypatch.setenv(ORT_SPIN_ENV, "1")
    options = ort_session(bundle / contract.MODEL_FILE, background=True).get_session_options()
    assert options.intra_op_num_threads == 1 and options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_service_imports_no_training_stack():
    probe = "import sys, serving.service; print([m for m in sys.argv[1:] if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", probe, *TRAINING_STACK, "components"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---------------------------------------------------------------------------------------- real server


@pytest.fixture(scope="module", params=["1", "0"], ids=["batched", "unbatched"])
def server(request, model_tag, tmp_path_factory):
    """A `bentoml serve` process in each layout (Recommender + batched Ranker; Recommender alone, in two
    processes sharing the port, as 'auto' runs it on 2 CPUs), whatever 'auto' would pick on this machine;
    yields its base URL."""
    from serving.contract import BATCHING_ENV, WORKERS_ENV

    log = tmp_path_factory.mktemp("server") / "serve.log"
    with bentoml_serve(model_tag, log, env={BATCHING_ENV: request.param, WORKERS_ENV: "1" if request.param == "1" else "2"}) as url:
        SERVER_LOGS[url] = log
        yield url


SERVER_LOGS: dict[str, Path] = {}  # base URL -> the server's log


def test_server_logs_requests_but_not_probes(server):
    assert httpx.post(f"{server}/recommend", json={"history": ["i001"], "k": 2}).status_code == 200
    for probe in ("/readyz", "/livez", "/healthz", "/metrics"):
        assert httpx.get(f"{server}{probe}").status_code == 200
    time.sleep(0.5)  # the access log is written after the response
    lines = SERVER_LOGS[server].read_text().splitlines()
    assert any("path=/recommend" in line and "status=200" in line for line in lines)
    assert not [line for line in lines if any(f"path={p}," in line for p in ("/readyz", "/livez", "/healthz", "/metrics"))]


def test_server_runs_on_asyncio_and_httptools(server):
    """uvicorn parses HTTP with httptools when installed (else h11), and runs on asyncio, not uvloop, although
    uvloop is installed (BEHAVIORFLOW_EVENT_LOOP, serving/layout.py: uvloop leaves new connections unaccepted
    under load): every worker that answers has httptools loaded and not uvloop."""
    workers = server_workers(server)
    assert len(workers) == 2, workers  # batched: Recommender and Ranker; unbatched: two Recommender processes
    deadline = time.monotonic() + 30  # /readyz answers once one worker is up; the other may still be starting
    while (loaded := [mapped_packages(w, ("uvloop", "httptools")) for w in workers]) != [{"httptools"}] * 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert loaded == [{"httptools"}] * 2


def test_event_loop_choice(monkeypatch):
    """asyncio unless BEHAVIORFLOW_EVENT_LOOP says uvloop; anything else, or uvloop where it is not installed, is
    refused by name; use_event_loop points uvicorn's 'auto' loop (the one BentoML's workers ask for) at the choice."""
    import importlib.util

    from uvicorn import config

    from serving import bentoml_fixes
    from serving.layout import event_loop_from

    assert event_loop_from("") == "asyncio" and event_loop_from(" AsyncIO ") == "asyncio" and event_loop_from("uvloop") == "uvloop"
    with pytest.raises(ValueError, match=r"BEHAVIORFLOW_EVENT_LOOP='trio': expected asyncio \(the default\) or uvloop"):
        event_loop_from("trio")
    monkeypatch.setitem(config.LOOP_FACTORIES, "auto", config.LOOP_FACTORIES["auto"])  # restored after the test
    assert bentoml_fixes.use_event_loop("asyncio") is True
    assert config.LOOP_FACTORIES["auto"] == config.LOOP_FACTORIES["asyncio"] == "uvicorn.loops.asyncio:asyncio_loop_factory"
    assert bentoml_fixes.use_event_loop("uvloop") is True and config.LOOP_FACTORIES["auto"] == config.LOOP_FACTORIES["uvloop"]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ValueError, match=r"BEHAVIORFLOW_EVENT_LOOP=uvloop, but uvloop is not installed here: install it \(pip install uvloop\), or unset"):
        event_loop_from("uvloop")


def test_server_answers_every_endpoint_serve_help_lists(server):
    """`behaviorflow serve --help` lists the endpoints; each one is there on a real server."""
    from flows.cli import SERVE_ENDPOINTS

    posts = re.findall(r"POST (/\w*)", SERVE_ENDPOINTS)
    gets = re.findall(r"(/[\w.]*)", SERVE_ENDPOINTS.split("GET ", 1)[1])
    assert posts == ["/recommend", "/score"] and {"/livez", "/readyz", "/healthz", "/metrics", "/metadata", "/", "/docs.json"} <= set(gets)
    for path in gets:
        assert httpx.get(f"{server}{path}").status_code == 200, path
    for path in posts:
        assert httpx.post(f"{server}{path}", json={"history": ["i001"], "candidates": ["i002"]} if path == "/score" else {"history": ["i001"]}).status_code == 200, path
    wrong = [httpx.get(f"{server}/recommend"), httpx.post(f"{server}/recomend", json={"history": ["i001"]}), httpx.get(f"{server}/nope")]
    assert [(w.status_code, w.json()) for w in wrong] == [(405, {"error": "Method Not Allowed: GET /recommend"}),
                                                          (404, {"error": "Not Found: POST /recomend"}), (404, {"error": "Not Found: GET /nope"})]


def test_batching_choice():
    from serving.layout import batching_from

    assert batching_from("auto") is False and batching_from("") is False and batching_from(" AUTO ") is False
    assert batching_from("1") is True and batching_from("on") is True and batching_from("off") is False
    with pytest.raises(ValueError, match=r"BEHAVIORFLOW_BATCHING='maybe': expected auto, 1 .* or 0"):
        batching_from("maybe")


def test_workers_choice():
    """BEHAVIORFLOW_WORKERS: 'auto' is a process per usable CPU unbatched, one batched or with a shadow challenger;
    a number is taken as it is, except more than one beside a shadow log; anything else is refused by name."""
    from serving.layout import workers_from

    assert workers_from("auto", 2, batching=False, shadow=False) == 2 and workers_from("", 3, batching=False, shadow=False) == 3
    assert workers_from("auto", 8, batching=True, shadow=False) == 1 and workers_from("auto", 2, batching=False, shadow=True) == 1
    assert workers_from("3", 2, batching=True, shadow=False) == 3 and workers_from(" 1 ", 2, batching=False, shadow=True) == 1
    for bad in ("0", "two", "-1", "1.5"):
        with pytest.raises(ValueError, match=rf"BEHAVIORFLOW_WORKERS='{re.escape(bad)}': expected auto or a whole number of processes \(1 or more\)"):
            workers_from(bad, 2, batching=False, shadow=False)
    with pytest.raises(ValueError, match=r"BEHAVIORFLOW_WORKERS='2': shadow mode \(BEHAVIORFLOW_SHADOW_BUNDLE\) runs in one process"):
        workers_from("2", 2, batching=False, shadow=True)


def test_layout_line_says_what_serve_will_run(monkeypatch):
    """`behaviorflow serve` says the layout before it starts the server, from the same environment; a bad
    value is refused there by name."""
    from serving import layout

    monkeypatch.setattr(layout, "usable_cpus", lambda: (2, False))
    assert layout.Layout.from_environment({}).describe() == (
        "unbatched (each request ranked alone), 2 processes (BEHAVIORFLOW_WORKERS=auto: one per usable CPU); 2 usable CPUs")
    assert layout.Layout.from_environment({"BEHAVIORFLOW_SHADOW_BUNDLE": "/b"}).describe() == (
        "unbatched (each request ranked alone), 1 process (BEHAVIORFLOW_WORKERS=auto: one writer for the shadow log); 2 usable CPUs")
    monkeypatch.setattr(layout, "usable_cpus", lambda: (16, False))  # 'auto' is unbatched on any number of CPUs
    assert layout.Layout.from_environment({}).describe() == (
        "unbatched (each request ranked alone), 16 processes (BEHAVIORFLOW_WORKERS=auto: one per usable CPU); 16 usable CPUs")
    assert layout.Layout.from_environment({"BEHAVIORFLOW_BATCHING": "1"}).describe() == (
        "batched (a Ranker service batches requests), 1 process (BEHAVIORFLOW_WORKERS=auto: in front of the Ranker); 16 usable CPUs")
    monkeypatch.setattr(layout, "usable_cpus", lambda: (4, True))
    assert layout.Layout.from_environment({"BEHAVIORFLOW_WORKERS": "3", "BEHAVIORFLOW_BATCHING": "1"}).describe() == (
        "batched (a Ranker service batches requests), 3 processes; 4 usable CPUs (the container's CPU quota)")
    with pytest.raises(ValueError, match=r"BEHAVIORFLOW_BATCHING='sometimes'"):
        layout.Layout.from_environment({"BEHAVIORFLOW_BATCHING": "sometimes"})
    assert layout.Layout.from_environment({"BEHAVIORFLOW_EVENT_LOOP": "uvloop"}).describe().endswith(
        "4 usable CPUs (the container's CPU quota); on uvloop (BEHAVIORFLOW_EVENT_LOOP)")
    with pytest.raises(ValueError, match=r"BEHAVIORFLOW_EVENT_LOOP='libuv'"):
        layout.Layout.from_environment({"BEHAVIORFLOW_EVENT_LOOP": "libuv"})


def test_auto_layout_reads_a_containers_cpu_quota(tmp_path):
    """A pod limited to 2 CPUs on a big node sees the node's CPUs in its affinity: 'auto' would start a process
    per node core, and the batched Ranker an ORT thread per node core. The cgroup quota is what counts."""
    from serving.layout import cpu_quota, workers_from

    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("200000 100000\n")
    assert cpu_quota(v2) == 2 and workers_from("auto", cpu_quota(v2), batching=False, shadow=False) == 2
    (v2 / "cpu.max").write_text("150000 100000\n")
    assert cpu_quota(v2) == 2  # 1.5 CPUs: rounded up
    (v2 / "cpu.max").write_text("max 100000\n")
    assert cpu_quota(v2) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("400000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu_quota(v1) == 4
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cpu_quota(v1) is None and cpu_quota(tmp_path / "none") is None


@pytest.mark.parametrize("switch", [contract.ACCESS_LOG_ENV, contract.TRACING_ENV])
def test_service_switches_refuse_other_values(switch):
    probe = subprocess.run([sys.executable, "-c", "import serving.service"], cwd=ROOT, capture_output=True, text=True,
                           env={**os.environ, switch: "maybe"})
    assert probe.returncode != 0
    assert f"{switch}='maybe': expected 1 or 0" in probe.stderr


def _answer_and_its_log_line(url: str, log: Path) -> tuple[httpx.Response, str]:
    """A /recommend answer with a marker history length, and the server's access log line for it."""
    history = [item_id(i) for i in range(1, 8)]
    response = httpx.post(f"{url}/recommend", json={"history": history, "k": 3})
    assert response.status_code == 200, response.text
    length = len(response.request.content)
    time.sleep(0.5)  # the access log is written after the response
    lines = [line for line in log.read_text().splitlines() if "path=/recommend" in line and f"length={length})" in line]
    assert lines, log.read_text()[-2000:]
    return response, lines[-1]


def test_api_routes_are_untraced_by_default(server, request):
    """By default /recommend and /score stay out of BentoML's OpenTelemetry middleware (its spans are never
    recorded at BentoML's default sample rate, and cost CPU): no request id, no trace ids in the access log;
    nor the batched layout's internal /rank. (BEHAVIORFLOW_TRACING=1: test_tracing_switch_puts_the_api_routes_back, at the end of this file.)"""
    response, line = _answer_and_its_log_line(server, SERVER_LOGS[server])
    assert "X-BentoML-Request-ID" not in response.headers and "trace=" not in line, (dict(response.headers), line)
    ranker = [line for line in SERVER_LOGS[server].read_text().splitlines() if "path=/rank," in line]  # batched: its Ranker's calls
    assert len(ranker) > 0 if request.node.callspec.params["server"] == "1" else ranker == []
    assert [line for line in ranker if "trace=" in line] == []


def test_server_with_bentoml_client(server, table, users):
    with bentoml.SyncHTTPClient(server) as client:
        by_history = client.recommend(history=["i003", "i005", "i007"], k=10, exclude_seen=True)
        by_user = client.recommend(user_id="u2", k=4)
        scored = client.score(history=["i003", "i005"], candidates=["i007", "i003", "i020"])
        popular = client.recommend(history=[], k=4)
        with pytest.raises(BentoMLException, match=r"unknown item ids \['nope'\]") as err:
            client.recommend(history=["nope"])
    assert_matches(by_history, table, ["i003", "i005", "i007"], 10, True)
    assert_popular(popular, users, 4)
    assert_matches(by_user, table, users["u2"], 4, True)
    assert_probabilities(scored, table, ["i003", "i005"], ["i007", "i003", "i020"])
    assert err.value.error_code == 400


def test_server_with_raw_http(server, table, users):
    popular = httpx.post(f"{server}/recommend", json={"history": [], "k": 6})
    assert popular.status_code == 200, popular.text
    assert_popular(popular.json(), users, 6)
    history = [item_id(i) for i in np.random.default_rng(3).integers(1, N_ITEMS + 1, size=500)]
    response = httpx.post(f"{server}/recommend", json={"history": history, "k": 3, "exclude_seen": False})
    assert response.status_code == 200, response.text
    assert_matches(response.json(), table, history, 3, False)
    candidates = [item_id(i) for i in range(N_ITEMS, 0, -1)]
    scored = httpx.post(f"{server}/score", json={"history": history, "candidates": candidates})
    assert scored.status_code == 200, scored.text
    assert_probabilities(scored.json(), table, history, candidates)
    assert sum(row["probability"] for row in scored.json()["scores"]) == pytest.approx(1.0, abs=PROBABILITY_TOL)


def test_server_metadata_and_probes(server, model_tag):
    meta = httpx.get(f"{server}/metadata")
    assert meta.status_code == 200
    body = meta.json()
    assert set(body) == set(contract.ServiceMetadata.model_fields)
    assert body["bento_model_tag"] == model_tag and body["bento_tag"] is None  # served from source
    assert (body["model_name"], body["model_version"], body["alias"]) == (MODEL_NAME, REGISTRY_VERSION, None)
    assert body["metrics"] == {"HR@10": 0.5, "NDCG@10": 0.25} and body["data_fingerprint"] == "abc"
    assert body["created_at"] == CREATED_AT and body["can_score"] is True
    for probe in ("/healthz", "/livez", "/readyz"):  # BentoML's own; /readyz only after both warm-ups
        assert httpx.get(f"{server}{probe}").status_code == 200, probe
    # The Ranker is internal: its API is not on the public port.
    assert httpx.post(f"{server}/rank", json={"queries": []}).status_code == 404


def test_server_batches_concurrent_requests_and_stays_exact(server, table, request):
    """Concurrent requests of mixed lengths meet in the Ranker's batches (unbatched: each request is ranked
    alone, in whichever of the two processes took it); every answer is still exact."""
    batched = request.node.callspec.params["server"] == "1"
    rng = np.random.default_rng(11)
    histories = [[item_id(int(i)) for i in rng.integers(1, N_ITEMS + 1, size=int(n))]
                 for n in rng.choice([1, 2, 3, 5, 9, 17, 25, 60], size=150)]

    def batches() -> tuple[float, float]:
        text = httpx.get(f"{server}/metrics").text
        found = {}
        for name in ("sum", "count"):
            match = re.search(rf'^bentoml_service_adaptive_batch_size_{name}{{[^}}]*method_name="rank"[^}}]*}} (\S+)$', text, re.M)
            found[name] = float(match.group(1)) if match else 0.0
        return found["sum"], found["count"]

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=64)) as client:
            return await asyncio.gather(*(
                client.post(f"{server}/recommend", json={"history": h, "k": 5}) if j % 3 else
                client.post(f"{server}/score", json={"history": h, "candidates": ["i001", "i017"]})
                for j, h in enumerate(histories)
            ))

    queries_before, batches_before = batches()
    responses = asyncio.run(fire())
    queries, n_batches = (a - b for a, b in zip(batches(), (queries_before, batches_before)))
    for j, (history, response) in enumerate(zip(histories, responses)):
        assert response.status_code == 200, response.text
        if j % 3:
            assert_matches(response.json(), table, history, 5, True)
        else:
            assert_probabilities(response.json(), table, history, ["i001", "i017"])
    print(f"{len(histories)} concurrent requests: {queries:.0f} ranker queries in {n_batches:.0f} batches")
    if batched:
        assert queries == len(histories)
        assert n_batches < queries  # at least one batch held more than one request
    else:
        assert queries == n_batches == 0  # no adaptive batching in the unbatched layout
        time.sleep(0.5)  # the access log is written after the response
        answered_by = set(re.findall(r"\[entry_service:behaviorflow_recommender:(\d+)\][^\n]*path=/(?:recommend|score)", SERVER_LOGS[server].read_text()))
        assert answered_by == {"1", "2"}  # both worker processes took requests


@pytest.mark.parametrize(
    "route, body, status, needles",
    [
        ("/recommend", {"history": ["i001"], "k": 0}, 400, ["k: Input should be greater than or equal to 1"]),
        ("/recommend", {"history": ["i001"], "k": 101}, 400, ["k: Input should be less than or equal to 100"]),
        ("/recommend", {"history": ["i001"], "k": "ten"}, 400, ["k: Input should be a valid integer"]),
        ("/recommend", {"user_id": "u0", "history": ["i001"]}, 400, ["exactly one of 'user_id' or 'history'"]),
        ("/recommend", {}, 400, ["exactly one of 'user_id' or 'history'"]),
        ("/recommend", {"history": "i001"}, 400, ["history: Input should be a valid array"]),
        ("/recommend", {"history": [1, 2]}, 400, ["history.0: Input should be a valid string; history.1: Input should be a valid string"]),
        ("/recommend", {"user_id": "u0", "exclude_seen": "maybe"}, 400, ["exclude_seen: Input should be a valid boolean"]),
        # strict: no guessing at a wrong JSON type or an unknown field
        ("/recommend", {"history": ["i001"], "k": True}, 400, ["k: Input should be a valid integer"]),
        ("/recommend", {"history": ["i001"], "k": "10"}, 400, ["k: Input should be a valid integer"]),
        ("/recommend", {"history": ["i001"], "exclude_seen": 0}, 400, ["exclude_seen: Input should be a valid boolean"]),
        ("/recommend", {"history": ["i001"], "top_k": 3}, 400, ["top_k: not a field of this request, which takes user_id, history, k, exclude_seen, new_items, new_item_boost"]),
        ("/score", {"history": ["i001"], "candidates": ["i002"], "k": 3}, 400, ["k: not a field of this request, which takes history, candidates"]),
        ("/recommend", {"history": ["nope", "i001", "zz"]}, 400, ["history: unknown item ids ['nope', 'zz']", "30 items"]),
        ("/recommend", {"user_id": "ghost"}, 404, ["user_id: unknown user 'ghost'"]),
        ("/recommend", "{not json", 400, ["Invalid JSON"]),
        ("/recommend", "[1, 2]", 400, ["request body: Input should be an object"]),
        ("/recommend", {"history": ["i001"] * 2001}, 400, ["history: List should have at most 2000 items"]),
        ("/score", {"history": ["i001"], "candidates": ["i002"] * 1001}, 400, ["candidates: List should have at most 1000 items"]),
        ("/score", {"history": ["i001"] * 2001, "candidates": ["i002"]}, 400, ["history: List should have at most 2000 items"]),
        ("/score", {"history": ["i001"], "candidates": []}, 400, ["candidates: List should have at least 1 item"]),
        ("/score", {"history": [], "candidates": ["i002"]}, 400, ["history: List should have at least 1 item"]),
        ("/score", {"candidates": ["i002"]}, 400, ["history: Field required"]),
        ("/score", {"history": ["i001", "no"], "candidates": ["i002", "zz"]}, 400,
         ["history: unknown item ids ['no']; candidates: unknown item ids ['zz']"]),
    ],
)
def test_server_rejects_bad_payloads(server, body, status, needles, route):
    if isinstance(body, str):
        headers = {"content-type": "application/json"}
        response = httpx.post(f"{server}{route}", content=body, headers=headers)
    else:
        response = httpx.post(f"{server}{route}", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]  # what a client shows: it names the field and the problem
    for needle in needles:
        assert needle in error, response.text


def test_every_client_error_is_one_json_object_and_one_info_log_line(server):
    """Clients read `error` from any 4xx (BentoML sent its own errors as a one-element list); a form body
    is a 415 naming the header; the server logs a client's mistake as one INFO line, not an ERROR with a
    traceback."""
    answers = [
        httpx.post(f"{server}/recommend", json={"history": ["nope", "i001"]}),
        httpx.post(f"{server}/recommend", json={"user_id": "ghost"}),
        httpx.post(f"{server}/recommend", json={"history": ["i001"], "k": 0}),
        httpx.post(f"{server}/recommend", content='{"history": ["i001"]', headers={"content-type": "application/json"}),
        httpx.post(f"{server}/score", data={"history": "i001", "candidates": "i002"}),  # a form, as curl -d sends
    ]
    assert [a.status_code for a in answers] == [400, 404, 400, 400, 415]
    bodies = [a.json() for a in answers]
    assert all(isinstance(b, dict) and isinstance(b["error"], str) for b in bodies), bodies
    assert bodies[0]["error"].startswith("history: unknown item ids ['nope']")
    assert bodies[1]["error"].startswith("user_id: unknown user 'ghost'") and "'history': [] for the most popular items" in bodies[1]["error"]
    assert bodies[2]["error"] == "k: Input should be greater than or equal to 1" and bodies[2]["detail"][0]["loc"] == ["k"]
    assert bodies[4] == {"error": "Content-Type: 'application/x-www-form-urlencoded'; /score takes a JSON body: send it with "
                                  "the header 'Content-Type: application/json' (curl: -H 'content-type: application/json')"}
    assert int(answers[0].headers["content-length"]) == len(answers[0].content)
    time.sleep(0.5)
    log = SERVER_LOGS[server].read_text()
    assert "Traceback" not in log and "[ERROR]" not in log and " ERROR " not in log, log[-3000:]
    assert "client error on /recommend [POST]: 404 user_id: unknown user 'ghost'" in log
    assert "client error on /recommend [POST]: 400 1 validation error(s): k: Input should be greater than or equal to 1" in log


def test_server_limits_the_body_size(server):
    headers = {"content-type": "application/json"}
    declared = httpx.post(f"{server}/recommend", content='{"history": ["' + "x" * (1 << 20) + '"]}', headers=headers)
    assert declared.status_code == 413
    assert "request body: 1048593 bytes, the limit is 1048576 bytes" in declared.text

    def chunks(n: int):  # a chunked body carries no Content-Length: it is counted as it arrives
        yield b'{"history": ["'
        for _ in range(n):
            yield b"x" * 100_000
        yield b'"]}'

    too_big = httpx.post(f"{server}/recommend", content=chunks(11), headers=headers)
    assert too_big.status_code == 413 and "the limit is 1048576 bytes" in too_big.text
    fits = httpx.post(f"{server}/recommend", content=chunks(1), headers=headers)
    assert fits.status_code == 400 and "unknown item ids" in fits.text  # read, parsed, answered


# ---------------------------------------------------------------------------------------- packaging


def test_save_bundle_to_store(model_tag, bundle_dir):
    model = bentoml.models.get(model_tag)
    assert model.tag.name == "behaviorflow-recommender"
    assert model.info.labels == {"source": "tests"} and model.info.metadata == {"data_fingerprint": "abc"}
    for name in (contract.MODEL_FILE, contract.ITEMS_FILE, contract.USERS_FILE, contract.MANIFEST_FILE,
                 contract.ITEM_VECTORS_FILE):
        assert Path(model.path_of(name)).read_bytes() == (bundle_dir / name).read_bytes()


def test_save_bundle_rejects_incomplete_bundle(tmp_path):
    (tmp_path / contract.MODEL_FILE).write_bytes(b"")
    with pytest.raises(BehaviorflowError, match=r"missing \['items.json', 'manifest.json'\]"):
        save_bundle_to_store(tmp_path)


@pytest.fixture(scope="module")
def bento_tag(model_tag):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(MODEL_TAG_ENV, "someone-elses-model:1")
        mp.setenv(contract.BATCHING_ENV, "0")  # as on a small build machine: the Bento must still hold the Ranker
        tag = build_bento(model_tag, labels={"registry_version": "7"}, version="t1")
        assert os.environ[MODEL_TAG_ENV] == "someone-elses-model:1"  # restored
        assert os.environ[contract.BATCHING_ENV] == "0"
    return tag


def test_bento_is_slim_and_records_the_model(bento_tag, model_tag):
    assert bento_tag == "behaviorflow_recommender:t1"
    requirements = bento_requirements(bento_tag)
    names = [req.split("==")[0].split(">")[0].split("<")[0].strip().lower() for req in requirements]
    assert "onnxruntime==1.32.0" in requirements
    assert {"uvloop", "httptools"} <= set(names)  # the server's fast loop and HTTP parser (test_server_runs_on_uvloop_and_httptools)
    assert not set(names) & set(TRAINING_STACK), requirements
    bento = bentoml.bentos.get(bento_tag)
    assert [str(m.tag) for m in bento.info.all_models] == [model_tag]
    assert bento.info.labels["registry_version"] == "7"
    src = Path(bento.path) / "src"
    files = sorted(p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file())
    assert {"serving/service.py", "serving/contract.py", "serving/sample_request.json"} <= set(files)
    packaged = [f for f in files if f != "bentofile.yaml"]
    assert all(f.startswith("serving/") and f.endswith((".py", ".json")) for f in packaged), files


def test_a_bento_can_be_built_from_another_serving_folder(model_tag, tmp_path):
    """build_bento(source=...) packages that folder (benchmarks/serving_ab.py builds another commit's serving/)."""
    source = tmp_path / "serving"
    shutil.copytree(ROOT / "serving", source, ignore=shutil.ignore_patterns("__pycache__"))
    marked = (source / "service.py").read_text() + "\n# built from another folder\n"
    (source / "service.py").write_text(marked)
    tag = build_bento(model_tag, version="from-checkout")
    other = build_bento(model_tag, version="from-folder", source=source)
    try:
        assert (Path(bentoml.bentos.get(other).path) / "src" / "serving" / "service.py").read_text() == marked
        assert (Path(bentoml.bentos.get(tag).path) / "src" / "serving" / "service.py").read_text() == (ROOT / "serving" / "service.py").read_text()
    finally:
        for t in (tag, other):
            bentoml.bentos.delete(t)


@pytest.mark.parametrize("layout", ["1", "0"], ids=["batched", "unbatched"])
def test_built_bento_serves_and_names_itself(bento_tag, model_tag, table, tmp_path, layout):
    """The Bento (both services, one recorded model, whatever layout the building machine would pick)
    serves from the store in either layout and reports its own tag."""
    with bentoml_serve(model_tag, tmp_path / "serve-bento.log", target=bento_tag, env={contract.BATCHING_ENV: layout}) as url:
        meta = httpx.get(f"{url}/metadata").json()
        response = httpx.post(f"{url}/recommend", json={"history": ["i003", "i005"], "k": 4}).json()
    assert meta["bento_tag"] == bento_tag and meta["bento_model_tag"] == model_tag
    assert_matches(response, table, ["i003", "i005"], 4, True)


def test_export_bento(bento_tag, model_tag, tmp_path):
    path = export_bento(bento_tag, tmp_path / "out" / "recommender.bento")
    assert path == tmp_path / "out" / "recommender.bento" and path.stat().st_size > 0
    print(f".bento archive: {path.stat().st_size} bytes")
    with tarfile.open(path) as archive:
        names = archive.getnames()
    name, version = model_tag.split(":")
    assert any(n.endswith(f"models/{name}/{version}/{contract.MODEL_FILE}") for n in names), names
    assert any(n.endswith("src/serving/service.py") for n in names), names


def test_shadow_mode_records_the_challenger_off_the_response_path(model_tag, table, tmp_path, monkeypatch):
    """In-process: the champion answers; the challenger bundle (another model) is logged beside it."""
    from components.evaluation.shadow import compare_shadow_log
    from serving.shadow import SHADOW_BUNDLE_ENV, SHADOW_LOG_ENV

    challenger = make_tiny_bundle(tmp_path / "challenger", n_items=N_ITEMS, dim=DIM, seed=SEED + 5)
    log = tmp_path / "shadow.jsonl"
    monkeypatch.setenv(SHADOW_BUNDLE_ENV, str(challenger))
    monkeypatch.setenv(SHADOW_LOG_ENV, str(log))
    service = load_service(model_tag)
    history = ["i003", "i005", "i007"]
    answer = service.recommend(history=history, k=5)
    service.recommend(history=[], k=5)  # the most popular items: no model ranked them, nothing to compare
    service.shadow.flush()
    record = json.loads(log.read_text().splitlines()[0])
    assert record["champion"] == [r.item_id for r in answer.items]  # what the client got
    want, _ = reference_top_k(embeddings(N_ITEMS, DIM, SEED + 5), indices(history), 5, True)
    assert record["challenger"] == [f"i{i:03d}" for i in want]  # what the challenger would have said
    assert record["history"] == history and record["k"] == 5 and len(log.read_text().splitlines()) == 1
    report = compare_shadow_log(log)
    assert report.requests == 1 and 0.0 <= report.mean_overlap_at_k <= 1.0
    service.shutdown()  # what BentoML calls when the server stops: the recorder says what it wrote
    assert service.shadow.counts() | {"write_error": None} == {"champion": service.shadow.champion_model, "challenger": "tiny-recommender/7", "log": str(log), "recorded": 1, "dropped": 0,
                                                             "failed": 0, "queued": 0, "write_error": None}
    assert service.metadata().shadow["recorded"] == 1


def test_shadow_counts_reach_the_serve_log_at_shutdown(model_tag, tmp_path):
    """A real `bentoml serve` with a shadow challenger, stopped as an operator stops it (SIGTERM): the
    recorder's closing line (recorded / dropped / failed) is in the server's log output. BentoML's server
    logging config sets the root logger to WARNING, so an INFO line from a logger of ours went nowhere."""
    from serving.shadow import SHADOW_BUNDLE_ENV, SHADOW_LOG_ENV

    challenger = make_tiny_bundle(tmp_path / "challenger", n_items=N_ITEMS, dim=DIM, seed=SEED + 5)
    shadow_log, serve_log = tmp_path / "shadow.jsonl", tmp_path / "serve.log"
    env = {contract.BATCHING_ENV: "0", SHADOW_BUNDLE_ENV: str(challenger), SHADOW_LOG_ENV: str(shadow_log)}
    with bentoml_serve(model_tag, serve_log, env=env) as url:
        for history in (["i001"], ["i002", "i003"], ["i004"]):
            assert httpx.post(f"{url}/recommend", json={"history": history, "k": 3}).status_code == 200
        deadline = time.monotonic() + 20
        while (not shadow_log.exists() or len(shadow_log.read_text().splitlines()) < 3) and time.monotonic() < deadline:
            time.sleep(0.1)
    # bentoml_serve has stopped the server with SIGTERM, as `kill`, Kubernetes and Ctrl-C (SIGINT) do
    text = serve_log.read_text()
    assert f"shadow log {shadow_log}: 3 recorded, 0 dropped (queue full), 0 failed, 0 left unwritten at shutdown" in text, text[-3000:]


def test_batch_ranking_pads_each_length_group_to_its_own_longest_and_keeps_the_order(tmp_path):
    """Batch prediction and evaluation rank through BundleRanker.topk. Histories of mixed lengths used to go to the graph
    in the given order, each call padded to its batch's longest: one long history made every short one beside it pay
    for its length. Now each call holds one length group (as the service batches), and answers come back in order."""
    from serving.ranking import BundleRanker

    bundle = make_tiny_bundle(tmp_path / "bundle", n_items=N_ITEMS, dim=DIM, seed=SEED)
    rng = np.random.default_rng(5)
    lengths = [1, 20, 2, 3, 17, 1, 9, 2]
    histories = [[item_id(int(i)) for i in rng.integers(1, N_ITEMS + 1, size=n)] for n in lengths]
    ranker = BundleRanker(bundle)
    shapes = []
    run = ranker.session.run
    ranker.session = type("Recording", (), {"run": lambda self, outputs, feeds: shapes.append(feeds[contract.INPUT_HISTORY].shape) or run(outputs, feeds)})()
    answers = ranker.topk(histories, 5, batch_size=3)
    assert sorted(shapes) == sorted([(2, 1), (2, 2), (1, 3), (1, 9), (2, 20)])  # groups ≤1, ≤2, ≤4, ≤16 and the rest (max_len 20), in calls of ≤ 3
    assert answers == [BundleRanker(bundle).topk([h], 5)[0] for h in histories]  # each history's own answer, in the given order


def test_tracing_switch_puts_the_api_routes_back(model_tag, tmp_path):
    """BEHAVIORFLOW_TRACING=1, for a team that has configured BentoML's tracing: /recommend is traced again (a
    request id in the response, trace and span ids in its access log line). At the end of the file: a second
    `bentoml serve` under the same BentoML home empties the Prometheus folder the `server` fixture's metrics live in."""
    log = tmp_path / "serve-traced.log"
    with bentoml_serve(model_tag, log, env={contract.BATCHING_ENV: "0", contract.WORKERS_ENV: "1", contract.TRACING_ENV: "1"}) as url:
        response, line = _answer_and_its_log_line(url, log)
    assert re.fullmatch(r"[0-9a-f]{16}", response.headers["X-BentoML-Request-ID"]), dict(response.headers)
    assert re.search(r"\(trace=[0-9a-f]{32},span=[0-9a-f]{16},sampled=0", line), line


def test_event_loop_setting_runs_the_server_on_uvloop(model_tag, tmp_path):
    """BEHAVIORFLOW_EVENT_LOOP=uvloop puts the workers on uvloop: the setting reaches the server, not just the layout
    line. At the end of the file, as the tracing switch's test (a second `bentoml serve` under the same BentoML home)."""
    from serving.contract import BATCHING_ENV, EVENT_LOOP_ENV, WORKERS_ENV

    with bentoml_serve(model_tag, tmp_path / "serve.log", env={BATCHING_ENV: "0", WORKERS_ENV: "1", EVENT_LOOP_ENV: "uvloop"}) as url:
        assert httpx.post(f"{url}/recommend", json={"history": ["i001"], "k": 2}).status_code == 200
        [worker] = server_workers(url)
        assert mapped_packages(worker, ("uvloop", "httptools")) == {"uvloop", "httptools"}
