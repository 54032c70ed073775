"""Shadow mode: the recorder writes what the challenger would have answered, off the response path, and
the report compares the two lists exactly."""

from __future__ import annotations

import json
import threading

import pytest

from components.errors import BehaviorflowError
from components.evaluation.shadow import compare_shadow_log
from serving.contract import NewItemPolicy
from serving.shadow import ShadowRecorder


def test_recorder_writes_one_line_per_request(tmp_path):
    def challenger(history, k, exclude_seen, new_items):
        m, boost = new_items.places, new_items.boost
        return [f"c{i}" for i in range(k - m)] + [f"new{i}" for i in range(m)] + [f"boost{boost}"] * (boost > 0)

    recorder = ShadowRecorder(challenger, tmp_path / "shadow.jsonl", "model:v2")
    recorder.submit(["a", "b"], 3, True, ["x", "c1", "y"])
    recorder.submit(["b"], 2, False, ["c0", "c1"], NewItemPolicy(places=1, boost=0.5))
    recorder.flush()
    lines = [json.loads(x) for x in (tmp_path / "shadow.jsonl").read_text().splitlines()]
    assert [line["challenger"] for line in lines] == [["c0", "c1", "c2"], ["c0", "new0", "boost0.5"]]  # asked as the champion was
    assert [(line["new_items"], line["new_item_boost"]) for line in lines] == [(0, 0.0), (1, 0.5)]
    assert lines[0]["champion"] == ["x", "c1", "y"] and lines[0]["history"] == ["a", "b"] and lines[0]["challenger_model"] == "model:v2"
    assert recorder.recorded == 2 and recorder.dropped == 0


def test_a_slow_challenger_drops_records_instead_of_blocking(tmp_path, monkeypatch):
    monkeypatch.setattr("serving.shadow.QUEUE_SIZE", 2)
    gate = threading.Event()
    recorder = ShadowRecorder(lambda h, k, e, n: gate.wait(5) and ["z"], tmp_path / "s.jsonl", "m")
    for _ in range(6):
        recorder.submit(["a"], 1, True, ["z"])  # returns at once even though the challenger is stuck
    assert recorder.dropped >= 3
    gate.set()
    recorder.flush()
    assert recorder.recorded + recorder.dropped == 6


def test_a_failing_challenger_never_raises_into_the_service(tmp_path):
    recorder = ShadowRecorder(lambda h, k, e, n: 1 / 0, tmp_path / "s.jsonl", "m")
    recorder.submit(["a"], 1, True, ["z"])
    recorder.flush()
    assert recorder.recorded == 0


def test_report_numbers_hand_computed(tmp_path):
    log = tmp_path / "shadow.jsonl"
    rows = [
        {"champion": ["a", "b", "c", "d"], "challenger": ["a", "b", "c", "d"], "challenger_ms": 1.0, "challenger_model": "m:2"},
        {"champion": ["a", "b", "c", "d"], "challenger": ["b", "a", "x", "y"], "challenger_ms": 3.0, "challenger_model": "m:2"},
    ]
    log.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    report = compare_shadow_log(log)
    assert report.requests == 2
    assert report.top1_agreement == pytest.approx(0.5)
    assert report.mean_overlap_at_k == pytest.approx((1.0 + 0.5) / 2)
    assert report.mean_jaccard == pytest.approx((1.0 + 2 / 6) / 2)
    assert report.identical_lists == pytest.approx(0.5)
    assert report.challenger_p50_ms == pytest.approx(2.0) and report.challenger_models == ["m:2"]


def test_report_names_a_bad_line(tmp_path):
    log = tmp_path / "shadow.jsonl"
    log.write_text('{"champion": ["a"], "challenger": ["a"]}\nnot json\n')
    with pytest.raises(BehaviorflowError, match=r"shadow.jsonl, line 2: not a shadow record"):
        compare_shadow_log(log)
    with pytest.raises(BehaviorflowError, match="does not exist"):
        compare_shadow_log(tmp_path / "missing.jsonl")
