"""Sampled-negative evaluation: rank each target among N sampled negatives instead of the whole catalog.

Many papers report it; it is cheaper but inflates every metric and can even change which model looks
better (Krichene & Rendle, "On Sampled Metrics for Item Recommendation", KDD 2020). So behaviorflow
computes it only on request, and every key it produces starts with `sampled_`, never to be read as a
full-ranking number.

Negatives: for each case, N distinct items drawn uniformly (seeded) from the catalog without the
case's input items and its target; every ranker is scored on the same negatives. A case's rank is the
number of its negatives that the ranker scores above the target, an exact tie going to the lower item
index (the popularity ranker's order). A target scored -inf (a seen item when seen items are
excluded) ranks below every negative: a miss, as in the full ranking.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from components.errors import BehaviorflowError

PREFIX = "sampled_"


def sample_negatives(inputs: Sequence[np.ndarray], targets: np.ndarray, n_items: int, n: int, seed: int = 0) -> np.ndarray:
    """[N_cases, n] distinct item indices per case, none of them in the case's input or its target."""
    if n < 1:
        raise ValueError(f"the number of sampled negatives must be at least 1, got {n}")
    rng = np.random.default_rng(seed)
    out = np.zeros((len(targets), n), dtype=np.int64)
    for row, (history, target) in enumerate(zip(inputs, targets)):
        banned = set(np.asarray(history, dtype=np.int64).tolist()) | {int(target), 0}
        allowed = n_items - sum(1 for i in banned if 1 <= i <= n_items)
        if allowed < n:
            raise BehaviorflowError(
                f"evaluate.sampled_negatives={n}: test case {row} leaves only {allowed} items of the "
                f"{n_items}-item catalog to draw from (its history and target are excluded); lower evaluate.sampled_negatives"
            )
        if allowed < 2 * n:  # few candidates left: draw from the explicit list
            pool = np.setdiff1d(np.arange(1, n_items + 1), np.fromiter(banned, dtype=np.int64))
            out[row] = rng.choice(pool, size=n, replace=False)
            continue
        picked: dict[int, None] = {}  # insertion-ordered set: deterministic for the seed
        while len(picked) < n:
            for item in rng.integers(1, n_items + 1, size=2 * (n - len(picked))).tolist():
                if item not in banned and item not in picked:
                    picked[item] = None
                    if len(picked) == n:
                        break
        out[row] = list(picked)
    return out


def sampled_ranks(score_batches: Iterable[np.ndarray], targets: np.ndarray, negatives: np.ndarray) -> np.ndarray:
    """0-based rank of each target among its negatives, from score rows [B, n_items + 1] in case order."""
    targets = np.asarray(targets, dtype=np.int64)
    ranks = np.zeros(len(targets), dtype=np.int64)
    start = 0
    for scores in score_batches:
        rows = np.arange(len(scores))
        stop = start + len(scores)
        target, negative = targets[start:stop], negatives[start:stop]
        target_score = scores[rows, target][:, None]
        negative_score = scores[rows[:, None], negative]
        above = (negative_score > target_score) | ((negative_score == target_score) & (negative < target[:, None]))
        # A target scored -inf (seen, or an item the ranker cannot score) is never listed: it ranks below every
        # negative, also below negatives scored -inf too (an id-only model's untrained items), which the
        # lower-index rule would otherwise put under it. A NaN score ranks nothing either.
        above |= (target_score == -np.inf) | np.isnan(target_score)
        ranks[start:stop] = above.sum(1)
        start = stop
    if start != len(targets):
        raise ValueError(f"score rows for {start} cases, but there are {len(targets)} targets")
    return ranks


def prefixed(metrics: dict[str, float]) -> dict[str, float]:
    """{"HR@10": …} -> {"sampled_HR@10": …}."""
    return {f"{PREFIX}{key}": value for key, value in metrics.items()}
