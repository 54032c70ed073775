"""The Bento service a serving team runs: top-k recommendations from an exported ONNX bundle.

It needs bentoml, onnxruntime, numpy, pydantic and `serving.contract` only — never the training stack
(torch, transformers, prefect, mlflow, great_expectations, pandas) — so the Bento stays small and fast
to start. Run it from the repository root:

    BEHAVIORFLOW_MODEL_TAG=behaviorflow-recommender:<version> \
        bentoml serve serving.service:Recommender --host 127.0.0.1 --port 3000

    curl -s -X POST localhost:3000/recommend -H 'content-type: application/json' \
        -d @serving/sample_request.json
    curl -s localhost:3000/metadata

Status codes: a malformed body (types, k out of 1..100, both or neither of user_id/history, an empty
history) is a 400 from the request model's validation; unknown item ids are a 400 naming them; an
unknown user is a 404 (see `_history_of`). Nothing a client sends causes a 500.
"""

from __future__ import annotations

import os
from typing import Any

import bentoml
import numpy as np
import onnxruntime as ort
from bentoml.exceptions import InvalidArgument, NotFound
from starlette.applications import Starlette  # BentoML's own HTTP layer: adds nothing to the Bento
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from serving.contract import (
    BENTO_MODEL_NAME,
    BENTO_SERVICE_NAME,
    MODEL_TAG_ENV,
    INPUT_EXCLUDE_SEEN,
    INPUT_HISTORY,
    MAX_K,
    OUTPUT_ITEMS,
    OUTPUT_SCORES,
    PAD_INDEX,
    Bundle,
    Recommendation,
    RecommendRequest,
    RecommendResponse,
    pad_histories,
)

_EXCLUDED = float("-inf")  # the graph's score for items it must never return (padding, excluded items)
_MAX_LISTED = 20  # unknown ids quoted in one error message; the rest are counted


def _metadata(request: Request) -> JSONResponse:
    return JSONResponse(bentoml.get_current_service().metadata())


# BentoML APIs are POST only; a mounted Starlette app adds GET /metadata. BentoML mounts it "passively":
# it answers only paths its own routes match, so /recommend, /readyz, /docs... are untouched.
_http = Starlette(routes=[Route("/metadata", _metadata, methods=["GET"])])


@bentoml.asgi_app(_http, path="/")
# One worker: ONNX Runtime already spreads one inference over the cores; scale out with replicas.
@bentoml.service(name=BENTO_SERVICE_NAME, workers=1, traffic={"timeout": 30})
class Recommender:
    """Ranks the catalog for a known user (their stored history) or for an explicit item history."""

    model_ref = bentoml.models.BentoModel(os.environ.get(MODEL_TAG_ENV, f"{BENTO_MODEL_NAME}:latest"))

    def __init__(self) -> None:
        self.model_tag = str(self.model_ref.tag)
        self.bundle = Bundle(self.model_ref.path)
        self.session = ort.InferenceSession(str(self.bundle.model_path), providers=["CPUExecutionProvider"])
        self._check_bundle()

    def _check_bundle(self) -> None:
        """Fail at start-up, not on the first request, when the bundle breaks the inference contract.

        Its one inference also warms the session up, so the first client does not pay for it.
        """
        where = f"model bundle {self.bundle.path} ({self.model_tag})"
        inputs = {i.name for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        expected_outputs = {OUTPUT_ITEMS, OUTPUT_SCORES}
        if inputs != {INPUT_HISTORY, INPUT_EXCLUDE_SEEN} or not expected_outputs <= outputs:
            raise ValueError(
                f"{where}: the ONNX graph has inputs {sorted(inputs)} and outputs {sorted(outputs)}; "
                f"serving.contract expects inputs {[INPUT_HISTORY, INPUT_EXCLUDE_SEEN]} and outputs "
                f"{[OUTPUT_ITEMS, OUTPUT_SCORES]}: re-export the model"
            )
        stray = {item for history in self.bundle.users.values() for item in history}
        stray -= self.bundle.index_of.keys()
        if stray:
            raise ValueError(
                f"{where}: users.json mentions {len(stray)} item ids missing from items.json "
                f"(e.g. {sorted(stray)[:5]}): export both files from the same catalog"
            )
        items, _ = self.session.run([OUTPUT_ITEMS, OUTPUT_SCORES], self._feeds([PAD_INDEX + 1], True))
        n_items = len(self.bundle.item_ids)
        if items.shape[1] != min(MAX_K, n_items):
            raise ValueError(
                f"{where}: the graph returns {items.shape[1]} items per row, but items.json lists {n_items} "
                f"items (expected K = {min(MAX_K, n_items)}): export both from the same catalog"
            )

    @bentoml.api(route="/recommend", input_spec=RecommendRequest)
    def recommend(self, **fields: Any) -> RecommendResponse:
        """Top-k items, best first. The JSON body (and the keyword arguments) are a RecommendRequest."""
        # Over HTTP BentoML has validated the body already; validating here gives in-process callers
        # (tests, batch jobs) the same checks and the same messages.
        request = RecommendRequest(**fields)
        history = self._history_of(request)
        ranked = self._rank(history, request.exclude_seen)[: request.k]
        return RecommendResponse(
            items=[
                Recommendation(item_id=self.bundle.item_ids[i - 1], title=self.bundle.titles[i - 1], score=s)
                for i, s in ranked
            ],
            model_version=self._model_version(),
        )

    def metadata(self) -> dict[str, Any]:
        """What GET /metadata returns: the Bento model tag, catalog sizes and the bundle's manifest."""
        return {
            "model_tag": self.model_tag,
            "model_version": self._model_version(),
            "n_items": len(self.bundle.item_ids),
            "n_users": len(self.bundle.users),
            "manifest": self.bundle.manifest,
        }

    def _model_version(self) -> str | None:
        version = self.bundle.manifest.get("registry_version")
        return None if version is None else str(version)

    def _history_of(self, request: RecommendRequest) -> list[int]:
        """The request's history as item indices, oldest first."""
        if request.user_id is not None:
            history = self.bundle.users.get(request.user_id)
            if history is None:
                # 404, not 400: the request is well-formed, the user is simply not in this model (new
                # since the last export). Clients branch on the status to fall back to sending the
                # user's `history`, without parsing messages; 400 stays reserved for client bugs.
                raise NotFound(
                    f"user_id: unknown user {request.user_id!r} (the model knows {len(self.bundle.users)} "
                    "users); send the user's 'history' of item ids instead"
                )
            return [self.bundle.index_of[item] for item in history]  # checked at start-up
        unknown = list(dict.fromkeys(item for item in request.history if item not in self.bundle.index_of))
        if unknown:
            listed = repr(unknown[:_MAX_LISTED]) + (
                f" and {len(unknown) - _MAX_LISTED} more" if len(unknown) > _MAX_LISTED else ""
            )
            raise InvalidArgument(
                f"history: unknown item ids {listed} (not in the model's catalog of "
                f"{len(self.bundle.item_ids)} items)"
            )
        return [self.bundle.index_of[item] for item in request.history]

    def _feeds(self, history: list[int], exclude_seen: bool) -> dict[str, np.ndarray]:
        return {
            INPUT_HISTORY: pad_histories([history], self.bundle.max_len),  # keeps the most recent max_len
            INPUT_EXCLUDE_SEEN: np.array([exclude_seen], dtype=bool),
        }

    def _rank(self, history: list[int], exclude_seen: bool) -> list[tuple[int, float]]:
        """(item index, score) pairs, best first, at most K = min(MAX_K, n_items)."""
        items, scores = self.session.run([OUTPUT_ITEMS, OUTPUT_SCORES], self._feeds(history, exclude_seen))
        # The graph sees only the last max_len items, so items seen before that window are dropped here.
        # -inf means "never recommend" (padding, excluded items, anything an exporter masks); such items
        # fill the tail when K covers the whole catalog, and -inf is not even valid JSON.
        banned = {PAD_INDEX, *history} if exclude_seen else {PAD_INDEX}
        return [
            (i, s)
            for i, s in zip(items[0].tolist(), scores[0].tolist())
            if i not in banned and s != _EXCLUDED
        ]
