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


@pytest.fixture(autouse=True)
def close_recorders(monkeypatch):
    """Each test's recorders are closed when it ends, as the service closes its own at shutdown; left to
    atexit, they would log after pytest has closed its output streams."""
    at_exit = []
    monkeypatch.setattr("serving.shadow.atexit.register", lambda close, *args: at_exit.append((close, args)))
    yield
    for close, args in at_exit:
        close(*args)


def test_recorder_writes_one_line_per_request(tmp_path):
    def challenger(history, k, exclude_seen, new_items):
        m, boost = new_items.places, new_items.boost
        return [f"c{i}" for i in range(k - m)] + [f"new{i}" for i in range(m)] + [f"boost{boost}"] * (boost > 0)

    recorder = ShadowRecorder(challenger, tmp_path / "shadow.jsonl", "model/2", champion_model="model/1")
    recorder.submit(["a", "b"], 3, True, ["x", "c1", "y"])
    recorder.submit(["b"], 2, False, ["c0", "c1"], NewItemPolicy(places=1, boost=0.5))
    recorder.flush()
    lines = [json.loads(x) for x in (tmp_path / "shadow.jsonl").read_text().splitlines()]
    assert [line["challenger"] for line in lines] == [["c0", "c1", "c2"], ["c0", "new0", "boost0.5"]]  # asked as the champion was
    assert [(line["new_items"], line["new_item_boost"]) for line in lines] == [(0, 0.0), (1, 0.5)]
    assert lines[0]["champion"] == ["x", "c1", "y"] and lines[0]["history"] == ["a", "b"] and lines[0]["challenger_model"] == "model/2" and lines[0]["champion_model"] == "model/1"
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


def test_a_failing_challenger_never_raises_into_the_service(tmp_path, caplog):
    recorder = ShadowRecorder(lambda h, k, e, n: 1 / 0, tmp_path / "s.jsonl", "m")
    with caplog.at_level("ERROR", logger="serving.shadow"):
        for _ in range(3):
            recorder.submit(["a"], 1, True, ["z"])
        recorder.flush()
    assert recorder.recorded == 0 and recorder.failed == 3 and recorder.counts()["failed"] == 3
    assert caplog.messages == ["shadow: the challenger failed to rank a request (1 so far); not recorded"]  # one traceback, not one per request


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


def test_every_request_is_accounted_for_and_the_queue_is_written_out_at_shutdown(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr("serving.shadow.QUEUE_SIZE", 3)
    gate = threading.Event()
    recorder = ShadowRecorder(lambda h, k, e, n: gate.wait(5) and ["z"], tmp_path / "s.jsonl", "m")
    with caplog.at_level("INFO", logger="serving.shadow"):
        for _ in range(6):
            recorder.submit(["a"], 1, True, ["z"])
        dropped = recorder.dropped
        assert dropped >= 2 and any("request(s) left out of" in m for m in caplog.messages)  # said at the first drop
        gate.set()
        recorder.close(drain_s=5)  # what the process does on exit (atexit): the queued requests are written first
    lines = (tmp_path / "s.jsonl").read_text().splitlines()
    assert len(lines) == recorder.recorded == 6 - dropped and recorder.counts()["queued"] == 0
    assert f"{6 - dropped} recorded, {dropped} dropped (queue full), 0 failed, 0 left unwritten at shutdown" in caplog.messages[-1]


def test_a_log_that_cannot_be_written_fails_at_start_and_a_failed_write_is_not_a_ranking_failure(tmp_path, caplog):
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError, match=r"shadow log .*file/s.jsonl: cannot be written"):
        ShadowRecorder(lambda h, k, e, n: ["z"], tmp_path / "file" / "s.jsonl", "m")
    recorder = ShadowRecorder(lambda h, k, e, n: ["z"], tmp_path / "s.jsonl", "m")
    recorder._out.close()  # as a full disk or a vanished mount does: the write fails, the ranking worked
    with caplog.at_level("ERROR", logger="serving.shadow"):
        recorder.submit(["a"], 1, True, ["z"])
        recorder.submit(["a"], 1, True, ["z"])
        recorder.flush()
    assert recorder.failed == 2 and recorder.recorded == 0 and recorder.counts()["write_error"]
    assert [m for m in caplog.messages if "cannot write" in m] == [caplog.messages[0]] and "failed to rank" not in " ".join(caplog.messages)


def test_report_leaves_out_an_incomplete_last_line_and_names_mixed_challengers(tmp_path):
    log = tmp_path / "shadow.jsonl"
    rows = [{"champion": ["a"], "challenger": ["a"], "challenger_model": "m/2", "champion_model": "m/1"},
            {"champion": ["a"], "challenger": ["b"], "challenger_model": "m/3", "champion_model": "m/1"}]
    log.write_text("\n".join(json.dumps(r) for r in rows) + '\n{"champion": ["a"], "chall')  # the writer stopped mid-line
    report = compare_shadow_log(log)
    assert report.requests == 2 and report.top1_agreement == pytest.approx(0.5)
    assert report.notes == ["line 3, the last, is incomplete (the writer stopped mid-line) and was left out",
                            "the log mixes 2 model pairs (m/1 vs m/2, m/1 vs m/3): these numbers pool them; give each shadow run its own --shadow-log"]
    assert "  note: line 3, the last, is incomplete" in "\n".join(report.lines())
    with pytest.raises(BehaviorflowError, match="is a folder"):
        compare_shadow_log(tmp_path)


def test_serve_checks_the_challenger_and_the_log_before_starting(tmp_path):
    """Inside `bentoml serve` either failure restarted the worker forever and the champion never served."""
    from flows.cli import _check_shadow
    from tests.tiny_bundle import make_tiny_bundle

    bundle = make_tiny_bundle(tmp_path / "challenger", n_items=12, dim=4)
    _check_shadow(bundle, tmp_path / "logs" / "shadow.jsonl")  # fine: the folder is made, the file can be appended to
    assert (tmp_path / "logs" / "shadow.jsonl").read_text() == ""
    (tmp_path / "afile").write_text("")
    with pytest.raises(BehaviorflowError, match=r"--shadow-log .*afile/shadow.jsonl: cannot be written"):
        _check_shadow(bundle, tmp_path / "afile" / "shadow.jsonl")
    with pytest.raises(BehaviorflowError, match=r"--shadow-log .*logs: is a folder"):
        _check_shadow(bundle, tmp_path / "logs")
    (bundle / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(BehaviorflowError, match=r"shadow: the challenger's bundle .*challenger cannot rank \(.*\); nothing was started"):
        _check_shadow(bundle, tmp_path / "logs" / "shadow.jsonl")
