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


def test_beating_the_id_only_baseline_is_required_only_when_asked():
    model, pop, base = {"NDCG@10": 0.20}, {"NDCG@10": 0.02}, {"NDCG@10": 0.25}
    assert decide(model, pop, id_only=base).passed  # off by default: the baseline is reported, not a rule
    strict = GateConfig(beat_id_only=True)
    behind = decide(model, pop, config=strict, id_only=base)
    assert not behind.passed
    assert behind.reasons[-1] == "NDCG@10 0.2000 is below the id-only baseline's 0.2500: the item text does not help yet (gate.beat_id_only)"
    level = decide(model, pop, config=strict, id_only={"NDCG@10": 0.20})
    assert level.passed and level.reasons[-1] == "NDCG@10 0.2000 is at least the id-only baseline's 0.2000 (gate.beat_id_only)"
    with pytest.raises(ValueError, match="set evaluate.id_only_baseline to true"):
        decide(model, pop, config=strict)


def test_beat_id_only_without_the_baseline_is_refused_before_anything_runs():
    from components.config import RetrainConfig

    with pytest.raises(Exception, match="gate.beat_id_only compares with the id-only baseline, which evaluate.id_only_baseline = false does not train"):
        RetrainConfig.from_dict({"gate": {"beat_id_only": True}, "evaluate": {"id_only_baseline": False}})
    assert RetrainConfig.from_dict({"gate": {"beat_id_only": True}}).gate.beat_id_only
