"""Shadow mode: the service answers with the champion and, off the response path, records what a
second model (the challenger) would have answered to the same request, for offline comparison
(`behaviorflow shadow-report`).

Enabled by two environment variables at serve time (`behaviorflow serve --shadow challenger` sets them):
    BEHAVIORFLOW_SHADOW_BUNDLE  the challenger's model bundle folder (serving/contract.py layout)
    BEHAVIORFLOW_SHADOW_LOG     the JSONL file to append to (one line per request)
The challenger runs in one background thread behind a bounded queue: when it falls behind, requests
are dropped from the shadow log (and counted), never delayed.
"""

from __future__ import annotations

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
    answered, its new-item settings included."""

    def __init__(self, rank: Callable[[list[str], int, bool, NewItemPolicy], list[str]], path: Path, model_tag: str):
        self.rank, self.path, self.model_tag = rank, Path(path), model_tag
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.queue: queue.Queue = queue.Queue(maxsize=QUEUE_SIZE)
        self.dropped = 0
        self.recorded = 0
        self._thread = threading.Thread(target=self._run, name="shadow-recorder", daemon=True)
        self._thread.start()

    def submit(self, history: list[str], k: int, exclude_seen: bool, champion: list[str], new_items: NewItemPolicy = NewItemPolicy()) -> None:
        try:
            self.queue.put_nowait((time.time(), history, k, exclude_seen, new_items, champion))
        except queue.Full:
            self.dropped += 1

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything submitted so far is written (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while self.queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)

    def _run(self) -> None:
        with self.path.open("a", encoding="utf-8") as out:
            while True:
                ts, history, k, exclude_seen, new_items, champion = self.queue.get()
                try:
                    started = time.perf_counter()
                    challenger = self.rank(history, k, exclude_seen, new_items)
                    line = {
                        "ts": ts, "history": history, "k": k, "exclude_seen": exclude_seen, **new_items.fields(), "champion": champion,
                        "challenger": challenger, "challenger_model": self.model_tag,
                        "challenger_ms": round((time.perf_counter() - started) * 1000, 3),
                    }
                    out.write(json.dumps(line) + "\n")
                    out.flush()
                    self.recorded += 1
                except Exception:  # the shadow must never take the service down
                    log.exception("shadow ranking failed; request not recorded")
                finally:
                    self.queue.task_done()
