"""Progress of long steps off a terminal: log lines with counts, share, elapsed time and time left."""

import logging

from components.progress import LoggedProgress, progress


def test_logged_progress_reports_counts_share_and_time_left(caplog):
    ticks = iter([0.0, 10.0, 20.0, 45.0, 50.0, 80.0])  # start, then one reading after each item
    bar = LoggedProgress(range(5), total=5, desc="embedding item text", unit="batch", logger=logging.getLogger("t"), every_s=30.0, clock=lambda: next(ticks))
    seen = []
    with caplog.at_level(logging.INFO, logger="t"):
        for i in bar:
            seen.append(i)
            bar.set_postfix(loss="1.234")
    assert seen == [0, 1, 2, 3, 4]  # nothing is skipped or repeated
    # 45 s after the start, 3 of 5 done: the first line (>= 30 s since the last); at 50 s nothing (5 s
    # since); after the last item nothing (the caller reports the end).
    assert caplog.messages == ["embedding item text: 3/5 (60%), 0.0667 batch/s, 45s elapsed, ~30s left, loss 1.234"]


def test_progress_is_silent_when_disabled_and_logs_off_a_terminal(caplog):
    quiet = progress(range(3), total=3, desc="epoch 1", unit="step", logger=logging.getLogger("t"), enabled=False)
    quiet.set_postfix(loss="1")  # accepted and ignored
    assert list(quiet) == [0, 1, 2]
    logged = progress(range(3), total=3, desc="epoch 1", unit="step", logger=logging.getLogger("t"), every_s=0.0)
    assert isinstance(logged, LoggedProgress)  # pytest captures stderr: not a terminal
    with caplog.at_level(logging.INFO, logger="t"):
        assert list(logged) == [0, 1, 2]
    assert [m.split(",")[0] for m in caplog.messages] == ["epoch 1: 1/3 (33%)", "epoch 1: 2/3 (66%)"]


def test_the_flows_evaluate_line_names_the_id_only_baseline_only_when_it_was_trained(tmp_path, monkeypatch):
    """evaluate.id_only_baseline is optional: the [5/9] line must not promise a ranker that is not there.
    (Read with a handler of its own: Prefect re-configures the root logger, and caplog's handler with it.)"""
    import pytest

    from components.config import RetrainConfig
    from flows import retrain

    class Stop(Exception):
        pass

    def stop(*args, **kwargs):  # right after the line: the rest of the stage is not this test's business
        raise Stop

    class Lines(logging.Handler):
        def __init__(self):
            super().__init__(logging.INFO)
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    monkeypatch.setattr("components.registry.find_champion", stop)
    logger, lines = logging.getLogger("behaviorflow"), {}
    monkeypatch.setattr(logger, "level", logging.INFO)
    for trained, baseline in (("trained", object()), ("skipped", None)):
        handler = Lines()
        logger.addHandler(handler)
        try:
            with pytest.raises(Stop):
                retrain.evaluate.fn(None, baseline, None if baseline else "evaluate.id_only_baseline is false", None, RetrainConfig(), tmp_path)
        finally:
            logger.removeHandler(handler)
        lines[trained] = [m for m in handler.messages if m.startswith("[5/9]")]
    assert lines["trained"] == ["[5/9] evaluate: model, id-only baseline, popularity and champion (if any) on the test cases"]
    assert lines["skipped"] == ["[5/9] evaluate: model, popularity and champion (if any) on the test cases"]
