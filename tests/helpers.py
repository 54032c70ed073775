"""Shared test helpers: free ports and real server processes on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVICE = "serving.service:Recommender"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(proc: subprocess.Popen) -> None:
    """Stop a process started with start_new_session=True and its children: SIGTERM, then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def running_server(command: list[str], env: dict, log: Path, url: str, ready_path: str = "/readyz", timeout: float = 60, cwd: Path = ROOT) -> Iterator[float]:
    """Start `command`, wait until GET url+ready_path answers 200, yield the seconds it took; always stop it."""
    started = time.monotonic()
    with log.open("w") as out:
        # Its own process group, so teardown reaches worker processes too.
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"{command[:3]} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}{ready_path}", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() - started > timeout:
                pytest.fail(f"{command[:3]} not ready after {timeout} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield time.monotonic() - started
    finally:
        stop_process(proc)


@contextmanager
def bentoml_serve(model_tag: str, log: Path, target: str = SERVICE, timeout: float = 60, env: dict | None = None) -> Iterator[str]:
    """`bentoml serve` `target` (the service from source, or a Bento tag) on a free port, with the Bento
    model `model_tag` (and `env` added to the environment); yield its base URL."""
    from serving.contract import MODEL_TAG_ENV

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "bentoml", "serve", target, "--host", "127.0.0.1", "--port", str(port)]
    with running_server(command, {**os.environ, MODEL_TAG_ENV: model_tag, **(env or {})}, log, url, timeout=timeout) as seconds:
        print(f"bentoml serve ready in {seconds:.1f} s (log: {log})")
        yield url


def server_workers(url: str) -> list:
    """The worker processes (psutil) of the `bentoml serve` listening on `url`'s port: the processes that answer."""
    import psutil

    port = url.rsplit(":", 1)[1]
    workers = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "serve" in cmdline and "--port" in cmdline and cmdline[cmdline.index("--port") + 1 : cmdline.index("--port") + 2] == [port]:
            workers += [c for c in proc.children(recursive=True) if "_bentoml_impl.worker.service" in " ".join(c.cmdline())]
    return workers


def mapped_packages(process, names: tuple[str, ...]) -> set[str]:
    """Which of the Python packages `names` have a compiled module mapped into `process` (Linux: /proc/PID/maps)."""
    maps = Path(f"/proc/{process.pid}/maps").read_text()
    return {name for name in names if f"/{name}/" in maps}


# An Amazon Reviews 2023 dump as it comes (reviews: parent_asin, rating, timestamps in milliseconds, no event type;
# metadata: parent_asin, categories as a list, store), and the settings that read it without rewriting it.
AMAZON_EVENT_COLUMNS = {"item_id": "parent_asin", "value": "rating"}
AMAZON_ITEM_COLUMNS = {"item_id": "parent_asin", "category": "categories", "brand": "store"}
AMAZON_SETS = ("data.event_columns={item_id: parent_asin, value: rating}", "data.event_type=rating",
               "data.item_columns={item_id: parent_asin, category: categories, brand: store}")


def write_amazon_like(events, items, out: Path) -> dict[str, Path]:
    """`events` and `items` (contract frames, e.g. the sample) written as an Amazon-2023-like pair, reviews.jsonl and
    meta.jsonl, and as its contract-named equivalent, events.jsonl and items.jsonl: the same objects with the keys
    renamed, `event_type: rating` added and the timestamps in seconds. Returns the four paths by those names."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    reviews, contract_events, meta, contract_items = [], [], [], []
    for i, row in enumerate(events.itertuples(index=False)):
        stars = float(1 + i % 5)
        review = {"rating": stars, "title": "Works as described", "text": f"review {i}", "asin": f"{row.item_id}-V{i % 3}",
                  "parent_asin": row.item_id, "user_id": row.user_id, "timestamp": int(row.timestamp) * 1000 + (37 * i) % 1000,
                  "helpful_vote": i % 4, "verified_purchase": i % 2 == 0}
        reviews.append(review)
        contract_events.append({("item_id" if k == "parent_asin" else "value" if k == "rating" else k): v for k, v in review.items()}
                               | {"timestamp": int(row.timestamp), "event_type": "rating"})
    for row in items.itertuples(index=False):
        record = {"main_category": "Sports & Outdoors", "title": row.title, "categories": ["Sports & Outdoors", row.category],
                  "store": row.brand, "description": [row.description], "features": ["light", "sturdy"],
                  "details": {"Weight": "1 kg"}, "parent_asin": row.item_id}
        meta.append(record)
        names = {"parent_asin": "item_id", "categories": "category", "store": "brand"}
        contract_items.append({names.get(k, k): v for k, v in record.items()})
    paths = {name: out / f"{name}.jsonl" for name in ("reviews", "meta", "events", "items")}
    for name, records in zip(paths, (reviews, meta, contract_events, contract_items)):
        paths[name].write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return paths
