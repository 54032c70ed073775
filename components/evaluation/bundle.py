"""Rank with an exported model bundle (ONNX Runtime), e.g. the registered champion, so that it can be
scored on *today's* evaluation cases even though its catalog (item indices) may differ — and so that
batch prediction (components/prediction) answers exactly what the service would."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from serving.ranking import BundleRanker


def bundle_topk(bundle_dir: Path, histories: Sequence[Sequence[str]], k: int, exclude_seen: bool = True, batch_size: int = 256) -> list[list[str]]:
    """Top-k item ids for histories of item ids; items unknown to the bundle are left out of the input (a
    history left with none gets the bundle's most popular items, as in the service and batch prediction)."""
    return BundleRanker(bundle_dir).topk(histories, k, exclude_seen, batch_size)


def ids_to_indices(lists: list[list[str]], index_of: dict[str, int], k: int) -> np.ndarray:
    """Item-id lists -> [N, k] index array in another catalog; unknown or missing slots are -1."""
    out = np.full((len(lists), k), -1, dtype=np.int64)
    for row, ids in enumerate(lists):
        picked = [index_of.get(i, -1) for i in ids[:k]]
        out[row, : len(picked)] = picked
    return out
