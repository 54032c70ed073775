"""The retrain summary as the Prefect UI's Markdown artifact (the flow writes it: tests/test_flow_e2e.py)."""

from __future__ import annotations

from components.reporting.markdown import add_items_markdown, retrain_markdown, run_link


def summary(**extra) -> dict:
    return {
        "run_id": "abc123", "experiment_id": "7", "tracking_uri": "http://mlflow.internal:5000/", "data_fingerprint": "f00d",
        "preparation": {"users": 40}, "cases": 40,
        "metrics": {"model": {"NDCG@10": 0.31234, "HR@10": 0.5}, "popularity": {"NDCG@10": 0.02, "HR@10": 0.05},
                    "champion": {"NDCG@10": 0.3, "HR@10": 0.48}},
        "slices": {"model": {"cold_start": {"HR@10": 0.25, "cases": 4}, "warm": {"HR@10": 0.52, "cases": 36}}},
        "gate": {"passed": True, "reasons": ["NDCG@10 0.3123 beats popularity 0.0200", "better than champion v3 by 4.1%"], "champion_version": "3"},
        "training": {"epochs": 9, "device": "cpu", "wall_s": 12.5, "best_epoch": 9, "stopped": "time budget of 1.0 min reached", "cut_short": True, "peak_rss_mb": 900.0},
        "stage_s": {"data": 1.5, "train": 12.6}, "wall_s": 20.0,
        **extra,
    }


def test_a_registered_run_reads_as_a_table_with_its_version_gate_and_links():
    md = retrain_markdown(summary(registry={"version": "4", "aliases": ["challenger"], "bento_tag": "b:v4", "not_promoted": "not promoted: the champion moved"}))
    assert "registered **behaviorflow-recommender version 4** — aliases: challenger  \nnot promoted: the champion moved" in md
    assert "| model | 0.3123 | 0.5000 |\n| popularity | 0.0200 | 0.0500 |\n| champion v3 | 0.3000 | 0.4800 |" in md
    assert "**Gate passed:** NDCG@10 0.3123 beats popularity 0.0200; better than champion v3 by 4.1%" in md
    assert "**Model HR@10 by target:** cold start 0.2500 (4 cases) · warm 0.5200 (36 cases)" in md
    assert "still improving when the time budget ended it" in md and "| train | 12.6 |\n| **the flow** | **20.0** |" in md
    assert "**MLflow run:** [abc123](http://mlflow.internal:5000/#/experiments/7/runs/abc123)" in md
    assert "`behaviorflow serve --alias challenger`" in md


def test_a_failed_gate_says_nothing_was_registered():
    md = retrain_markdown(summary(gate={"passed": False, "reasons": ["NDCG@10 0.01 does not beat popularity 0.02"], "champion_version": None}))
    assert "**gate failed**: nothing was exported or registered" in md and "**Gate failed:** NDCG@10 0.01 does not beat" in md
    assert "**Bento:**" not in md


def test_a_local_store_is_named_not_linked():
    assert run_link("sqlite:////tmp/x/mlflow.db", "1", "r1") == "`r1` in `sqlite:////tmp/x/mlflow.db`"


def test_an_add_items_run_names_the_new_version_its_source_and_the_check():
    md = add_items_markdown({
        "run_id": "r9", "experiment_id": "2", "tracking_uri": "https://mlflow.example.com", "source_version": "m/2", "added_items": 1,
        "catalog_items": 31, "check": "1 item added to version m/2; the scores of its 30 items did not move", "precision": {"reason": "fp32 (the source's)"},
        "registry": {"version": "3", "aliases": ["challenger", "champion"], "bento_tag": "b:v3"},
    })
    assert "registered **behaviorflow-recommender version 3** — aliases: challenger, champion" in md
    assert "1 new item added to version m/2 (31 in the catalog now)." in md and "**Precision:** fp32 (the source's)" in md
    assert "[r9](https://mlflow.example.com/#/experiments/2/runs/r9)" in md and "`behaviorflow serve --alias champion`" in md
