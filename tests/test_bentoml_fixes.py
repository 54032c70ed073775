"""serving/bentoml_fixes.py on BentoML's real TimeoutMiddleware: finished requests leave no live timer
behind (each used to keep its context alive for the whole timeout), and a slow request still gets 504."""

import asyncio

from bentoml._internal.server.http.traffic import TimeoutMiddleware

from serving import bentoml_fixes


def _live_timers(loop: asyncio.AbstractEventLoop) -> int:
    return sum(1 for h in loop._scheduled if not h.cancelled() and getattr(h._callback, "__name__", "") == "_set_timer_out")


async def _serve(middleware, n: int) -> list[list[dict]]:
    sent_all = []
    for _ in range(n):
        sent = []

        async def send(message, sent=sent):
            sent.append(message)

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        await middleware({"type": "http", "method": "POST", "path": "/recommend", "headers": []}, receive, send)
        sent_all.append(sent)
    return sent_all


async def _fast_app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def _slow_app(scope, receive, send):
    await asyncio.sleep(5)
    await _fast_app(scope, receive, send)


def test_finished_requests_leave_no_live_timer_and_slow_ones_still_time_out():
    assert bentoml_fixes.apply() is True
    assert bentoml_fixes.apply() is True  # idempotent

    async def scenario():
        loop = asyncio.get_running_loop()
        fast = await _serve(TimeoutMiddleware(_fast_app, timeout=30), 50)
        assert all(s[0]["status"] == 200 for s in fast)
        live_after_fast = _live_timers(loop)
        slow = await _serve(TimeoutMiddleware(_slow_app, timeout=0.05), 1)
        return live_after_fast, slow[0]

    live, slow = asyncio.run(scenario())
    # Unpatched, all 50 timers (and the requests' contexts they hold) would still be waiting out 30 s.
    assert live == 0
    assert slow[0]["status"] == 504
    assert b"Not able to process the request in 0.05 seconds" in slow[1]["body"]


def test_the_service_module_applies_the_fix():
    from serving import service

    assert service.TIMEOUT_FIX_APPLIED is True
    assert getattr(TimeoutMiddleware.__call__, "_behaviorflow_fix", False)
