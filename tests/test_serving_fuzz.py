"""Fuzzing the served OpenAPI spec with schemathesis: no request, valid or not, gets a 5xx.

Every operation of the spec a real `bentoml serve` publishes at /docs.json (POST /recommend and /score,
GET /healthz, /livez, /readyz, /metrics), plus GET /metadata, which BentoML leaves out of its spec (it
only documents mounted FastAPI apps; ours is plain Starlette), gets MAX_EXAMPLES generated requests in
each of schemathesis' two modes: positive (bodies that fit the schema: mostly unknown item ids, empty or
very long lists, odd strings) and negative (bodies that do not: wrong types, missing fields, values out
of range; only for operations that take input). A 4xx is a correct answer to most of them; a 5xx never is.

Random strings are almost never item ids, so a second pass draws the ids from the model's catalog (and
user ids from its users): those requests reach the model, and its answers must be 2xx or 4xx too.
"""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.configuration import set_hypothesis_home_dir
from schemathesis import GenerationMode

from components.packaging import save_bundle_to_store
from serving import contract
from tests.helpers import bentoml_serve
from tests.tiny_bundle import make_tiny_bundle

# Hypothesis keeps caches in ./.hypothesis by default: keep them in the session's throw-away state folder.
set_hypothesis_home_dir(Path(os.environ["BEHAVIORFLOW_HOME"]) / "hypothesis")

MAX_EXAMPLES = 50  # per operation and mode
FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,  # a server round trip, not the code under Hypothesis, sets the pace
    database=None,  # no example database: every run draws afresh
    phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure is reported as found, with its body
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
METADATA_OPERATION = {
    "get": {
        "summary": "which model answers: name, registry version, alias, metrics, data fingerprint, tags",
        "responses": {"200": {"description": "serving.contract.ServiceMetadata as JSON"}},
    }
}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_tiny_bundle(tmp_path_factory.mktemp("fuzz") / "bundle", new_items=[2, 7, 19])  # new_items has places to keep


@pytest.fixture(scope="module")
def server(bundle, tmp_path_factory):
    with bentoml_serve(save_bundle_to_store(bundle), tmp_path_factory.mktemp("fuzz-server") / "serve.log") as url:
        yield url


@pytest.fixture(scope="module")
def spec(server) -> dict:
    spec = httpx.get(f"{server}/docs.json").json()
    spec["paths"].setdefault("/metadata", METADATA_OPERATION)
    return spec


def with_catalog_ids(spec: dict, item_ids: list[str], user_ids: list[str]) -> dict:
    """The spec with every item id drawn from `item_ids` and every user id from `user_ids` (plus one
    stranger), and a /recommend body of exactly one of user_id or history (what its validator demands,
    which the served schema cannot say), so that most requests are valid."""
    spec = copy.deepcopy(spec)

    def narrow(node, field: str | None = None) -> None:
        if isinstance(node, list):
            for child in node:
                narrow(child, field)
        elif isinstance(node, dict):
            if field in ("history", "candidates") and node.get("items") == {"type": "string"}:
                node["items"] = {"type": "string", "enum": item_ids}
            if field == "user_id" and node.get("type") == "string":
                node["enum"] = [*user_ids, "stranger"]
            for key, child in node.items():
                narrow(child, field)
                if key == "properties":
                    for name, prop in child.items():
                        narrow(prop, name)

    narrow(spec["paths"])
    body = spec["paths"]["/recommend"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    properties = body["properties"]
    options = {name: properties[name] for name in ("k", "exclude_seen")}
    body.clear()
    body["anyOf"] = [
        {"type": "object", "properties": {source: properties[source], **options}, "required": [source], "additionalProperties": False}
        for source in ("user_id", "history")
    ]
    return spec


def fuzz_all(server: str, spec: dict, modes: tuple[GenerationMode, ...]) -> dict[str, dict[int, int]]:
    """Run every operation of `spec` MAX_EXAMPLES times per mode; fail on any 5xx; count the statuses."""
    schema = schemathesis.openapi.from_dict(spec)
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = {op.label for op in operations}
    assert {"POST /recommend", "POST /score", "GET /metadata", "GET /healthz", "GET /readyz"} <= labels, labels
    counts: dict[str, dict[int, int]] = {}
    with requests.Session() as session:  # schemathesis' own transport, one keep-alive connection
        for operation in operations:
            takes_input = any(len(group) for group in (operation.body, operation.query, operation.headers, operation.path_parameters))
            # A GET without parameters has no invalid form: negative mode could only give up (Unsatisfiable).
            for mode in modes if takes_input else (GenerationMode.POSITIVE,):
                statuses = counts.setdefault(f"{operation.label} ({mode.value})", {})

                @FUZZ_SETTINGS
                @given(case=operation.as_strategy(generation_mode=mode))
                def fuzz(case) -> None:
                    response = case.call(base_url=server, session=session, timeout=30)
                    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                    assert response.status_code < 500, (
                        f"{operation.label} ({mode.value}) answered {response.status_code}; reproduce with\n"
                        f"{case.as_curl_command()}\n{response.content[:500]!r}"
                    )

                fuzz()
    return counts


def report(title: str, counts: dict[str, dict[int, int]], seconds: float) -> None:
    print(f"{title}: {sum(sum(s.values()) for s in counts.values())} requests in {seconds:.1f} s")
    for label, statuses in sorted(counts.items()):
        print(f"  {label}: {dict(sorted(statuses.items()))}")


def test_no_request_gets_a_5xx(server, spec):
    started = time.monotonic()
    counts = fuzz_all(server, spec, (GenerationMode.POSITIVE, GenerationMode.NEGATIVE))
    report("any strings", counts, time.monotonic() - started)
    assert all(counts[f"GET {path} (positive)"].get(200) for path in ("/metadata", "/healthz", "/readyz"))


def test_no_request_with_catalog_ids_gets_a_5xx(server, spec, bundle):
    item_ids = [row["item_id"] for row in json.loads((bundle / contract.ITEMS_FILE).read_text())]
    user_ids = list(json.loads((bundle / contract.USERS_FILE).read_text()))
    started = time.monotonic()
    counts = fuzz_all(server, with_catalog_ids(spec, item_ids, user_ids), (GenerationMode.POSITIVE,))
    report("catalog ids", counts, time.monotonic() - started)
    # These requests reached the model: many are answered, not only rejected.
    assert counts["POST /recommend (positive)"].get(200, 0) >= MAX_EXAMPLES // 5
    assert counts["POST /score (positive)"].get(200, 0) >= MAX_EXAMPLES // 5
