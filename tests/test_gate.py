"""The promotion gate's rules, including the first run without a champion."""

import pytest

from components.gate import GateConfig, decide


def test_first_run_decided_by_popularity_alone():
    d = decide({"NDCG@10": 0.3}, {"NDCG@10": 0.1})
    assert d.passed and d.champion is None
    assert "no champion yet" in d.reasons[-1]


def test_must_beat_popularity():
    d = decide({"NDCG@10": 0.1}, {"NDCG@10": 0.1})
    assert not d.passed
    assert "does not beat popularity 0.1000" in d.summary()


def test_min_lift():
    assert not decide({"NDCG@10": 0.105}, {"NDCG@10": 0.1}, config=GateConfig(min_lift=0.1)).passed
    assert decide({"NDCG@10": 0.111}, {"NDCG@10": 0.1}, config=GateConfig(min_lift=0.1)).passed


def test_regression_tolerance_against_champion():
    ok = decide({"NDCG@10": 0.295}, {"NDCG@10": 0.1}, {"NDCG@10": 0.3}, "4", GateConfig(max_regression=0.02))
    assert ok.passed and "within the 2% regression tolerance" in ok.summary()
    better = decide({"NDCG@10": 0.45}, {"NDCG@10": 0.1}, {"NDCG@10": 0.3}, "4", GateConfig(max_regression=0.02))
    assert better.passed and "NDCG@10 0.4500 vs champion v4 0.3000: better by 50.0%" in better.summary()
    assert "tolerance" not in better.summary()
    bad = decide({"NDCG@10": 0.29}, {"NDCG@10": 0.1}, {"NDCG@10": 0.3}, "4", GateConfig(max_regression=0.02))
    assert not bad.passed and "regresses against champion v4 0.3000" in bad.summary()


def test_unknown_metric_is_named():
    with pytest.raises(ValueError, match="gate metric 'MAP' missing from the candidate metrics"):
        decide({"NDCG@10": 0.3}, {"NDCG@10": 0.1}, config=GateConfig(metric="MAP"))
