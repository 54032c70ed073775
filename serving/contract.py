"""The inference contract: one small module shared by export (which writes the ONNX graph and its
bundle) and serving (which reads them). It imports numpy and pydantic only — never torch.

The ONNX graph maps a batch of histories to the top-K items:

    history       int64  [batch, seq]   item indices, oldest first, LEFT-padded with PAD_INDEX (0)
    exclude_seen  bool   [batch]        drop the items of the history from the ranking
    ->
    top_items     int64  [batch, K]     item indices (1..n_items), best first; K = min(MAX_K, n_items)
    top_scores    float  [batch, K]     the model's score (logit) of each, higher is better
    user_vector   float  [batch, d]     the history's representation: score(i) = user_vector · item_vectors[i]
                                        (with the bundle's item_vectors.npy: probabilities for any candidate)

Item index i (1-based) is `items[i - 1]` of the bundle's `items.json`; index 0 is padding.

A history with no item the model knows (a new visitor; a user whose items all left the catalog) gets no
model answer: the service (`history: []`) and batch prediction answer it with the training's most
popular items, the manifest's POPULARITY_FIELD, and say so (RecommendResponse.source).

The HTTP API (serving/service.py) takes the request models below; its limits are the constants under
"Request limits", so clients, tests and the service read them from one place.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, model_validator

# Names the serving side shares with the training side (components.settings re-exports them).
BENTO_MODEL_NAME = "behaviorflow-recommender"  # the model in the Bento model store
BENTO_SERVICE_NAME = "behaviorflow_recommender"  # the Bento (service) name
MODEL_TAG_ENV = "BEHAVIORFLOW_MODEL_TAG"  # which Bento model the service loads; set at build and serve time
MODEL_ALIAS_ENV = "BEHAVIORFLOW_MODEL_ALIAS"  # the registry alias `behaviorflow serve` resolved (for /metadata)
BATCHING_ENV = "BEHAVIORFLOW_BATCHING"  # auto | 1 | 0: the service layout (serving/service.py); builds record both
ACCESS_LOG_ENV = "BEHAVIORFLOW_ACCESS_LOG"  # 1 | 0: the service's per-request access log
TRACING_ENV = "BEHAVIORFLOW_TRACING"  # 0 | 1: OpenTelemetry spans for /recommend and /score (serving/service.py)
WORKERS_ENV = "BEHAVIORFLOW_WORKERS"  # auto | N: the HTTP front's processes (serving/service.py)
EVENT_LOOP_ENV = "BEHAVIORFLOW_EVENT_LOOP"  # asyncio | uvloop: the HTTP server's event loop (serving/bentoml_fixes.py)

INPUT_HISTORY = "history"
INPUT_EXCLUDE_SEEN = "exclude_seen"
OUTPUT_ITEMS = "top_items"
OUTPUT_SCORES = "top_scores"
OUTPUT_USER = "user_vector"
PAD_INDEX = 0
MAX_K = 100  # the graph always returns this many (or the whole catalog if smaller); callers slice

# The model bundle: what export writes, the Bento model store holds and the service loads.
MODEL_FILE = "model.onnx"
ITEMS_FILE = "items.json"      # [{"item_id": str, "title": str}, ...] in index order (index = position + 1);
#   "new": true marks an item with no training interactions (the model scores it from its text alone);
#   "unscorable": true an item the model cannot score (an id-only model's untrained items): never ranked
USERS_FILE = "users.json"      # {user_id: [item_id, ...]}: the latest history of every known user
MANIFEST_FILE = "manifest.json"  # max_len, metrics, data fingerprint, created_at, popularity, ...
POPULARITY_FIELD = "popularity"  # the manifest's answer for an empty history (Bundle.popular):
#   {"interactions": int, "items": [{"item_id": str, "count": int}, ...]}: the MAX_K items with the most
#   training interactions, most first, with their counts, and the training interactions in all. Bundles
#   exported before it have none: an empty history is then refused (POPULARITY_MISSING), as it was.
ITEM_VECTORS_FILE = "item_vectors.npy"  # optional: float32 [n_items + 1, d], the model's item table (row 0 = padding);
#   the same vectors the graph scores with, used to explain a pick by the history items most similar to it

# Request limits. Each violation is a 400 naming the field and the limit (the body size: a 413).
MAX_HISTORY = 2_000  # item ids in one request's `history`; the model reads only the most recent max_len of them
MAX_CANDIDATES = 1_000  # item ids one POST /score may ask about
MAX_BECAUSE = 3  # history items quoted as the reason for one recommendation
MAX_NEW_ITEM_BOOST = 100.0  # `new_item_boost` above this would only stand for "new items first"; logits rarely span 30
MAX_BODY_BYTES = 1 << 20  # 1 MiB: a full history and a full candidate list of 100-character ids (~310 kB) fit 3x

# Said where a bundle without POPULARITY_FIELD meets a history with no known item (service and batch prediction).
POPULARITY_MISSING = (
    "this model's bundle has no list of its most popular items (it was exported before bundles carried one; "
    "a version retrained since has it)"
)


@dataclass(frozen=True)
class NewItemPolicy:
    """How a ranking favours new items (no training interactions, scored from their text alone): the
    request's `new_items` (places) and `new_item_boost` (boost) as one value. The service builds it from the
    RecommendRequest; batch prediction, the shadow challenger and the shadow log take it as it is, so a
    challenger answers with the settings the champion answered with. The default favours nothing."""

    places: int = 0  # keep at least this many of the k places for new items (keep_new_items)
    boost: float = 0.0  # added to every new item's score before ranking (boost_new_items)

    @classmethod
    def of(cls, request: "RecommendRequest") -> "NewItemPolicy":
        return cls(places=request.new_items, boost=request.new_item_boost)

    def __bool__(self) -> bool:
        return bool(self.places or self.boost)

    def problem(self, k: int) -> tuple[str, str] | None:
        """(field, message) for the first setting out of range for a top-k of k items, else None. The field
        names are the request's (and PredictConfig's): new_items, new_item_boost."""
        if not 0 <= self.places <= k:
            return "new_items", f"new_items ({self.places}) must be between 0 and k ({k}): reserve at most k places"
        if not (math.isfinite(self.boost) and 0 <= self.boost <= MAX_NEW_ITEM_BOOST):
            return "new_item_boost", f"new_item_boost ({self.boost}) must be between 0 and {MAX_NEW_ITEM_BOOST:g}, e.g. 0.5"
        return None

    def fields(self) -> dict:
        """The request's field names and values (the shadow log's columns)."""
        return {"new_items": self.places, "new_item_boost": self.boost}


def boost_new_items(picks: list[tuple[int, float]], new_ranked: list[tuple[int, float]], new: frozenset[int], boost: float) -> list[tuple[int, float]]:
    """`picks` ((index, score), best first) and the new items of `new_ranked` re-ranked with `boost` added to
    every new item's score: the boosted score is the one returned, so the list stays in score order. A new
    item then rises only as far as its own score carries it, unlike the places kept by keep_new_items."""
    scores = {i: s + boost if i in new else s for i, s in picks}
    for i, s in new_ranked:
        scores.setdefault(i, s + boost)
    return sorted(scores.items(), key=lambda p: -p[1])


def keep_new_items(picks: list[tuple[int, float]], new_ranked: list[tuple[int, float]], new: frozenset[int], k: int, m: int) -> list[tuple[int, float]]:
    """The top k of `picks` ((index, score), best first) with at least m new items, as far as there are any:
    where the first k hold c < m items of `new`, the best of `new_ranked` (new items, best first) not already
    among them take the places of the m - c lowest-ranked others. Score order is kept (the added items
    score at most the k-th pick, so they come last)."""
    top = picks[:k]
    have = [p for p in top if p[0] in new]
    if len(have) >= m:
        return top
    chosen = {i for i, _ in top}
    added = [p for p in new_ranked if p[0] not in chosen][: m - len(have)]
    others = [p for p in top if p[0] not in new][: k - len(have) - len(added)]
    kept = {i for i, _ in have + others}
    return [p for p in top if p[0] in kept] + sorted(added, key=lambda p: -p[1])


def pad_histories(histories: Sequence[Sequence[int]], max_len: int) -> np.ndarray:
    """Left-pad (and left-truncate to the most recent `max_len`) index histories into [B, L] int64.

    L is the longest history in the batch (capped at max_len, at least 1), so short batches stay cheap.
    """
    length = max(1, min(max_len, max((len(h) for h in histories), default=1)))
    out = np.full((len(histories), length), PAD_INDEX, dtype=np.int64)
    for row, history in enumerate(histories):
        tail = list(history)[-length:]
        if tail:
            out[row, length - len(tail):] = tail
    return out


def length_groups(lengths: Sequence[int], max_len: int) -> list[list[int]]:
    """Indices of `lengths` grouped so that each group pads cheaply: by the power of two at or above each
    length (capped at max_len), shortest group first. A group pads to its own longest member, which is
    at most twice its shortest, and a batch runs at most log2(max_len) + 2 graph calls."""
    groups: dict[int, list[int]] = {}
    for index in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        length = min(max(1, lengths[index]), max_len)
        groups.setdefault(min(max_len, 1 << (length - 1).bit_length()), []).append(index)
    return [groups[key] for key in sorted(groups)]


class Bundle:
    """A loaded model bundle folder: the ONNX path, the item table, known users and the manifest."""

    def __init__(self, path: str | Path, load_users: bool = True):
        self.path = Path(path)
        self.manifest: dict = json.loads((self.path / MANIFEST_FILE).read_text())
        items = json.loads((self.path / ITEMS_FILE).read_text())
        self.item_ids: list[str] = [row["item_id"] for row in items]
        self.titles: list[str] = [row["title"] for row in items]
        self.index_of: dict[str, int] = {item: i + 1 for i, item in enumerate(self.item_ids)}
        # Items with no training interactions ("new" in items.json): indices, ascending, and as a set.
        self.new_items = np.array([i + 1 for i, row in enumerate(items) if row.get("new")], dtype=np.int64)
        self.new_item_set: frozenset[int] = frozenset(self.new_items.tolist())
        self.unscorable = np.array([i + 1 for i, row in enumerate(items) if row.get("unscorable")], dtype=np.int64)  # ascending
        users_path = self.path / USERS_FILE
        load = load_users and users_path.exists()  # False: a reader that never looks users up saves the memory
        self.users: dict[str, list[str]] = json.loads(users_path.read_text()) if load else {}
        self.max_len: int = int(self.manifest["max_len"])
        self.popular: list[tuple[int, float]] | None = self._popular()  # (index, share), most popular first; None: no list

    def _popular(self) -> list[tuple[int, float]] | None:
        """POPULARITY_FIELD as (index, share of the training interactions), most popular first; None when
        the bundle has none (exported before it). An id not in items.json is refused, naming it."""
        field = self.manifest.get(POPULARITY_FIELD)
        if field is None:
            return None
        stray = [row["item_id"] for row in field["items"] if row["item_id"] not in self.index_of]
        if stray:
            raise ValueError(
                f"model bundle {self.path}: {MANIFEST_FILE}'s {POPULARITY_FIELD} lists {len(stray)} item ids missing "
                f"from {ITEMS_FILE} (e.g. {stray[:5]}): export both from the same catalog"
            )
        total = max(1, int(field["interactions"]))
        return [(self.index_of[row["item_id"]], int(row["count"]) / total) for row in field["items"]]

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def rows_per_call(self) -> int | None:
        """Histories one graph call may hold: 1 for an int8 graph, None (any number) for fp32. ONNX Runtime's
        dynamic quantization scales a call's activations by one factor over the whole batch, so in a batch an
        int8 history's answer would depend on the histories beside it."""
        return 1 if self.manifest.get("precision") == "int8" else None

    def fill_to_k(self, picks: list[tuple[int, float]], k: int, user_vector, banned: set[int], item_vectors: np.ndarray | None) -> list[tuple[int, float]]:
        """`picks` (the graph's allowed top items, best first) when they hold k; else the catalog ranked by
        user_vector · item_vectors (as the graph scores) without `banned` and the unscorable items, as far as
        MAX_K. The graph returns its top MAX_K and leaves out only the items of its window, so with a history
        longer than the window the items seen before it can take places no other item fills. Unchanged
        without item vectors."""
        if len(picks) >= k or item_vectors is None:
            return picks
        scores = item_vectors[1:] @ np.asarray(user_vector, dtype=np.float32)
        scores[[i - 1 for i in banned if 0 < i <= len(scores)]] = -np.inf
        scores[self.unscorable[self.unscorable <= len(scores)] - 1] = -np.inf
        allowed = int(np.isfinite(scores).sum())
        if allowed <= len(picks):
            return picks
        n = min(MAX_K, allowed)
        top = np.argpartition(-scores, n - 1)[:n]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(j) + 1, float(scores[j])) for j in top]

    def with_new_items(self, picks: list[tuple[int, float]], k: int, policy: NewItemPolicy, user_vector, banned: set[int], item_vectors: np.ndarray | None) -> list[tuple[int, float]]:
        """The top k of the graph's allowed `picks` ((index, score), best first) under `policy`: its boost added
        to new items' scores (boost_new_items), then at least its places kept for new items (keep_new_items).
        The new items are scored with `item_vectors` (user_vector · item_vectors, as the graph scores) when the
        bundle has them, else taken from `picks`."""
        if not policy or not self.new_item_set:
            return picks[:k]
        if item_vectors is None:
            new_ranked = [p for p in picks if p[0] in self.new_item_set]
        else:
            scores = item_vectors[self.new_items] @ np.asarray(user_vector, dtype=np.float32)
            order = np.argsort(-scores, kind="stable")[: k + policy.places + len(banned)]  # enough once the banned are skipped
            new_ranked = [(int(self.new_items[j]), float(scores[j])) for j in order if int(self.new_items[j]) not in banned]
        if policy.boost:
            picks = boost_new_items(picks, new_ranked, self.new_item_set, policy.boost)
            new_ranked = [(i, s + policy.boost) for i, s in new_ranked]
        return keep_new_items(picks, new_ranked, self.new_item_set, k, policy.places)

    def item_vectors(self) -> np.ndarray | None:
        """The item table [n_items + 1, d] float32 of ITEM_VECTORS_FILE, or None when the bundle has none."""
        path = self.path / ITEM_VECTORS_FILE
        return np.load(path, allow_pickle=False).astype(np.float32, copy=False) if path.exists() else None


class RecommendRequest(BaseModel):
    """Either a known `user_id` (their latest history is used) or an explicit `history` of item ids.
    Strict: a field the service does not know (a typo such as `top_k`) and a number or switch of the wrong
    JSON type (`"k": "10"`, `"k": true`, `"exclude_seen": "no"`) are 400s naming the field, not guesses."""

    model_config = ConfigDict(extra="forbid")

    user_id: str | None = Field(default=None, description="a user known to the model")
    history: list[str] | None = Field(
        default=None,
        max_length=MAX_HISTORY,
        description=(
            f"item ids, oldest first (at most {MAX_HISTORY}; the model reads the most recent max_len). [] (a new "
            "user) = the items with the most training interactions, answered with source 'popularity'; "
            "new_items and new_item_boost do not apply to it (new items have no interactions)"
        ),
    )
    k: StrictInt = Field(default=10, ge=1, le=MAX_K, description=f"how many items to return (1..{MAX_K})")
    exclude_seen: StrictBool = Field(default=True, description="never recommend items of the history")
    new_items: StrictInt = Field(
        default=0,
        ge=0,
        le=MAX_K,
        description=(
            "keep at least this many of the k places for new items (no training interactions; scored from "
            "their text): where the model's own top k holds fewer, the best-scored new items take the places "
            "of the lowest-ranked others. 0 (default) = the model's ranking as it is"
        ),
    )
    new_item_boost: StrictFloat = Field(
        default=0.0,
        ge=0.0,
        le=MAX_NEW_ITEM_BOOST,
        allow_inf_nan=False,
        description=(
            "added to every new item's score before ranking (and to the score returned for it): a new item moves up "
            "only for the users whose ranking it nearly reached, where `new_items` places new items for everyone. 0 "
            f"(default) = the model's ranking as it is; at most {MAX_NEW_ITEM_BOOST:g}. Applied before `new_items`"
        ),
    )

    @model_validator(mode="after")
    def _one_source(self) -> "RecommendRequest":
        if (self.user_id is None) == (self.history is None):
            raise ValueError("give exactly one of 'user_id' or 'history'")
        problem = NewItemPolicy.of(self).problem(self.k)  # the ranges are the fields' own checks; this adds k
        if problem:
            raise ValueError(problem[1])
        return self


class Recommendation(BaseModel):
    item_id: str
    title: str
    score: float = Field(
        description=(
            "higher is better. source 'model': the model's score (logit) of the item; source 'popularity': the "
            "item's share of the training interactions (0..1), not a model score"
        )
    )
    new: bool = Field(default=False, description="a new item: no training interactions, scored from its text")
    because: list[str] = Field(
        default_factory=list,
        description=(
            f"up to {MAX_BECAUSE} item ids of the history that most drove this pick: the distinct items of the "
            "history the model read (its most recent max_len) ranked by the dot product of their vector with "
            "this item's vector in the bundle's item table (the vectors the model scores with), highest "
            "first, ties to the more recent; empty when the bundle has no item table, and in a popularity answer"
        ),
    )


class RecommendResponse(BaseModel):
    items: list[Recommendation]
    model_version: str | None = Field(default=None, description="the model's version in the registry")
    source: Literal["model", "popularity"] = Field(
        default="model",
        description=(
            "what ranked the items: 'model' (the history through the model), or 'popularity' for an empty "
            "history (`history: []`): the items with the most training interactions, the same for everyone"
        ),
    )


class ScoreRequest(BaseModel):
    """A history of item ids and the candidates to score as its next interaction (unknown fields refused)."""

    model_config = ConfigDict(extra="forbid")

    history: list[str] = Field(
        min_length=1,
        max_length=MAX_HISTORY,
        description=f"item ids, oldest first (1..{MAX_HISTORY}; the model reads the most recent max_len)",
    )
    candidates: list[str] = Field(
        min_length=1,
        max_length=MAX_CANDIDATES,
        description=f"item ids to score (1..{MAX_CANDIDATES}); answered in this order, repeats included",
    )


class CandidateScore(BaseModel):
    item_id: str
    probability: float = Field(
        description=(
            "the model's probability that this item is the next interaction: softmax over the whole catalog "
            "(padding excluded, seen items included) of user_vector · item_vectors; 0 for an item the model cannot "
            "score (an id-only model's untrained items, never ranked either)"
        )
    )


class ScoreResponse(BaseModel):
    scores: list[CandidateScore]
    model_version: str | None = Field(default=None, description="the model's version in the registry")


class ServiceMetadata(BaseModel):
    """What GET /metadata returns: which model this server answers with, and what it can do."""

    model_name: str = Field(description="the registered model's name")
    model_version: str | None = Field(description="the registered model's version (the registry version)")
    alias: str | None = Field(
        description="the registry alias this version was resolved from when the server started (`behaviorflow "
        "serve --alias`), else one its manifest records; aliases move, so ask the registry which version an "
        "alias points to now"
    )
    metrics: dict | None = Field(description="the offline evaluation metrics recorded at export; empty for a version made by add-items "
                                 "(not evaluated: its manifest's source_metrics are those of the version it extends)")
    data_fingerprint: str | None = Field(description="fingerprint of the training data")
    bento_model_tag: str = Field(description="the Bento model store tag of the bundle served")
    bento_tag: str | None = Field(description="the Bento served; null when served from source")
    created_at: str | None = Field(description="when the bundle was exported (ISO 8601)")
    n_items: int
    n_users: int
    max_len: int = Field(description="how many of the most recent history items the model reads")
    can_score: bool = Field(description="POST /score and `because` work (the bundle has item vectors)")
    n_new_items: int = Field(default=0, description="items with no training interactions (what `new_items` reserves places for)")
    n_popular_items: int = Field(default=0, description="the most popular items `history: []` can be answered with "
                                 "(at most k of them); 0: the bundle has no popularity list and an empty history is a 400")
    limits: dict[str, int]
    shadow: dict | None = Field(default=None, description="shadow mode (`serve --shadow`): the challenger's bundle, the log, and how many "
                                "requests were recorded, dropped (queue full), failed or are queued; null when off")
    manifest: dict = Field(description="the bundle's whole manifest")
