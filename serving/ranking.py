"""Rank with a model bundle folder outside the Bento service — the champion re-scored during evaluation,
batch prediction, the shadow challenger — with exactly the service's rules; and the ONNX Runtime session
and on/off settings the service shares with them. numpy + ONNX Runtime only."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Sequence

import numpy as np

from serving import contract

# ONNX Runtime threading for every session the service opens (read when a session is created):
#   BEHAVIORFLOW_ORT_THREADS  intra-op threads per session; 0 = ONNX Runtime's default (one per physical
#                             core). Unset: 0, except in the service's unbatched layout, where each
#                             process ranks one request at a time and 1 is faster (lower p99 at 200 req/s).
#   BEHAVIORFLOW_ORT_SPIN     1 lets idle intra-op threads spin for the next op (lowest latency per call); 0
#                             makes them sleep, leaving the CPU to other requests and processes. Unset: 1, except
#                             in the service's batched Ranker, which waits between batches: there spinning cost
#                             3-4 ms of CPU per request (benchmarks/results/serving_layouts_nospin.json).
ORT_THREADS_ENV = "BEHAVIORFLOW_ORT_THREADS"
ORT_SPIN_ENV = "BEHAVIORFLOW_ORT_SPIN"


def env_switch(name: str, value: str, expected: str = "1 or 0") -> bool:
    """An on/off setting's value (1/true/yes/on or 0/false/no/off, any case) as a bool; anything else is
    refused, naming the variable and what it takes."""
    value = value.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"{name}={value!r}: expected {expected}")


def ort_session(path: Path, default_threads: int = 0, background: bool = False, default_spin: bool = True):
    """An ONNX Runtime CPU session for a bundle's graph, threaded as the environment says (see above);
    `default_threads` and `default_spin` when BEHAVIORFLOW_ORT_THREADS and BEHAVIORFLOW_ORT_SPIN are unset.
    `background`: one thread that sleeps when idle, whatever the environment says (the shadow challenger,
    which must leave the cores to the served model)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    threads = "1" if background else os.environ.get(ORT_THREADS_ENV, "").strip() or str(default_threads)
    if not threads.isdigit():
        raise ValueError(f"{ORT_THREADS_ENV}={threads!r}: expected a whole number of threads (0 = ONNX Runtime's default)")
    options.intra_op_num_threads = int(threads)
    spin = not background and env_switch(ORT_SPIN_ENV, os.environ.get(ORT_SPIN_ENV, "1" if default_spin else "0"))
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class BundleRanker:
    """A model bundle loaded once for many calls: its item table and an ONNX Runtime session.

    It ranks as the Bento service does: the graph reads the most recent `max_len` items, items unknown
    to the bundle are left out of the input, and with `exclude_seen` every item of the full history
    (also those before the model's window) is left out of the answer; where that leaves fewer than k of
    the graph's top MAX_K, the list is filled from the item vectors (Bundle.fill_to_k). A history left with
    no known item gets the bundle's most popular training items, as the service's `history: []` and batch
    prediction answer it (none from a bundle without that list), never the graph's answer to padding alone.
    """

    def __init__(self, bundle_dir: Path, background: bool = False):
        self.bundle = contract.Bundle(bundle_dir)
        self.session = ort_session(self.bundle.model_path, background=background)

    @cached_property
    def _item_vectors(self) -> np.ndarray | None:
        """The bundle's item table, loaded on the first call that needs it (None: the bundle has none)."""
        return self.bundle.item_vectors()

    def topk(self, histories: Sequence[Sequence[str]], k: int, exclude_seen: bool = True, batch_size: int = 256,
             new_items: contract.NewItemPolicy = contract.NewItemPolicy()) -> list[list[str]]:
        """Top-k item ids, best first, for histories of item ids (oldest first), new items favoured as
        `new_items` says (the service's `new_items` and `new_item_boost`; by default not at all)."""
        index_of, item_ids = self.bundle.index_of, self.bundle.item_ids
        batch_size = self.bundle.rows_per_call or batch_size
        known = [[index_of[i] for i in h if i in index_of] for h in histories]
        popular = [item_ids[i - 1] for i, _ in (self.bundle.popular or [])[:k]]
        out: list[list[str]] = [[] if h else list(popular) for h in known]
        ranked_rows = [row for row, h in enumerate(known) if h]
        # Histories of similar length share a call, padded to their longest, as the service batches them: in the
        # given order, one long history in a batch made every short one pay for its length.
        for group in contract.length_groups([len(known[row]) for row in ranked_rows], self.bundle.max_len):
            group = [ranked_rows[index] for index in group]
            for start in range(0, len(group), batch_size):
                rows = group[start : start + batch_size]
                chunk = [known[row] for row in rows]
                items, scores, users = self.session.run(
                    [contract.OUTPUT_ITEMS, contract.OUTPUT_SCORES, contract.OUTPUT_USER],
                    {contract.INPUT_HISTORY: contract.pad_histories(chunk, self.bundle.max_len), contract.INPUT_EXCLUDE_SEEN: np.full(len(chunk), exclude_seen)},
                )
                allowed = (items > 0) & np.isfinite(scores)  # for the whole call at once: per score it took a third of the time
                for row, history, row_items, row_scores, row_allowed, user in zip(rows, chunk, items, scores, allowed, users):
                    banned = set(history) if exclude_seen else set()
                    ranked = [(i, s) for i, s in zip(row_items[row_allowed].tolist(), row_scores[row_allowed].tolist()) if i not in banned]
                    if len(ranked) < k:
                        ranked = self.bundle.fill_to_k(ranked, k, user, banned, self._item_vectors)
                    vectors = self._item_vectors if new_items and self.bundle.new_item_set else None
                    ranked = self.bundle.with_new_items(ranked, k, new_items, user, banned, vectors)
                    out[row] = [item_ids[i - 1] for i, _ in ranked]
        return out
