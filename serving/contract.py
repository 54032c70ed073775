"""The inference contract: one small module shared by export (which writes the ONNX graph and its
bundle) and serving (which reads them). It imports numpy and pydantic only — never torch.

The ONNX graph maps a batch of histories to the top-K items:

    history       int64  [batch, seq]   item indices, oldest first, LEFT-padded with PAD_INDEX (0)
    exclude_seen  bool   [batch]        drop the items of the history from the ranking
    ->
    top_items     int64  [batch, K]     item indices (1..n_items), best first; K = min(MAX_K, n_items)
    top_scores    float  [batch, K]     the model's score (logit) of each, higher is better

Item index i (1-based) is `items[i - 1]` of the bundle's `items.json`; index 0 is padding.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
from pydantic import BaseModel, Field, model_validator

# Names the serving side shares with the training side (components.settings re-exports them).
BENTO_MODEL_NAME = "behaviorflow-recommender"  # the model in the Bento model store
BENTO_SERVICE_NAME = "behaviorflow_recommender"  # the Bento (service) name
MODEL_TAG_ENV = "BEHAVIORFLOW_MODEL_TAG"  # which Bento model the service loads; set at build and serve time

INPUT_HISTORY = "history"
INPUT_EXCLUDE_SEEN = "exclude_seen"
OUTPUT_ITEMS = "top_items"
OUTPUT_SCORES = "top_scores"
PAD_INDEX = 0
MAX_K = 100  # the graph always returns this many (or the whole catalog if smaller); callers slice

# The model bundle: what export writes, the Bento model store holds and the service loads.
MODEL_FILE = "model.onnx"
ITEMS_FILE = "items.json"      # [{"item_id": str, "title": str}, ...] in index order (index = position + 1)
USERS_FILE = "users.json"      # {user_id: [item_id, ...]}: the latest history of every known user
MANIFEST_FILE = "manifest.json"  # max_len, metrics, data fingerprint, created_at, ...


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


class Bundle:
    """A loaded model bundle folder: the ONNX path, the item table, known users and the manifest."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.manifest: dict = json.loads((self.path / MANIFEST_FILE).read_text())
        items = json.loads((self.path / ITEMS_FILE).read_text())
        self.item_ids: list[str] = [row["item_id"] for row in items]
        self.titles: list[str] = [row["title"] for row in items]
        self.index_of: dict[str, int] = {item: i + 1 for i, item in enumerate(self.item_ids)}
        users_path = self.path / USERS_FILE
        self.users: dict[str, list[str]] = json.loads(users_path.read_text()) if users_path.exists() else {}
        self.max_len: int = int(self.manifest["max_len"])

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE


class RecommendRequest(BaseModel):
    """Either a known `user_id` (their latest history is used) or an explicit `history` of item ids."""

    user_id: str | None = Field(default=None, description="a user known to the model")
    history: list[str] | None = Field(default=None, description="item ids, oldest first")
    k: int = Field(default=10, ge=1, le=MAX_K, description=f"how many items to return (1..{MAX_K})")
    exclude_seen: bool = Field(default=True, description="never recommend items of the history")

    @model_validator(mode="after")
    def _one_source(self) -> "RecommendRequest":
        if (self.user_id is None) == (self.history is None):
            raise ValueError("give exactly one of 'user_id' or 'history'")
        if self.history is not None and len(self.history) == 0:
            raise ValueError("'history' is empty: give at least one item id")
        return self


class Recommendation(BaseModel):
    item_id: str
    title: str
    score: float


class RecommendResponse(BaseModel):
    items: list[Recommendation]
    model_version: str | None = None
