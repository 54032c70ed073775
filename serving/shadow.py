"""Shadow mode: the service answers with the champion and, off the response path, records what a
second model (the challenger) would have answered to the same request, for offline comparison
(`behaviorflow shadow-report`).

Enabled by two environment variables at serve time (`behaviorflow serve --shadow challenger` sets them):
    BEHAVIORFLOW_SHADOW_BUNDLE  the challenger's model bundle folder (serving/contract.py layout)
    BEHAVIORFLOW_SHADOW_LOG     the JSONL file to append to (one line per request)
The challenger runs in one background thread behind a bounded queue: when it falls behind, requests
are dropped from the shadow log (counted, in /metadata and the log), never delayed. It shares the service's
process and CPU: a challenger much slower than the champion takes CPU time from the champion's answers.
"""

from __future__ import annotations

import atexit
import json
import logging
import queue
import threading
import time
from pathlib import Path
from typing import Callable

from serving.contract import NewItemPolicy

SHADOW_BUNDLE_ENV = "BEHAVIORFLOW_SHADOW_BUNDLE"
SHADOW_LOG_ENV = "BEHAVIORFLOW_SHADOW_LOG"
QUEUE_SIZE = 1024  # requests waiting for the challenger; beyond this they are dropped, not waited for

log = logging.getLogger(__name__)


class ShadowRecorder:
    """Runs `rank(history_ids, k, exclude_seen, new_items) -> [item ids]` (new_items: a NewItemPolicy) for the
    challenger in a background thread and appends {ts, history, k, exclude_seen, new_items, new_item_boost,
    champion, challenger, challenger_ms} lines to `path`: the challenger answers the request the champion
    answered, its new-item settings included.

    The log is opened here, so a path that cannot be written fails the service's start, not silently later.
    Every request is accounted for (`counts()`, in /metadata and in the log at shutdown): recorded, dropped
    (the queue was full), failed (the challenger raised) or left unwritten when the process stopped; on exit
    the queue is drained for up to `drain_s` seconds first."""

    def __init__(self, rank: Callable[[list[str], int, bool, NewItemPolicy], list[str]], path: Path, model_tag: str, drain_s: float = 10.0,
                 champion_model: str = ""):
        self.rank, self.path, self.model_tag, self.champion_model = rank, Path(path), model_tag, champion_model
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._out = self.path.open("a", encoding="utf-8")
        except OSError as exc:
            raise OSError(f"shadow log {self.path}: cannot be written ({exc.strerror or exc}); pick another --shadow-log") from exc
        self.queue: queue.Queue = queue.Queue(maxsize=QUEUE_SIZE)
        self.dropped = self.recorded = self.failed = 0
        self._write_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="shadow-recorder", daemon=True)
        self._thread.start()
        atexit.register(self.close, drain_s)

    def submit(self, history: list[str], k: int, exclude_seen: bool, champion: list[str], new_items: NewItemPolicy = NewItemPolicy()) -> None:
        try:
            self.queue.put_nowait((time.time(), history, k, exclude_seen, new_items, champion))
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("shadow: the challenger is behind (%d requests queued); %d request(s) left out of %s so far, "
                            "never delayed", QUEUE_SIZE, self.dropped, self.path)

    def counts(self) -> dict:
        return {"champion": self.champion_model, "challenger": self.model_tag, "log": str(self.path), "recorded": self.recorded, "dropped": self.dropped,
                "failed": self.failed, "queued": self.queue.qsize(), "write_error": self._write_error}

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything submitted so far is written; False when `timeout` ended the wait first."""
        deadline = time.monotonic() + timeout
        while self.queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self.queue.unfinished_tasks

    def close(self, drain_s: float = 10.0) -> None:
        """Write out what is queued (up to `drain_s` seconds) and say what happened to every request. The
        service calls it when it shuts down; at exit it runs by itself if nobody did."""
        atexit.unregister(self.close)
        self.flush(drain_s)
        c = self.counts()
        log.info("shadow log %s: %d recorded, %d dropped (queue full), %d failed, %d left unwritten at shutdown",
                 self.path, c["recorded"], c["dropped"], c["failed"], c["queued"])

    def _run(self) -> None:
        while True:
            ts, history, k, exclude_seen, new_items, champion = self.queue.get()
            try:
                started = time.perf_counter()
                try:
                    challenger = self.rank(history, k, exclude_seen, new_items)
                except Exception:  # the shadow must never take the service down
                    self.failed += 1
                    if self.failed == 1 or self.failed % 1000 == 0:  # a broken challenger fails every request: not a traceback each
                        log.exception("shadow: the challenger failed to rank a request (%d so far); not recorded", self.failed)
                    continue
                line = {
                    "ts": ts, "history": history, "k": k, "exclude_seen": exclude_seen, **new_items.fields(), "champion": champion,
                    "challenger": challenger, "challenger_model": self.model_tag, "champion_model": self.champion_model,
                    "challenger_ms": round((time.perf_counter() - started) * 1000, 3),
                }
                try:  # one write per line, so a full disk leaves whole lines behind it (shadow-report skips a cut last one)
                    self._out.write(json.dumps(line) + "\n")
                    self._out.flush()
                    self.recorded += 1
                except (OSError, ValueError) as exc:  # ValueError: the file was closed under it
                    self.failed += 1
                    if self._write_error is None:
                        log.error("shadow log %s: cannot write (%s); requests are not recorded while this lasts", self.path, exc)
                    self._write_error = str(exc)
            finally:
                self.queue.task_done()
