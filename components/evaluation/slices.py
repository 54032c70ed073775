"""Where a ranker wins and loses: metrics on slices of the test cases, by how familiar the target is.

A case's slice is decided by its *target* item's count in the training data (never by the test data):

* `cold_start` — the target occurs in no training sequence of two or more steps, the only ones training
  learns from (a one-step sequence has no target: `PreparedData.trained_items`), so the model knows it from
  its text only;
* `warm` — every case that is not `cold_start` (a new item's share of what the model does for known ones is
  cold_start HR@10 / warm HR@10);
* `long_tail` — the target is not a head item: the bottom 80 % of the catalog by training count,
  which includes every item with a zero count (so `cold_start` cases are `long_tail` cases too);
* `head` — the target is one of the ⌊20 % × catalog size⌋ items with the highest training count
  (ties broken by the lower item index, the popularity ranker's order); a `cold_start` item is never head,
  even in a catalog where fewer items than that were seen.

`cold_start` and `warm` partition the cases, and so do `long_tail` and `head`; `cold_start` is a subset
of `long_tail`. A slice without
cases is left out of the results (and `empty_slices` says which), never reported as 0.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from components.evaluation.metrics import per_case
from components.evaluation.rankers import item_counts
from components.preparation.prepare import trained_mask

SLICES = ("cold_start", "warm", "long_tail", "head")
HEAD_SHARE = 0.2  # the most popular fifth of the catalog is the head


def head_items(counts: np.ndarray, head_share: float = HEAD_SHARE) -> np.ndarray:
    """Boolean mask [n_items + 1] of the head items, from training counts [n_items + 1] (index 0 = padding)."""
    n_items = len(counts) - 1
    n_head = int(np.floor(head_share * n_items + 1e-9))
    ranked = np.argsort(-counts[1:], kind="stable") + 1  # most frequent first, ties by lower index
    head = np.zeros(len(counts), dtype=bool)
    head[ranked[:n_head]] = True
    head &= counts > 0
    head[0] = False
    return head


def case_slices(targets: np.ndarray, train: Sequence[np.ndarray], n_items: int, head_share: float = HEAD_SHARE) -> dict[str, np.ndarray]:
    """Slice name -> boolean mask over the cases, from each case's target and the training sequences."""
    targets = np.asarray(targets, dtype=np.int64)
    learned = trained_mask(train, n_items)  # in a sequence of two or more steps, as the model's has_id
    head = (head_items(item_counts(train, n_items), head_share) & learned)[targets]
    return {"cold_start": ~learned[targets], "warm": learned[targets], "long_tail": ~head, "head": head}


def slice_metrics(ranks: np.ndarray, masks: dict[str, np.ndarray], k: int = 10) -> dict[str, dict[str, float]]:
    """Slice -> {"HR@k", "NDCG@k", "cases"} from 0-based ranks (a rank ≥ the list length is a miss,
    so the top-K lists behind `ranks` must hold at least k items). Slices without cases are left out."""
    ranks = np.asarray(ranks)
    out: dict[str, dict[str, float]] = {}
    for name, mask in masks.items():
        if mask.any():
            out[name] = {metric: float(values.mean()) for metric, values in per_case(ranks[mask], k).items()} | {"cases": int(mask.sum())}
    return out


def empty_slices(masks: dict[str, np.ndarray]) -> list[str]:
    """The slices that hold no case, in SLICES order."""
    return [name for name, mask in masks.items() if not mask.any()]
