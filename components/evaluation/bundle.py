"""Rank with an exported model bundle (ONNX Runtime), e.g. the registered champion, so that it can be
scored on *today's* evaluation cases even though its catalog (item indices) may differ."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from serving import contract


def bundle_topk(bundle_dir: Path, histories: Sequence[Sequence[str]], k: int, exclude_seen: bool = True, batch_size: int = 256) -> list[list[str]]:
    """Top-k item ids for histories of item ids; items unknown to the bundle are left out of the input."""
    import onnxruntime as ort

    bundle = contract.Bundle(bundle_dir)
    session = ort.InferenceSession(str(bundle.model_path), providers=["CPUExecutionProvider"])
    out: list[list[str]] = []
    for start in range(0, len(histories), batch_size):
        chunk = [[bundle.index_of[i] for i in h if i in bundle.index_of] for h in histories[start : start + batch_size]]
        items, scores = session.run(
            [contract.OUTPUT_ITEMS, contract.OUTPUT_SCORES],
            {contract.INPUT_HISTORY: contract.pad_histories(chunk, bundle.max_len), contract.INPUT_EXCLUDE_SEEN: np.full(len(chunk), exclude_seen)},
        )
        for row_items, row_scores in zip(items, scores):
            out.append([bundle.item_ids[i - 1] for i, s in zip(row_items[:k], row_scores[:k]) if np.isfinite(s) and i > 0])
    return out


def ids_to_indices(lists: list[list[str]], index_of: dict[str, int], k: int) -> np.ndarray:
    """Item-id lists -> [N, k] index array in another catalog; unknown or missing slots are -1."""
    out = np.full((len(lists), k), -1, dtype=np.int64)
    for row, ids in enumerate(lists):
        picked = [index_of.get(i, -1) for i in ids[:k]]
        out[row, : len(picked)] = picked
    return out
