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


def test_coverage_counts_catalog_items_only():
    """A top-K row shorter than K is filled with 0 (padding: model_topk, popularity_topk) or -1 (an item the
    champion's catalog has and today's has not: ids_to_indices); neither is an item of the catalog. Items 1
    and 2 of 4 are listed: coverage 0.5 (it was 0.75, and 1.0 with the -1)."""
    assert coverage(np.array([[1, 0], [2, 0]]), n_items=4, k=2) == pytest.approx(0.5)
    assert coverage(np.array([[1, -1], [2, 0]]), n_items=4, k=2) == pytest.approx(0.5)


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


def test_popularity_record_is_the_popularity_rankers_list_for_an_empty_history_with_counts():
    """What export stores in the bundle for users with no known item: ids and training counts, most first,
    ties to the lower index, items never trained on left out, at most MAX_K of them."""
    from components.evaluation.rankers import popularity_record

    train = [np.array([3, 3, 5, 1]), np.array([5, 3, 2, 2]), np.array([6])]
    ids = ["a", "b", "c", "d", "e", "f", "g"]  # index 4 ("d") and 7 ("g") never occur
    assert popularity_record(train, ids) == {
        "interactions": 9,
        "items": [{"item_id": "c", "count": 3}, {"item_id": "b", "count": 2}, {"item_id": "e", "count": 2},
                  {"item_id": "a", "count": 1}, {"item_id": "f", "count": 1}],
    }
    ranker = popularity_topk(train, [np.array([], dtype=np.int64)], n_items=7, k=5, exclude_seen=False)[0]
    assert [ids[i - 1] for i in ranker] == [row["item_id"] for row in popularity_record(train, ids)["items"]]
    wide = [np.arange(1, 151), np.arange(1, 31)]  # 150 items, the first 30 twice
    record = popularity_record(wide, [f"i{i}" for i in range(1, 151)])
    assert len(record["items"]) == 100 and record["items"][29] == {"item_id": "i30", "count": 2} and record["items"][30]["count"] == 1
    assert record["interactions"] == 180
