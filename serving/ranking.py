"""Rank with a model bundle folder outside the Bento service — the champion re-scored during evaluation,
batch prediction, the shadow challenger — with exactly the service's rules. numpy + ONNX Runtime only."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from serving import contract


class BundleRanker:
    """A model bundle loaded once for many calls: its item table and an ONNX Runtime session.

    It ranks as the Bento service does: the graph reads the most recent `max_len` items, items unknown
    to the bundle are left out of the input, and with `exclude_seen` every item of the full history
    (also those before the model's window) is left out of the answer — so a long history can get fewer
    than k items when many of the graph's top MAX_K were seen.
    """

    def __init__(self, bundle_dir: Path):
        import onnxruntime as ort

        self.bundle = contract.Bundle(bundle_dir)
        self.session = ort.InferenceSession(str(self.bundle.model_path), providers=["CPUExecutionProvider"])

    def topk(self, histories: Sequence[Sequence[str]], k: int, exclude_seen: bool = True, batch_size: int = 256) -> list[list[str]]:
        """Top-k item ids, best first, for histories of item ids (oldest first)."""
        index_of, item_ids = self.bundle.index_of, self.bundle.item_ids
        out: list[list[str]] = []
        for start in range(0, len(histories), batch_size):
            chunk = [[index_of[i] for i in h if i in index_of] for h in histories[start : start + batch_size]]
            items, scores = self.session.run(
                [contract.OUTPUT_ITEMS, contract.OUTPUT_SCORES],
                {contract.INPUT_HISTORY: contract.pad_histories(chunk, self.bundle.max_len), contract.INPUT_EXCLUDE_SEEN: np.full(len(chunk), exclude_seen)},
            )
            for history, row_items, row_scores in zip(chunk, items.tolist(), scores.tolist()):
                banned = set(history) if exclude_seen else set()
                ranked = [i for i, s in zip(row_items, row_scores) if i > 0 and np.isfinite(s) and i not in banned]
                out.append([item_ids[i - 1] for i in ranked[:k]])
        return out
