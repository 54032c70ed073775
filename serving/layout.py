"""How the service runs on this machine: adaptive batching in a Ranker service of its own or each request
ranked alone (BEHAVIORFLOW_BATCHING), and how many processes take requests (BEHAVIORFLOW_WORKERS); both
'auto' by default, read from the CPUs this process may use. No BentoML here: `behaviorflow serve` checks the
environment with it and says the layout before it starts the server, and serving/service.py reads the same
when `bentoml serve` imports it."""

from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from serving.contract import BATCHING_ENV, EVENT_LOOP_ENV, WORKERS_ENV
from serving.ranking import env_switch
from serving.shadow import SHADOW_BUNDLE_ENV

def batching_from(value: str) -> bool:
    """BEHAVIORFLOW_BATCHING. 'auto': unbatched, on any number of CPUs. Per request answered, the batched pair
    (a front process handing each history to a Ranker service that batches them) took more CPU time than
    each request ranked alone in its front process: 6.7x on a catalog of 3,416 items and 2.1x on 100,000 with
    8 clients, 1.4x on 300,000; with the Ranker's ONNX Runtime threads sleeping between batches (its default
    since), 3.4x on 3,416 and on 300,000 1.05x with 8 clients and 0.86x at 200 req/s, a rate neither layout
    kept up with there. It answered fewer requests in every case and, at 200 req/s on 3,416 items, took 9x or more
    the median latency (benchmarks/serving_layouts.py, results/serving_layouts.json and
    serving_layouts_nospin.json, 2 cores). The cost is the hop between the two services and the Ranker's
    own work per request, which more cores do not remove, and its front (one process unless BEHAVIORFLOW_WORKERS
    says more) caps the requests it can answer on any machine; the unbatched layout adds a process per CPU."""
    if value.strip().lower() in {"", "auto"}:
        return False
    return env_switch(BATCHING_ENV, value, "auto, 1 (the batched pair) or 0 (unbatched: each request ranked alone)")


EVENT_LOOPS = ("asyncio", "uvloop")


def event_loop_from(value: str) -> str:
    """BEHAVIORFLOW_EVENT_LOOP: the event loop each HTTP process runs on (serving/bentoml_fixes.py sets it). 'asyncio'
    by default: under load, uvloop accepts one new connection per turn of its loop (libuv's accept, since 1.45), and
    a turn answers every request that arrived meanwhile, so connections pile up unaccepted. A health probe opens a
    new connection each time: on 2 cores, with 512 clients keeping the service busy, /livez on a new connection
    took 10.0-15.8 s on uvloop (up to 448 connections waiting to be accepted), past any probe timeout, and at most
    1.2 s on asyncio, which accepts every waiting connection each turn, at about the same requests/s
    (benchmarks/serving_overload.py, results/serving_overload.json). 'uvloop' is there for a service only ever
    reached over long-lived connections (behind a proxy that pools them)."""
    text = value.strip().lower() or "asyncio"
    if text not in EVENT_LOOPS:
        raise ValueError(f"{EVENT_LOOP_ENV}={value!r}: expected asyncio (the default) or uvloop")
    if text == "uvloop" and importlib.util.find_spec("uvloop") is None:
        raise ValueError(f"{EVENT_LOOP_ENV}=uvloop, but uvloop is not installed here: install it (pip install uvloop), or unset the variable for asyncio")
    return text


def workers_from(value: str, cpus: int, batching: bool, shadow: bool) -> int:
    """BEHAVIORFLOW_WORKERS: processes of the HTTP front (Recommender). 'auto': unbatched, one per usable CPU, as
    each request's parsing, checks and JSON hold the process's GIL far longer than its ONNX call (one ORT
    thread each): on 2 cores, two processes answered 1.56x the requests of one at most (benchmarks/results/serving.json);
    batched, one (its Ranker does the heavy part on every core); with a shadow challenger, one, so that the
    shadow log has one writer and /metadata's shadow counts cover every request."""
    text = value.strip().lower()
    if text in {"", "auto"}:
        return cpus if not (batching or shadow) else 1
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{WORKERS_ENV}={value!r}: expected auto or a whole number of processes (1 or more)")
    if int(text) > 1 and shadow:
        raise ValueError(f"{WORKERS_ENV}={value!r}: shadow mode ({SHADOW_BUNDLE_ENV}) runs in one process, so that its log "
                         "has one writer and its counts cover every request; unset it or set 1")
    return int(text)


def cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The CPUs a container's cgroup lets this process use (its CFS quota, rounded up), or None without a
    limit. CPU affinity does not show a Kubernetes `limits: cpu`: a pod limited to 2 CPUs on a 64-core node
    sees 64 in sched_getaffinity."""
    try:  # cgroup v2: "200000 100000" (quota, period in µs) or "max 100000"
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    try:  # cgroup v1: a quota of -1 means no limit
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else max(1, math.ceil(quota / period))
    except (OSError, ValueError):
        return None


def usable_cpus() -> tuple[int, bool]:
    """(CPUs this process may use, whether a cgroup quota is what limits them)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cpu_quota()
    return (quota, True) if quota is not None and quota < cpus else (cpus, False)


@dataclass(frozen=True)
class Layout:
    cpus: int  # usable CPUs: the process's affinity, or a container's CPU quota where lower
    cpus_from_quota: bool
    batching: bool
    workers: int
    auto_workers: bool  # BEHAVIORFLOW_WORKERS unset or 'auto'
    shadow: bool
    event_loop: str  # BEHAVIORFLOW_EVENT_LOOP: asyncio or uvloop (event_loop_from)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> "Layout":
        """The layout `bentoml serve` will run with this environment; ValueError naming the variable for a bad value."""
        cpus, from_quota = usable_cpus()
        batching = batching_from(environ.get(BATCHING_ENV, "auto"))
        value, shadow = environ.get(WORKERS_ENV, "auto"), bool(environ.get(SHADOW_BUNDLE_ENV))
        workers = workers_from(value, cpus, batching, shadow)
        event_loop = event_loop_from(environ.get(EVENT_LOOP_ENV, ""))
        return cls(cpus, from_quota, batching, workers, value.strip().lower() in {"", "auto"}, shadow, event_loop)

    def describe(self) -> str:
        """One line for `behaviorflow serve`, e.g. 'unbatched (each request ranked alone), 2 processes
        (BEHAVIORFLOW_WORKERS=auto: one per usable CPU); 2 usable CPUs'."""
        kind = "batched (a Ranker service batches requests)" if self.batching else "unbatched (each request ranked alone)"
        processes = f"{self.workers} process{'es' if self.workers > 1 else ''}"
        if self.auto_workers:
            why = "in front of the Ranker" if self.batching else "one writer for the shadow log" if self.shadow else "one per usable CPU"
            processes += f" ({WORKERS_ENV}=auto: {why})"
        quota = " (the container's CPU quota)" if self.cpus_from_quota else ""
        loop = f"; on {self.event_loop} ({EVENT_LOOP_ENV})" if self.event_loop != "asyncio" else ""
        return f"{kind}, {processes}; {self.cpus} usable CPU{'s' if self.cpus != 1 else ''}{quota}{loop}"
