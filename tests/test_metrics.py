"""Ranking metrics against hand-computed values, and the rankers' exclusion rules."""

import math

import numpy as np
import pytest

from components.evaluation import bootstrap_ci, coverage, metrics_from_ranks, popularity_topk, ranks_from_topk


def test_ranks_from_topk():
    topk = np.array([[5, 3, 9], [1, 2, 4], [7, 8, 6]])
    assert ranks_from_topk(topk, np.array([3, 9, 6])).tolist() == [1, 3, 2]  # 9 is absent -> K


def test_metrics_hand_computed():
    # ranks 0, 1, 3 (miss for K=3 lists) and 2
    m = metrics_from_ranks(np.array([0, 1, 3, 2]), list_len=3, ks=(1, 3))
    assert m["HR@1"] == pytest.approx(1 / 4)
    assert m["NDCG@1"] == pytest.approx(1 / 4)
    assert m["HR@3"] == pytest.approx(3 / 4)
    assert m["NDCG@3"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(4)) / 4)
    assert m["MRR@3"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 4)
    assert "HR@5" not in m  # cut-offs longer than the list are not reported


def test_metrics_refuse_empty():
    with pytest.raises(ValueError, match="no evaluation cases"):
        metrics_from_ranks(np.array([]), 10)


def test_coverage():
    assert coverage(np.array([[1, 2], [2, 3]]), n_items=10, k=2) == pytest.approx(0.3)


def test_bootstrap_ci_brackets_the_mean():
    values = np.r_[np.ones(30), np.zeros(70)]
    lo, hi = bootstrap_ci(values, seed=1)
    assert lo < 0.3 < hi and 0.15 < lo and hi < 0.45


def test_popularity_excludes_history_and_padding():
    train = [np.array([1, 1, 1, 2, 2, 3])]
    top = popularity_topk(train, [np.array([1]), np.array([])], n_items=4, k=3)
    assert top.tolist() == [[2, 3, 4], [1, 2, 3]]
    top = popularity_topk(train, [np.array([1])], n_items=4, k=2, exclude_seen=False)
    assert top.tolist() == [[1, 2]]
