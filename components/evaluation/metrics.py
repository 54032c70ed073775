"""Ranking metrics on full rankings, computed from each case's top-K list and its one true next item.

With one relevant item per case: HR@k = 1 if the target is among the first k; NDCG@k = 1/log2(rank+2)
for a 0-based rank < k, else 0 (the ideal DCG is 1); MRR@K = 1/(rank+1). A target outside the top-K
list counts as a miss for every cut-off ≤ K.
"""

from __future__ import annotations

import numpy as np

KS = (1, 5, 10, 20)


def ranks_from_topk(topk: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based rank of each target in its top-K row, or K where it is absent. topk: [N, K], targets: [N]."""
    topk = np.asarray(topk)
    targets = np.asarray(targets)
    if topk.ndim != 2 or len(topk) != len(targets):
        raise ValueError(f"topk must be [N, K] with N = len(targets) = {len(targets)}, got shape {topk.shape}")
    hits = topk == targets[:, None]
    return np.where(hits.any(1), hits.argmax(1), topk.shape[1])


def per_case(ranks: np.ndarray, k: int) -> dict[str, np.ndarray]:
    inside = ranks < k
    return {f"HR@{k}": inside.astype(float), f"NDCG@{k}": np.where(inside, 1.0 / np.log2(ranks + 2.0), 0.0)}


def metrics_from_ranks(ranks: np.ndarray, list_len: int, ks: tuple[int, ...] = KS) -> dict[str, float]:
    """Mean HR@k / NDCG@k for every k ≤ list_len, and MRR@list_len."""
    ranks = np.asarray(ranks)
    if len(ranks) == 0:
        raise ValueError("no evaluation cases: every user was too short to hold out a target")
    out: dict[str, float] = {}
    for k in ks:
        if k <= list_len:
            out.update({name: float(values.mean()) for name, values in per_case(ranks, k).items()})
    out[f"MRR@{list_len}"] = float(np.where(ranks < list_len, 1.0 / (ranks + 1.0), 0.0).mean())
    return out


def coverage(topk: np.ndarray, n_items: int, k: int = 10) -> float:
    """Share of the catalog that appears in at least one top-k list. Slots holding no item (0, the padding
    that fills a row shorter than k; -1, an item another catalog has: bundle.ids_to_indices) are not counted."""
    listed = np.unique(np.asarray(topk)[:, :k])
    return float(np.count_nonzero(listed > 0) / max(n_items, 1))


def bootstrap_ci(values: np.ndarray, n_resamples: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of per-case values."""
    values = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(n_resamples, len(values)))].mean(1)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))
