"""The Bento service a serving team runs: recommendations and next-item probabilities from an exported
ONNX bundle (serving/contract.py).

It needs bentoml, onnxruntime, numpy, pydantic and `serving.contract` only (its Bento adds httptools, which uvicorn
then parses HTTP with, and uvloop, which it runs on only with BEHAVIORFLOW_EVENT_LOOP=uvloop) — never the training stack
(torch, transformers, prefect, mlflow, great_expectations, pandas) — so the Bento stays small and fast
to start. Run it from the repository root:

    BEHAVIORFLOW_MODEL_TAG=behaviorflow-recommender:<version> \\
        bentoml serve serving.service:Recommender --host 127.0.0.1 --port 3000

    curl -s -X POST localhost:3000/recommend -H 'content-type: application/json' \\
        -d @serving/sample_request.json                     # items of the bundled sample catalog
    curl -s -X POST localhost:3000/score -H 'content-type: application/json' \\
        -d '{"history": ["P0216", "P0396"], "candidates": ["P0004", "P0096"]}'
    curl -s localhost:3000/metadata        # also /healthz and /livez (alive), /readyz (warmed up), /metrics, / (API docs; /docs.json)

Two services, one process each (BentoML starts both):

    Recommender  the HTTP API: validates requests, maps item ids to indices, filters, explains, scores
      └─ Ranker  owns the ONNX session; its `rank` API is adaptively batched (BentoML 1.4 batches an API
                 of exactly one argument, so the per-request options travel inside it, as BentoML's
                 "Handle multiple parameters" guide does), and inside each batch histories are grouped by
                 length, each group padded only to its own longest, so short requests never pay for long
                 ones. Its warm-up runs before /readyz answers 200.

BEHAVIORFLOW_BATCHING (read when this module is imported, so set it for `bentoml serve`) chooses between
the two layouts. 0 (also 'false', 'no', 'off') turns the Ranker service off: Recommender builds a Ranker
in its own process, with its own ONNX session, and runs each request's history through the graph alone,
on the process's event loop — no adaptive batching, no hop between services or threads. 1 is the batched pair. 'auto'
(the default) is the unbatched layout on any number of CPUs: per request answered, the batched pair took
more CPU time on catalogs of 3,416 and 100,000 items (6.7x and 2.1x with 8 clients) and about as much on
300,000, answered fewer requests and took 9x or more the median latency at 200 req/s (serving/layout.py);
and its front (one process by default) caps what it can answer on any machine. Responses are the same either way: the same items,
`because` and scores, up to float32 rounding (a batched history shares its padding with its length group).

BEHAVIORFLOW_WORKERS sets how many processes run Recommender (BentoML's workers, sharing the port). Its
'auto' runs one per usable CPU in the unbatched layout: a request's parsing, checks and JSON hold its
process's GIL far longer than its ONNX call, so one process kept about one core busy. Each process loads
its own copy of the bundle (item table, user histories, ONNX session).

BEHAVIORFLOW_TRACING (default 0) leaves /recommend and /score (and the batched Ranker's /rank) out of BentoML's OpenTelemetry middleware,
whose spans BentoML's default tracing never records; 1 traces them as BentoML is configured to (see _TRACING).

Shadow mode (serving/shadow.py): with BEHAVIORFLOW_SHADOW_BUNDLE and BEHAVIORFLOW_SHADOW_LOG set (as
`behaviorflow serve --shadow challenger` does), every /recommend answer is also ranked by the challenger's
bundle in a background thread and both lists are appended to the JSONL log, off the response path.

An empty `history` (a new user) is answered with the training's most popular items (the bundle's
popularity list), `source: "popularity"`, without asking the model.

Status codes: a malformed body (types, k out of 1..100, both or neither of user_id/history, a too long
history, too many candidates) is a 400 from the request model's validation, naming the field; unknown
item ids are a 400 listing them; an empty history is a 400 only for a bundle without a popularity list
(exported before it); an unknown user is a 404 (see `_history_of`); a body over MAX_BODY_BYTES is a
413; POST /score on a bundle without item vectors is a 501; a wrong path or method is a 404 or 405. Every 4xx body is
one JSON object {"error": ...} (RequestGuard). Nothing a client sends causes another 5xx;
a 503 means the ranker is overloaded (a request waited longer than BATCH_MAX_LATENCY_MS).
"""

from __future__ import annotations

import gc
import json
import logging
import os
from http import HTTPStatus
from pathlib import Path
from typing import Any, Callable

import aiohttp  # BentoML's own client between services (see Recommender._rank)
import bentoml
import numpy as np
import pydantic
from bentoml.exceptions import BentoMLException, InvalidArgument, NotFound
from pydantic import BaseModel
from starlette.applications import Starlette  # BentoML's own HTTP layer: adds nothing to the Bento
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from serving.contract import (
    ACCESS_LOG_ENV,
    BENTO_MODEL_NAME,
    BENTO_SERVICE_NAME,
    INPUT_EXCLUDE_SEEN,
    INPUT_HISTORY,
    ITEM_VECTORS_FILE,
    MAX_BECAUSE,
    MAX_BODY_BYTES,
    MAX_CANDIDATES,
    MAX_HISTORY,
    MAX_K,
    MODEL_ALIAS_ENV,
    MODEL_TAG_ENV,
    POPULARITY_MISSING,
    TRACING_ENV,
    NewItemPolicy,
    OUTPUT_ITEMS,
    OUTPUT_SCORES,
    OUTPUT_USER,
    PAD_INDEX,
    Bundle,
    CandidateScore,
    Recommendation,
    RecommendRequest,
    RecommendResponse,
    ScoreRequest,
    ScoreResponse,
    ServiceMetadata,
    length_groups,
    pad_histories,
)
from serving import bentoml_fixes
from serving.layout import Layout
from serving.ranking import BundleRanker, env_switch, ort_session
from serving.shadow import SHADOW_BUNDLE_ENV, SHADOW_LOG_ENV, ShadowRecorder

# BentoML keeps every request's context alive for the whole request timeout: see serving/bentoml_fixes.py.
TIMEOUT_FIX_APPLIED = bentoml_fixes.apply()

RANKER_SERVICE_NAME = f"{BENTO_SERVICE_NAME}_ranker"
# The layout (serving/layout.py), read from the environment when `bentoml serve` imports this module:
# adaptive batching in a separate Ranker service or each request ranked alone, and how many processes.
_LAYOUT = Layout.from_environment()
# The event loop of every HTTP process: asyncio unless BEHAVIORFLOW_EVENT_LOOP=uvloop (serving/layout.py,
# event_loop_from: under load uvloop leaves new connections, health probes among them, unaccepted for seconds).
EVENT_LOOP_APPLIED = bentoml_fixes.use_event_loop(_LAYOUT.event_loop)
# Adaptive batching of Ranker.rank. A batch runs while the next one gathers, so under load batches grow by
# themselves; at low traffic a request waits for no one. A request still queued after BATCH_MAX_LATENCY_MS
# is shed with a 503 (BentoML's dispatcher): generous, as a 503 is worse than a slow answer here.
BATCH_MAX_SIZE = 32
BATCH_MAX_LATENCY_MS = 5_000
# Recommender's worker threads, batched: each holds one request while the ranker answers it, so this bounds
# how many requests can meet in one batch (BentoML's default of 1 would never batch at all). Unbatched, the
# API methods run on the event loop (see _api) and no request uses a thread.
RECOMMENDER_THREADS = BATCH_MAX_SIZE if _LAYOUT.batching else 1
# Access log lines (one per request, on by default; probes and /metrics scrapes are never logged):
# BEHAVIORFLOW_ACCESS_LOG=0 turns them off, e.g. behind a proxy or mesh that logs requests already.
_LOGGING = {
    "access": {
        "enabled": env_switch(ACCESS_LOG_ENV, os.environ.get(ACCESS_LOG_ENV, "1")),
        "skip_paths": ["/livez", "/readyz", "/healthz", "/metrics"],
    }
}
# OpenTelemetry: BentoML wraps every request in its ASGI middleware's spans, but with BentoML's default tracing
# (sample_rate 0, no exporter) none is ever recorded. Making them cost server CPU per request: 3.05 against
# 2.40 ms at 200 req/s without them, 1.46 against 1.19 ms with 8 clients, 1.19 against 1.09 with one (p99 at
# 200 req/s 7.75 against 6.4 ms; more in 7, 7 and 6 of 8 rounds: benchmarks/serving_ab.py,
# results/serving_tracing_ab.json). So the two routes are untraced unless BEHAVIORFLOW_TRACING=1, for a team
# that has configured BentoML's tracing (an exporter and a sample rate) and wants their spans; the price of 0:
# their responses carry no X-BentoML-Request-ID and their access log lines no trace and span ids. The batched
# layout's Ranker leaves its one route (/rank, called by Recommender) out too: traced alone, each of its calls
# began a trace of its own that nothing records.
_TRACED = env_switch(TRACING_ENV, os.environ.get(TRACING_ENV, "0"))
_TRACING = {} if _TRACED else {"tracing": {"excluded_urls": "/recommend,/score"}}
_RANKER_TRACING = {} if _TRACED else {"tracing": {"excluded_urls": "/rank"}}
# BentoML 1.4.40's client between services closes its connection pool every `max_requests` calls or
# `max_age` seconds (runner_connection defaults: 100, 300 s), failing the calls in flight on it with
# ServerDisconnectedError: under concurrent load, a few 500s every 100 requests. Both services share one
# host, so the pool has nothing to gain from recycling: never recycle it. (Recommender._rank also
# retries once, for the keep-alive race of bentoml/BentoML#4971, fix proposed in PR #5698.)
_NEVER = 2**31 - 1
_RANKER_CONNECTION = {"max_requests": _NEVER, "max_age": float(_NEVER)}

_EXCLUDED = float("-inf")  # the graph's score for items it must never return (padding, excluded items)
_MAX_LISTED = 20  # unknown ids quoted in one error message; the rest are counted
_MAX_ID_CHARS = 80  # an unknown id longer than this is quoted cut short
# Start-up check of item_vectors against the graph: |top_scores - user_vector · item_vectors| at most this
# fraction of the largest score. fp32 graphs agree to ~1e-7, an int8 graph (components/export/quantize.py
# quantizes the table it scores with) to ~1e-2; another model's vectors are off by ~1.
_CHECK_TOLERANCE = 0.05
_NO_ITEM_VECTORS = (
    f"score: this model cannot score candidates: its bundle has no {ITEM_VECTORS_FILE} (the item table "
    "that turns user_vector into probabilities); re-export the model with item vectors"
)

# The one model both services load; its tag is read at import, so a Bento build records it.
_MODEL = bentoml.models.BentoModel(os.environ.get(MODEL_TAG_ENV, f"{BENTO_MODEL_NAME}:latest"))


class ScoringUnavailable(BentoMLException):
    """POST /score on a bundle without item vectors (HTTP answers 501 before this is raised)."""

    error_code = HTTPStatus.NOT_IMPLEMENTED


# ---------------------------------------------------------------------------------------- the ranker


class RankQuery(BaseModel):
    """One history for the graph: item indices, oldest first, already cut to the model's max_len."""

    window: list[int]
    exclude_seen: bool


class Ranked(BaseModel):
    """The graph's answer for one RankQuery: the top-K (index, score) pairs and the user vector."""

    items: list[int]
    scores: list[float]
    user_vector: list[float]


@bentoml.service(name=RANKER_SERVICE_NAME, workers=1, traffic={"timeout": 30}, runner_connection=_RANKER_CONNECTION, **_RANKER_TRACING)
class Ranker:
    """Runs the ONNX graph on batches of histories. Internal: only Recommender calls it."""

    model_ref = _MODEL

    def __init__(self) -> None:
        self.model_tag = str(self.model_ref.tag)
        self.bundle = Bundle(self.model_ref.path, load_users=False)  # Recommender looks users up
        # Unbatched: requests run side by side on their own threads, one ORT thread each (unless
        # BEHAVIORFLOW_ORT_THREADS says otherwise); batched: one batch at a time uses every core.
        # Batched, ORT's default (0) is a thread per physical core of the machine: under a container's CPU
        # quota, as many threads as the quota allows instead.
        # Batched, its threads sleep between batches unless BEHAVIORFLOW_ORT_SPIN=1: spinning took 3-4 ms of CPU per
        # request from the front (benchmarks/results/serving_layouts_nospin.json).
        self.session = ort_session(self.bundle.model_path, default_threads=(_LAYOUT.cpus if _LAYOUT.cpus_from_quota else 0) if _LAYOUT.batching else 1,
                                   default_spin=not _LAYOUT.batching)
        self._check_graph()
        self._warm_up()
        gc.freeze()  # see Recommender.__init__

    @bentoml.api(batchable=True, batch_dim=0, max_batch_size=BATCH_MAX_SIZE, max_latency_ms=BATCH_MAX_LATENCY_MS)
    def rank(self, queries: list[RankQuery]) -> list[Ranked]:
        """The graph's answer for each query, in order; one graph call per length group."""
        answers: list[Ranked | None] = [None] * len(queries)
        groups = length_groups([len(q.window) for q in queries], self.bundle.max_len)
        if self.bundle.rows_per_call == 1:  # int8: each history alone, so its answer does not depend on the others
            groups = [[index] for group in groups for index in group]
        for group in groups:
            items, scores, users = self._run([queries[i].window for i in group], [queries[i].exclude_seen for i in group])
            for row, index in enumerate(group):
                answers[index] = Ranked(items=items[row].tolist(), scores=scores[row].tolist(), user_vector=users[row].tolist())
        return answers  # type: ignore[return-value]  # every index belongs to exactly one group

    def _run(self, windows: list[list[int]], exclude_seen: list[bool]) -> list[np.ndarray]:
        feeds = {
            INPUT_HISTORY: pad_histories(windows, self.bundle.max_len),  # [group, its longest window]
            INPUT_EXCLUDE_SEEN: np.array(exclude_seen, dtype=bool),
        }
        return self.session.run([OUTPUT_ITEMS, OUTPUT_SCORES, OUTPUT_USER], feeds)

    def _check_graph(self) -> None:
        """Fail at start-up, not on the first request, when the bundle breaks the inference contract."""
        where = f"model bundle {self.bundle.path} ({self.model_tag})"
        inputs = {i.name for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        expected_outputs = [OUTPUT_ITEMS, OUTPUT_SCORES, OUTPUT_USER]
        if inputs != {INPUT_HISTORY, INPUT_EXCLUDE_SEEN} or not set(expected_outputs) <= outputs:
            raise ValueError(
                f"{where}: the ONNX graph has inputs {sorted(inputs)} and outputs {sorted(outputs)}; "
                f"serving.contract expects inputs {[INPUT_HISTORY, INPUT_EXCLUDE_SEEN]} and outputs "
                f"{expected_outputs}: re-export the model"
            )
        items, scores, users = self._run([[PAD_INDEX + 1]], [False])
        n_items = len(self.bundle.item_ids)
        if items.shape[1] != min(MAX_K, n_items):
            raise ValueError(
                f"{where}: the graph returns {items.shape[1]} items per row, but items.json lists {n_items} "
                f"items (expected K = {min(MAX_K, n_items)}): export both from the same catalog"
            )
        table = self.bundle.item_vectors()
        if table is None:
            return
        if table.ndim != 2 or table.shape != (n_items + 1, users.shape[1]):
            raise ValueError(
                f"{where}: {ITEM_VECTORS_FILE} has shape {table.shape}, expected (n_items + 1, d) = "
                f"({n_items + 1}, {users.shape[1]}) for {n_items} items and a user_vector of {users.shape[1]}: "
                "export both from the same model"
            )
        finite = np.isfinite(scores[0])
        graph = scores[0][finite].astype(np.float64)
        off = float(np.abs(table[items[0][finite]].astype(np.float64) @ users[0] - graph).max(initial=0.0))
        largest = float(np.abs(graph).max(initial=0.0))
        if off > _CHECK_TOLERANCE * max(largest, 1e-6):
            raise ValueError(
                f"{where}: user_vector · {ITEM_VECTORS_FILE} differs from the graph's top_scores by up to "
                f"{off:.3g} (largest score {largest:.3g}): the item vectors are not the ones the graph scores "
                "with; export both from the same model"
            )

    def _warm_up(self) -> None:
        """One graph call per length group size, batch of one and full batch, before /readyz says ready."""
        max_len = self.bundle.max_len
        lengths = sorted({min(max_len, 1 << k) for k in range(max_len.bit_length() + 1)} | {max_len})
        for length in lengths:
            for batch in (1, BATCH_MAX_SIZE):
                self._run([[PAD_INDEX + 1] * length] * batch, [True] * batch)


# ---------------------------------------------------------------------------------------- the HTTP API


def _metadata(request: Request) -> JSONResponse:
    return JSONResponse(bentoml.get_current_service().metadata().model_dump(mode="json"))


# BentoML APIs are POST only; a mounted Starlette app adds GET /metadata. BentoML mounts it "passively":
# it answers only paths its own routes match, so /recommend, /readyz, /docs... are untouched. BentoML
# already serves GET /healthz and /livez (alive) and /readyz (200 once both services have started).
_http = Starlette(routes=[Route("/metadata", _metadata, methods=["GET"])])


def _api(body: Callable[..., Any], route: str, input_spec: type[BaseModel]) -> Any:
    """Recommender's HTTP API method for `body` (a plain method taking the request's fields), named as
    `body` without its leading underscore.

    Unbatched, it is an async method that calls `body` inline, on the process's event loop: a request's
    checks, ranking (its ONNX call included) and answer take a millisecond or two of CPU, and a sync method,
    which BentoML hands to a worker thread, made every request hop between two threads that share one GIL.
    Served in turn for 8 rounds (benchmarks/serving_ab.py, results/serving_inline_ab.json; the sample model,
    two processes), the sync method spent 1.28 times the server CPU per request of the inline one with one
    client and 1.15 times at 200 requests/s, more in 8 of 8 rounds each (an A/A run: 4, 4 and 3 of 8); p99 at
    200 requests/s was 9.85 against 7.5 ms (medians). Batched, it stays a sync method on one of
    RECOMMENDER_THREADS: it waits on the Ranker's process, and the event loop must go on gathering other
    requests meanwhile.
    In-process callers of an unbatched Recommender await it (as tests/test_serving.py's InProcess does)."""
    if _LAYOUT.batching:
        def api(self: Any, **fields: Any) -> Any:
            return body(self, **fields)
    else:
        async def api(self: Any, **fields: Any) -> Any:  # type: ignore[misc]
            return body(self, **fields)
    api.__name__ = api.__qualname__ = body.__name__.lstrip("_")
    api.__doc__ = body.__doc__
    api.__annotations__ = {**api.__annotations__, "return": body.__annotations__["return"]}  # BentoML's output spec
    return bentoml.api(route=route, input_spec=input_spec)(api)


def _model_label(manifest: dict, fallback: str) -> str:
    """NAME/VERSION of a bundle's registered model, as the shadow log names the two models; else `fallback`."""
    version = manifest.get("registry_version")
    return f"{manifest.get('model_name', 'model')}/{version}" if version is not None else fallback


def _shadow_recorder(champion: str) -> ShadowRecorder | None:
    """Shadow mode (serving/shadow.py): the challenger bundle named by the environment, or None."""
    bundle_dir, log_path = os.environ.get(SHADOW_BUNDLE_ENV), os.environ.get(SHADOW_LOG_ENV)
    if not bundle_dir:
        return None
    if not log_path:
        raise ValueError(f"{SHADOW_BUNDLE_ENV} is set but {SHADOW_LOG_ENV} is not: name the JSONL file for the shadow log")
    ranker = BundleRanker(Path(bundle_dir), background=True)  # one non-spinning thread: the champion keeps the cores
    return ShadowRecorder(lambda history, k, exclude_seen, new_items: ranker.topk([history], k, exclude_seen, new_items=new_items)[0],
                          Path(log_path), _model_label(ranker.bundle.manifest, str(bundle_dir)), champion_model=champion)


@bentoml.asgi_app(_http, path="/")
# _LAYOUT.workers processes (BEHAVIORFLOW_WORKERS, serving/layout.py: workers_from): one per core unbatched; batched, one.
@bentoml.service(name=BENTO_SERVICE_NAME, workers=_LAYOUT.workers, threads=RECOMMENDER_THREADS, traffic={"timeout": 30}, logging=_LOGGING, **_TRACING)
class Recommender:
    """Ranks the catalog for a known user (their stored history) or for an explicit item history, and
    scores candidates as the next interaction of a history."""

    model_ref = _MODEL
    if _LAYOUT.batching:  # a class attribute only when batching: BentoML starts the services it finds here
        ranker = bentoml.depends(Ranker)

    def __init__(self) -> None:
        self.model_tag = str(self.model_ref.tag)  # on an instance, model_ref is the stored model
        self.created_at = self.model_ref.info.creation_time.isoformat()
        self.bundle = Bundle(self.model_ref.path)
        self.item_vectors = self.bundle.item_vectors()  # None: no `because`, no /score
        self._check_bundle()
        self.shadow = _shadow_recorder(_model_label(self.bundle.manifest, self.model_tag))  # None unless serve --shadow named a challenger
        if _LAYOUT.batching:
            # In-process this builds the Ranker now (its checks and warm-up run here); served, it is a
            # client of the Ranker's process, whose readiness /readyz waits for.
            self.ranker  # noqa: B018
        else:
            # BEHAVIORFLOW_BATCHING=0: a Ranker of our own, called directly (its checks and warm-up run
            # here, before /readyz); `rank` then runs each request's batch of one on the event loop (_api).
            self.ranker = Ranker()
        # Everything loaded so far (the bundle's user histories: a list per user; the framework) lives as
        # long as the process. Moved out of the cyclic collector's reach, it is no longer rescanned by
        # every full collection, which otherwise stalls whichever request triggers one.
        gc.freeze()

    def _check_bundle(self) -> None:
        stray = {item for history in self.bundle.users.values() for item in history}
        stray -= self.bundle.index_of.keys()
        if stray:
            raise ValueError(
                f"model bundle {self.bundle.path} ({self.model_tag}): users.json mentions {len(stray)} item "
                f"ids missing from items.json (e.g. {sorted(stray)[:5]}): export both files from the same catalog"
            )

    def _recommend(self, **fields: Any) -> RecommendResponse:
        """Top-k items, best first, each with the history items that most drove it. The JSON body (and
        the keyword arguments) are a RecommendRequest."""
        # Over HTTP BentoML has validated the body already; validating here gives in-process callers
        # (tests, batch jobs) the same checks and the same messages.
        request = RecommendRequest(**fields)
        if request.history == []:
            return self._most_popular(request.k)
        history = self._history_of(request)
        window = history[-self.bundle.max_len :]
        ranked = self._rank(RankQuery(window=window, exclude_seen=request.exclude_seen))
        # The graph sees only the window, so items seen before it are dropped here (and the list filled up
        # again from the item vectors where that leaves fewer than k: Bundle.fill_to_k). -inf means "never
        # recommend" (padding, excluded items, anything an exporter masks); such items fill the tail when
        # K covers the whole catalog, and -inf is not even valid JSON.
        banned = {PAD_INDEX, *history} if request.exclude_seen else {PAD_INDEX}
        picks = [(i, s) for i, s in zip(ranked.items, ranked.scores) if i not in banned and s != _EXCLUDED]
        picks = self.bundle.fill_to_k(picks, request.k, ranked.user_vector, banned, self.item_vectors)
        policy = NewItemPolicy.of(request)
        picks = self.bundle.with_new_items(picks, request.k, policy, ranked.user_vector, banned, self.item_vectors)
        because = self._because(window, [i for i, _ in picks])
        if self.shadow is not None:  # queued for a background thread: adds no latency to this answer
            history_ids = [self.bundle.item_ids[i - 1] for i in history]
            self.shadow.submit(history_ids, request.k, request.exclude_seen, [self.bundle.item_ids[i - 1] for i, _ in picks], policy)
        return RecommendResponse(
            items=[
                Recommendation(
                    item_id=self.bundle.item_ids[i - 1], title=self.bundle.titles[i - 1], score=s, because=why, new=i in self.bundle.new_item_set
                )
                for (i, s), why in zip(picks, because)
            ],
            model_version=self._model_version(),
        )

    def _most_popular(self, k: int) -> RecommendResponse:
        """The answer to an empty history: the bundle's k most popular training items, scored by their share
        of the training interactions, `because` empty, `source` "popularity". Not ranked by the model, so not
        shadowed either: there is no challenger ranking to compare it with."""
        if self.bundle.popular is None:
            raise InvalidArgument(f"history: empty, and {POPULARITY_MISSING}; give at least one item id")
        return RecommendResponse(
            items=[
                Recommendation(item_id=self.bundle.item_ids[i - 1], title=self.bundle.titles[i - 1], score=share, new=i in self.bundle.new_item_set)
                for i, share in self.bundle.popular[:k]
            ],
            model_version=self._model_version(),
            source="popularity",
        )

    def _score(self, **fields: Any) -> ScoreResponse:
        """The probability of each candidate being the history's next interaction, in the candidates'
        order. The JSON body (and the keyword arguments) are a ScoreRequest."""
        request = ScoreRequest(**fields)
        if self.item_vectors is None:
            raise ScoringUnavailable(_NO_ITEM_VECTORS)
        unknown = [
            message
            for field, ids in (("history", request.history), ("candidates", request.candidates))
            if (message := self._unknown(field, ids))
        ]
        if unknown:
            raise InvalidArgument(
                f"{'; '.join(unknown)} (not in the model's catalog of {len(self.bundle.item_ids)} items)"
            )
        history = [self.bundle.index_of[item] for item in request.history]
        candidates = [self.bundle.index_of[item] for item in request.candidates]
        window = history[-self.bundle.max_len :]
        ranked = self._rank(RankQuery(window=window, exclude_seen=False))
        probabilities = self._probabilities(ranked.user_vector, candidates)
        return ScoreResponse(
            scores=[CandidateScore(item_id=c, probability=p) for c, p in zip(request.candidates, probabilities.tolist())],
            model_version=self._model_version(),
        )

    recommend = _api(_recommend, "/recommend", RecommendRequest)
    score = _api(_score, "/score", ScoreRequest)

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        """On a graceful stop: the shadow recorder writes out its queue and logs what happened to every request."""
        if getattr(self, "shadow", None) is not None:
            self.shadow.close()

    def metadata(self) -> ServiceMetadata:
        """What GET /metadata returns: which model answers, where it came from, what it can do."""
        manifest = self.bundle.manifest
        bento = Recommender.bento  # set when served from a built Bento; None from source
        return ServiceMetadata(
            model_name=str(manifest.get("model_name") or self.model_tag.partition(":")[0]),
            model_version=self._model_version(),
            alias=os.environ.get(MODEL_ALIAS_ENV) or manifest.get("alias"),
            metrics=manifest.get("metrics"),
            data_fingerprint=manifest.get("data_fingerprint"),
            bento_model_tag=self.model_tag,
            bento_tag=None if bento is None else str(bento.tag),
            created_at=manifest.get("created_at") or self.created_at,
            n_items=len(self.bundle.item_ids),
            n_users=len(self.bundle.users),
            max_len=self.bundle.max_len,
            can_score=self.item_vectors is not None,
            n_new_items=len(self.bundle.new_items),
            n_popular_items=len(self.bundle.popular or ()),
            limits={
                "k": MAX_K,
                "history": MAX_HISTORY,
                "candidates": MAX_CANDIDATES,
                "because": MAX_BECAUSE,
                "body_bytes": MAX_BODY_BYTES,
            },
            shadow=self.shadow.counts() if getattr(self, "shadow", None) is not None else None,
            manifest=manifest,
        )

    def _model_version(self) -> str | None:
        version = self.bundle.manifest.get("registry_version")
        return None if version is None else str(version)

    def _unknown(self, field: str, ids: list[str]) -> str | None:
        """'field: unknown item ids [...]' for the ids not in the catalog, or None when all are known."""
        unknown = list(dict.fromkeys(item for item in ids if item not in self.bundle.index_of))
        if not unknown:
            return None
        shown = [item if len(item) <= _MAX_ID_CHARS else item[:_MAX_ID_CHARS] + "..." for item in unknown[:_MAX_LISTED]]
        listed = repr(shown) + (
            f" and {len(unknown) - _MAX_LISTED} more" if len(unknown) > _MAX_LISTED else ""
        )
        return f"{field}: unknown item ids {listed}"

    def _history_of(self, request: RecommendRequest) -> list[int]:
        """The request's history as item indices, oldest first."""
        if request.user_id is not None:
            history = self.bundle.users.get(request.user_id)
            if history is None:
                # 404, not 400: the request is well-formed, the user is simply not in this model (new
                # since the last export). Clients branch on the status to fall back to sending the
                # user's `history`, without parsing messages; 400 stays reserved for client bugs.
                # Not the popular items: an id the model never saw is more often a client's bug (a wrong
                # id, the wrong model) than a new user, so the client is told, and told how to ask for them.
                user = request.user_id if len(request.user_id) <= _MAX_ID_CHARS else request.user_id[:_MAX_ID_CHARS] + "..."
                popular = ", or 'history': [] for the most popular items (a new user)" if self.bundle.popular is not None else ""
                # No known id holds whitespace (validation refuses such ids): ' u1' or 'u1\n' is a client's stray character.
                spaced = "; it holds whitespace, which no user id has (a stray space or line break?)" if any(ch.isspace() for ch in request.user_id) else ""
                raise NotFound(
                    f"user_id: unknown user {user!r} (the model knows {len(self.bundle.users)} "
                    f"users){spaced}; send the user's 'history' of item ids instead{popular}"
                )
            return [self.bundle.index_of[item] for item in history]  # checked at start-up
        if message := self._unknown("history", request.history):
            # A user whose items all left the catalog is a new user to the model: say how to ask for that answer
            # (predict gives it such a user by itself; the service leaves the choice to the client).
            none_known = self.bundle.popular is not None and not any(item in self.bundle.index_of for item in request.history)
            hint = "; none of them is known: 'history': [] gives the most popular items (a new user)" if none_known else ""
            raise InvalidArgument(f"{message} (not in the model's catalog of {len(self.bundle.item_ids)} items){hint}")
        return [self.bundle.index_of[item] for item in request.history]

    def _rank(self, query: RankQuery) -> Ranked:
        """The Ranker's answer for one query (served: batched with other requests' queries)."""
        try:
            return self.ranker.rank([query])[0]
        except aiohttp.ClientConnectionError:
            # A pooled connection the Ranker's server closed as it was reused (bentoml/BentoML#4971; its
            # fix, PR #5698, is not in 1.4.40): ranking is idempotent, so ask once more.
            return self.ranker.rank([query])[0]

    def _because(self, window: list[int], picks: list[int]) -> list[list[str]]:
        """For each pick, the distinct window items whose vectors have the largest dot product with its
        vector, at most MAX_BECAUSE, largest first, ties to the more recent (see Recommendation.because)."""
        if self.item_vectors is None or not picks:
            return [[] for _ in picks]
        recent_first = list(dict.fromkeys(reversed(window)))
        similarity = self.item_vectors[picks] @ self.item_vectors[recent_first].T  # (picks, distinct window)
        order = np.argsort(-similarity, axis=1, kind="stable")[:, :MAX_BECAUSE]  # stable: recent first on ties
        return [[self.bundle.item_ids[recent_first[j] - 1] for j in row] for row in order.tolist()]

    def _probabilities(self, user_vector: list[float], candidates: list[int]) -> np.ndarray:
        """softmax over items 1..n of user_vector · item_vectors, at `candidates` (a stable logsumexp). Items the
        model cannot score (an id-only model's untrained ones, never ranked) have no share: probability 0."""
        logits = (self.item_vectors[1:] @ np.asarray(user_vector, dtype=np.float32)).astype(np.float64)
        if self.bundle.unscorable.size:  # their table rows are zero: logit 0 would give them a share
            logits[self.bundle.unscorable - 1] = -np.inf
        top = logits.max()
        log_normalizer = top + np.log(np.exp(logits - top).sum())
        return np.exp(logits[np.asarray(candidates) - 1] - log_normalizer)


# ---------------------------------------------------------------------------------------- the HTTP edge


def _can_score() -> bool:
    try:
        return bentoml.get_current_service().item_vectors is not None
    except BentoMLException:  # not instantiated yet: let the request through to BentoML's own answer
        return True


_JSON_ROUTES = {"/recommend": RecommendRequest, "/score": ScoreRequest}


class RequestGuard:
    """ASGI middleware in front of Recommender's routes, for what its request models cannot say.

    - A body over `max_body_bytes` is a 413 before it is read (BentoML 1.4 has no such setting: its
      `max_message_length` is for gRPC); a body without Content-Length is counted as it arrives.
    - POST /score on a bundle without item vectors is a 501 with the reason: BentoML replaces the message
      of every error of 500 and above with "An unexpected error has occurred", so the service's own
      ScoringUnavailable (501) would reach the client without its reason.
    - A body that is not declared JSON (curl -d sends application/x-www-form-urlencoded) is a 415 naming
      the header: BentoML would read it as a form and answer with a puzzling "give exactly one of ...".
    - Every 4xx body is one JSON object {"error": ...} (BentoML sends its own BentoMLExceptions as a
      one-element list), so clients can read `error` from any of them; for a request its model refuses,
      `error` names each field and its problem (BentoML's says "1 validation error for
      RecommendRequestIODescriptor", with the field only in `detail`, which is kept).
    """

    def __init__(self, app: Any, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] == "HEAD":  # a HEAD answer has no body to reshape
            await self.app(scope, receive, send)
            return
        if scope["method"] != "POST":  # GET /metadata, the probes, the docs; a wrong method or path: a JSON 4xx too
            await self.app(scope, receive, _one_error_shape(send, where=f"{scope['method']} {scope['path']}"))
            return
        path = scope["path"].rstrip("/")
        send = _one_error_shape(send, _JSON_ROUTES.get(path), where=f"POST {scope['path']}")
        if path == "/score" and not _can_score():
            await _send_error(send, HTTPStatus.NOT_IMPLEMENTED, _NO_ITEM_VECTORS)
            return
        declared_type = dict(scope["headers"]).get(b"content-type")
        if path in _JSON_ROUTES and declared_type is not None:
            media = declared_type.split(b";")[0].strip().lower()
            if media != b"application/json":
                await _send_error(send, HTTPStatus.UNSUPPORTED_MEDIA_TYPE, (
                    f"Content-Type: {media.decode('latin-1')!r}; {path} takes a JSON body: send it with the header "
                    "'Content-Type: application/json' (curl: -H 'content-type: application/json')"))
                return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await _send_error(send, HTTPStatus.BAD_REQUEST, f"Content-Length: {declared!r} is not a byte count")
            elif int(declared) > self.max_body_bytes:
                await _send_error(send, HTTPStatus.REQUEST_ENTITY_TOO_LARGE, self._too_large(f"{int(declared)} bytes"))
            else:
                await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body_bytes:
                await _send_error(send, HTTPStatus.REQUEST_ENTITY_TOO_LARGE, self._too_large(f"over {self.max_body_bytes} bytes"))
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    def _too_large(self, size: str) -> str:
        return (
            f"request body: {size}, the limit is {self.max_body_bytes} bytes (history: at most {MAX_HISTORY} "
            f"item ids, candidates: at most {MAX_CANDIDATES})"
        )


def _field_errors(errors: list[dict], request_model: type[BaseModel] | None = None) -> str:
    """pydantic's errors as one line naming each field: "k: Input should be less than or equal to 100".
    A field the request model does not have is listed with the fields it has."""

    def one(error: dict) -> str:
        where = ".".join(map(str, error.get("loc", ())))
        message = str(error.get("msg", "")).removeprefix("Value error, ")
        if error.get("type") == "extra_forbidden" and request_model is not None:
            message = f"not a field of this request, which takes {', '.join(request_model.model_fields)}"
        if not where and error.get("type") != "value_error":
            where = "request body"  # e.g. a JSON array sent for the object
        return f"{where}: {message}" if where else message  # a check of the whole request names its fields itself

    return "; ".join(one(error) for error in errors)


def _one_error_shape(send: Any, request_model: type[BaseModel] | None = None, where: str = "") -> Any:
    """`send`, with a 4xx JSON body that is a one-element list of an object sent as that object, a
    validation error's `error` naming the fields from its `detail` (`request_model`: the route's), and a
    4xx that is not JSON (the router's plain-text "Not Found" for a wrong path, "Method Not Allowed" for a
    GET of /recommend) as {"error": "<its text>: <where>"} (`where`: the request's method and path)."""
    start: dict | None = None
    chunks: list[bytes] = []

    async def wrapped(message: dict) -> None:
        nonlocal start
        if message["type"] == "http.response.start" and 400 <= message["status"] < 500:
            start = message  # held until the body is known
            return
        if start is None or message["type"] != "http.response.body":
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = b"".join(chunks)
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
        if parsed is None:
            text = body.decode("utf-8", "replace").strip() or getattr(HTTPStatus._value2member_map_.get(start["status"]), "phrase", "client error")
            parsed = {"error": f"{text}: {where}" if where else text}
            body = json.dumps(parsed).encode()
            headers = [(k, v) for k, v in headers if k.lower() != b"content-type"] + [(b"content-type", b"application/json")]
        if isinstance(parsed, list) and len(parsed) == 1 and isinstance(parsed[0], dict):
            parsed = parsed[0]
            body = json.dumps(parsed).encode()
        detail = parsed.get("detail") if isinstance(parsed, dict) else None
        if isinstance(detail, list) and detail and all(isinstance(e, dict) and "msg" in e for e in detail):
            body = json.dumps(parsed | {"error": _field_errors(detail, request_model)}).encode()
        await send(start | {"headers": headers + [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return wrapped


class _ClientErrorLog(logging.Filter):
    """BentoML logs every exception an API raises as ERROR with its traceback, the client's mistakes
    (4xx: a pydantic ValidationError, an unknown item or user) included, so alerting on ERROR would fire
    on bad requests. Those become one INFO line with the answer's message; the access log has the status."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        status = getattr(getattr(error, "error_code", None), "value", None)
        if isinstance(error, pydantic.ValidationError):
            status, text = 400, f"{error.error_count()} validation error(s): " + _field_errors(error.errors(include_url=False))
        elif isinstance(status, int) and 400 <= status < 500:
            text = str(error)
        else:
            return True
        record.msg, record.args = "client error on %s: %s %s", (record.getMessage().removeprefix("Exception on "), status, text[:500])
        record.exc_info = record.exc_text = None
        record.levelno, record.levelname = logging.INFO, "INFO"
        return True


logging.getLogger("bentoml._internal.server.http_app").addFilter(_ClientErrorLog())


def _log_serving_like_bentoml() -> None:
    """Let this package's loggers (serving.shadow's closing counts: recorded / dropped / failed) log at the
    level BentoML logs at. `bentoml serve` configures its worker's logging before it imports this module:
    the `bentoml` logger at INFO, the root logger at WARNING, so an INFO line from `serving.*` was dropped
    before it reached the root's handler, the server's log output. Only ever lowered to BentoML's level:
    its --quiet mode, and a process where BentoML configured nothing (tests, the CLI), are left as they are."""
    ours, level = logging.getLogger("serving"), logging.getLogger("bentoml").getEffectiveLevel()
    if level < ours.getEffectiveLevel():
        ours.setLevel(level)


_log_serving_like_bentoml()


async def _send_error(send: Any, status: HTTPStatus, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": int(status), "headers": headers})
    await send({"type": "http.response.body", "body": body})


Recommender.add_asgi_middleware(RequestGuard, max_body_bytes=MAX_BODY_BYTES)
