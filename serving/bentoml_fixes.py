"""Fixes for BentoML's HTTP server, applied when the service module is imported: its request-timeout
middleware, and the event loop its workers run on (use_event_loop).

BentoML 1.4's `TimeoutMiddleware` (bentoml/_internal/server/http/traffic.py) arms a timer for every
HTTP request with `loop.call_later(timeout, ...)` and never cancels it. So each finished request stays
reachable for the whole timeout (30 s here): its waiter future and its contextvars context, which holds
the request's OpenTelemetry span and more. At 200 requests/s that is ~6,000 live contexts and
~100,000 objects that every full garbage collection walks: in benchmarks/serving.py such collections
grew to 94 ms and stalled every request in flight (p99 37–70 ms at 200 requests/s, median 3 ms).

The fix is the same middleware with the timer cancelled once the request is done (a cancelled timer
releases its callback at once, and asyncio drops cancelled timers from its heap as they pile up).
Behaviour is otherwise unchanged: a request that runs past the timeout still gets BentoML's 504.
`apply()` patches only the class it was written for (checked by its attributes) and says whether it did.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)


async def _call(self, scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] not in ("http", "websocket"):
        return await self.app(scope, receive, send)
    from starlette.responses import JSONResponse

    loop = asyncio.get_running_loop()
    waiter = loop.create_future()
    timer = loop.call_later(self.timeout, self._set_timer_out, waiter)

    async def _send(message: Any) -> None:
        if not waiter.done():
            waiter.set_result(None)
        await send(message)

    fut = asyncio.ensure_future(self.app(scope, receive, _send), loop=loop)
    try:
        try:
            await waiter
        except asyncio.TimeoutError:
            if fut.cancel():
                resp = JSONResponse({"error": f"Not able to process the request in {self.timeout} seconds"}, status_code=504)
                await resp(scope, receive, send)
        else:
            await fut  # wait for the future to finish
    finally:
        timer.cancel()


def use_event_loop(name: str) -> bool:
    """Run this process's HTTP server on event loop `name` ("asyncio" or "uvloop"; serving/layout.py,
    event_loop_from, says why asyncio by default). BentoML's workers start uvicorn with its "auto" loop, which
    is uvloop whenever uvloop can be imported; this points "auto" at `name`. It must run before the worker
    starts uvicorn, which imports the service module first. False (and a warning) if uvicorn has changed."""
    try:
        from uvicorn import config
    except ImportError:
        log.warning("bentoml_fixes: uvicorn not found; the event loop is left as BentoML chooses it")
        return False
    factories = getattr(config, "LOOP_FACTORIES", None)
    if not isinstance(factories, dict) or "auto" not in factories or name not in factories:
        log.warning("bentoml_fixes: uvicorn's LOOP_FACTORIES has changed; the event loop is left as uvicorn chooses it, not %s", name)
        return False
    factories["auto"] = factories[name]
    return True


def apply() -> bool:
    """Patch BentoML's TimeoutMiddleware in place; False (and a warning) if it is not the expected class."""
    try:
        from bentoml._internal.server.http.traffic import TimeoutMiddleware
    except ImportError:
        log.warning("bentoml_fixes: bentoml's TimeoutMiddleware not found; request timers are left as BentoML makes them")
        return False
    if getattr(TimeoutMiddleware.__call__, "_behaviorflow_fix", False):
        return True
    if not hasattr(TimeoutMiddleware, "_set_timer_out"):
        log.warning("bentoml_fixes: TimeoutMiddleware has changed (no _set_timer_out); not patched")
        return False
    _call._behaviorflow_fix = True  # type: ignore[attr-defined]
    TimeoutMiddleware.__call__ = _call  # type: ignore[method-assign]
    return True
