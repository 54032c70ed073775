"""Engines timed in turns: blocks, rotation, and the uncounted first call of each block; a flow's stage timings."""

import pytest

from components.timing import timed_in_turns


def test_engines_take_turns_in_blocks_with_an_uncounted_opening_call():
    calls: list[tuple[str, int]] = []
    engines = [lambda i: calls.append(("a", i)), lambda i: calls.append(("b", i))]
    times = timed_in_turns(engines, calls=5, block=2)
    assert [len(t) for t in times] == [5, 5] and all(s >= 0 for t in times for s in t)
    assert calls == [
        ("a", 0), ("a", 0), ("a", 1), ("b", 0), ("b", 0), ("b", 1),  # round 1: a then b, each opened by call 0
        ("b", 0), ("b", 2), ("b", 3), ("a", 0), ("a", 2), ("a", 3),  # round 2: the order rotates
        ("a", 0), ("a", 4), ("b", 0), ("b", 4),  # round 3: only what is left of the 5 calls
    ]


def test_stages_add_up_each_stage_and_record_one_that_failed():
    from components.timing import Stages

    now = [0.0]
    stages = Stages(clock=lambda: now[0])
    with stages("data"):
        now[0] += 2.04
    with stages("train"):
        now[0] += 10.0
    with stages("data"):  # a stage entered twice adds up
        now[0] += 1.0
    with pytest.raises(RuntimeError), stages("export"):
        now[0] += 3.0
        raise RuntimeError("export failed")
    assert stages.seconds == {"data": 3.0, "train": 10.0, "export": 3.0}
