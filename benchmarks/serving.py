"""Serving benchmark: torch eager vs ONNX Runtime fp32 vs int8 in-process, and the real service under load.

One run measures, on this machine:

1. In-process latency of the exported inference path (history -> top-100): torch eager (`TopKGraph`
   under `torch.inference_mode`) vs ONNX Runtime fp32 vs ONNX Runtime int8, at batch 1 and 64 and at
   history lengths 50 and max_len, engine by engine in alternating blocks (see `inprocess`), warm-up first; median and p95 per call.
2. The int8 decision of `components.export.quantize_int8` (NDCG@10 drop and top-10 overlap vs fp32 on
   the model's test split, and its speed per single-history call) — only meaningful on a trained model
   with real targets.
3. Packaging of the served model as the flow does it: bundle (with item vectors) -> Bento model store
   -> `bentoml build` -> `.bento` archive (its size), and `bentoml serve <bento>` time to /readyz.
4. Load: locust (headless, FastHttpUser) POSTing /recommend with real user ids and histories from the
   bundle, against the batched service (Recommender -> Ranker, adaptive batching) and the unbatched one
   (BEHAVIORFLOW_BATCHING=0: each request ranked alone, a process per CPU): closed-loop concurrency 1, 8, 32,
   64 (no think time, so the highest of them is the open-ended maximum throughput) and a constant
   target rate (200 requests/s by default, `--rate-users` users at rate/users each). Percentiles come
   from locust's CSV (whole milliseconds below 100 ms) and, exactly, from a request hook.
   hey (Go; Debian: apt-get install hey) runs every scenario too, by default: a load generator light
   enough that it does not take the server's CPU on a 2-core machine (50 locust users do). It runs as
   `--hey-streams` processes, each with its own request body; at the target rate each stream sends
   rate/streams requests/s and the streams are staggered, so requests arrive evenly spaced. Every
   request is in hey's CSV and the percentiles are computed here (0.1 ms resolution), with the
   self-check below. `--generators locust` skips hey.
   `--generators ...,wrk` also runs every scenario under wrk (Debian: apt-get install wrk), a C load
   generator: one thread, `users` connections, Poisson arrivals at the target rate (`--arrivals uniform`
   spaces them evenly). Experimental: its latencies failed the self-check on this machine (each wrk and
   hey row has `latency_consistent`: no connection can be busy longer than the run), so its counts and
   throughput are usable and its percentiles are not.

The models (each number in the output names its model):

- `ml1m`: ML-1M scale (3,416 items, d_model 64, 2 layers, 2 heads, max_len 200; flags change it),
  trained `--ml1m-steps` steps on the real ML-1M training sequences (`--ml1m-data`, the SASRec
  version read by benchmarks/ml1m.py; item text "title. genres", cached embeddings). Its test split is
  the 3,261 users with a known test input. Without the data (or with `--synthetic`): random weights,
  random text vectors and synthetic log-normal history lengths — speed does not depend on the weights
  (same shapes, same kernels), but then no int8 decision is made for it.
- `sample`: the bundled sample shop (`generate_sample()` -> `prepare` -> `embed_items`), max_len 50,
  trained `--sample-steps` steps; int8 is decided on its 1,500 test cases.

    .venv/bin/python benchmarks/serving.py               # full run, ~20 min on 2 cores -> benchmarks/results/serving.json
    .venv/bin/python benchmarks/serving.py --quick       # smoke test, ~1-2 min: small model, seconds of load
    .venv/bin/python benchmarks/serving.py --pinning split --concurrency 1,8 --run-time 60

Run it on an otherwise idle machine: the server, the load generator and the in-process timings share
its cores. `--pinning shared` (default) lets server and locust share all cores; `split` pins the
server to CPU 0 and locust to CPU 1 (taskset); `--compare-pinning` adds the target-rate scenario under
the other pinning. See benchmarks/README.md for how to read the numbers.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from serving.contract import ACCESS_LOG_ENV, BATCHING_ENV, WORKERS_ENV  # noqa: E402 (pydantic only, no bentoml)
from provenance import cpu_model, git_state  # noqa: E402 (benchmarks/ is on sys.path: scripts run from there)

log = logging.getLogger("benchmarks.serving")

# Service layouts the load test can start (--services): the environment each `bentoml serve` gets.
SERVICES = {
    "batched": {BATCHING_ENV: "1"},
    "unbatched": {BATCHING_ENV: "0"},
    # (unbatched already gives each ONNX call one intra-op thread: BEHAVIORFLOW_ORT_THREADS=1 changes nothing there)
    "unbatched_lean": {BATCHING_ENV: "0", ACCESS_LOG_ENV: "0"},  # without the access log
    "unbatched_1w": {BATCHING_ENV: "0", WORKERS_ENV: "1"},  # one process, as before BEHAVIORFLOW_WORKERS (auto: one per CPU)
}
TARGET_P99_MS = 15.0
GENERATORS = ("locust", "hey", "wrk")
TARGET_SPEEDUP = 3.0


# ---------------------------------------------------------------------------------------- models


@dataclass
class ModelUnderTest:
    """A trained (or random-weight) TextSASRec with everything the benchmark needs around it."""

    name: str
    description: str
    model: object  # TextSASRec
    test_inputs: list[np.ndarray]
    test_targets: np.ndarray | None  # None: no real targets (random weights): no int8 decision
    item_ids: list[str]
    titles: list[str]
    users: dict[str, list[int]]  # user id -> item indices, oldest first (full history)
    training: dict = field(default_factory=dict)


def sample_model(args) -> ModelUnderTest:
    import torch

    from components import settings
    from components.data.sample import generate_sample
    from components.models.text_sasrec import TextSASRec, TextSASRecConfig
    from components.preparation import prepare
    from components.tokenization import TextEncoderConfig, embed_items

    events, items = generate_sample()
    prepared = prepare(events, items)
    embeddings = embed_items(prepared.item_texts, TextEncoderConfig(), settings.cache_dir(), progress=False)
    # Serving reads the item table as a constant of the graph: token embeddings change nothing it measures.
    cfg = TextSASRecConfig(n_items=prepared.n_items, text_dim=int(embeddings.shape[1]), max_len=args.sample_max_len, token_embeddings=False)
    model = TextSASRec(cfg, torch.from_numpy(embeddings), torch.from_numpy(prepared.trained_items()))
    training = train(model, prepared.train, prepared.valid_split(), args.sample_steps, args)
    test_inputs, test_targets = prepared.test_split()
    return ModelUnderTest(
        name="sample",
        description=(
            f"bundled sample shop ({len(prepared.user_ids)} users, {prepared.n_items} items), TextSASRec "
            f"d_model {cfg.d_model}, {cfg.n_layers} layers, max_len {cfg.max_len}, trained {training['steps']} steps"
        ),
        model=model,
        test_inputs=list(test_inputs),
        test_targets=np.asarray(test_targets),
        item_ids=list(prepared.item_ids),
        titles=list(prepared.titles),
        users={u: [int(i) for i in seq] for u, seq in zip(prepared.user_ids, prepared.sequences)},
        training=training,
    )


def ml1m_model(args) -> ModelUnderTest:
    import torch

    from components.models.text_sasrec import TextSASRec, TextSASRecConfig

    def config(n_items: int, text_dim: int) -> TextSASRecConfig:
        return TextSASRecConfig(
            n_items=n_items, text_dim=text_dim, d_model=args.d_model, n_layers=args.n_layers,
            n_heads=args.n_heads, max_len=args.max_len, token_embeddings=False,  # the table is a constant of the graph
        )

    real = not args.synthetic and (args.ml1m_data / "sasrec-version").is_dir()
    if real:
        from benchmarks.ml1m import load, trained_mask  # the one ML-1M reader of this repository
        from components import settings
        from components.tokenization import TextEncoderConfig, embed_items

        data = load(args.ml1m_data)
        n_items = data["n_items"]
        embeddings = embed_items(data["texts"], TextEncoderConfig(), settings.cache_dir(), progress=False)
        cfg = config(n_items, int(embeddings.shape[1]))
        model = TextSASRec(cfg, torch.from_numpy(embeddings), torch.from_numpy(trained_mask(data["train"], n_items)))
        training = train(model, data["train"], data["valid"], args.ml1m_steps, args) if args.ml1m_steps > 0 else {"steps": 0}
        test_inputs, test_targets = data["test"]
        # Served users: every SAS user with their training sequence (what a bundle would hold).
        users = {f"u{k + 1}": [int(i) for i in seq] for k, seq in enumerate(data["train"])}
        what = f"trained {training['steps']} steps on the ML-1M training sequences" if training["steps"] else "random weights"
        return ModelUnderTest(
            name="ml1m",
            description=(
                f"ML-1M ({len(users)} users, {n_items} items), TextSASRec d_model {cfg.d_model}, {cfg.n_layers} "
                f"layers, max_len {cfg.max_len}, {what}"
            ),
            model=model,
            test_inputs=list(test_inputs),
            test_targets=np.asarray(test_targets) if training["steps"] else None,
            item_ids=[str(i) for i in range(1, n_items + 1)],
            titles=list(data["texts"]),
            users=users,
            training=training,
        )
    # Synthetic stand-in of the same size: random weights, random unit text vectors, ML-1M-like lengths.
    rng = np.random.default_rng(0)
    n_items, text_dim = args.n_items, 384
    text = rng.normal(size=(n_items, text_dim)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    model = TextSASRec(config(n_items, text_dim), torch.from_numpy(text))
    lengths = np.clip(rng.lognormal(np.log(95), 1.0, size=6040).astype(int), 20, 2000)
    users = {f"u{k + 1}": rng.integers(1, n_items + 1, size=n).tolist() for k, n in enumerate(lengths)}
    return ModelUnderTest(
        name="ml1m",
        description=(
            f"ML-1M-sized synthetic stand-in ({len(users)} users, {n_items} items, log-normal history lengths), "
            f"TextSASRec d_model {args.d_model}, {args.n_layers} layers, max_len {args.max_len}, random weights"
        ),
        model=model,
        test_inputs=[np.asarray(h[:-1], dtype=np.int64) for h in list(users.values())[:2000]],
        test_targets=None,
        item_ids=[f"m{i}" for i in range(1, n_items + 1)],
        titles=[f"Movie {i}" for i in range(1, n_items + 1)],
        users=users,
        training={"steps": 0},
    )


def train(model, train_seqs, valid, steps: int, args) -> dict:
    """About `steps` optimizer steps (whole epochs) of the project's own training loop."""
    from components.training import TrainConfig, train_model
    from components.training.train import training_pairs

    batch = TrainConfig().batch_size
    per_epoch = max(1, math.ceil(len(training_pairs(train_seqs, model.cfg.max_len)) / batch))
    epochs = max(1, math.ceil(steps / per_epoch))
    cfg = TrainConfig(max_epochs=epochs, max_minutes=args.train_minutes, patience=10**6, progress=False, val_users=512)
    result = train_model(model, list(train_seqs), valid, cfg)
    model.eval()
    return {
        "steps": len(result.curve) * per_epoch,
        "epochs": len(result.curve),
        "wall_s": round(result.wall_s, 1),
        "best_val": {k: round(v, 4) for k, v in result.best_val.items()},
        "stopped_because": result.stopped_because,
    }


# ---------------------------------------------------------------------------------------- in-process


def fixed_length_batch(histories: list[np.ndarray], batch: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """[batch, length] real item indices: a random user's history, extended backwards with other users'
    histories when shorter, so every row is exactly `length` steps (the model reads at most max_len)."""
    pool = [h for h in histories if len(h)]
    rows = []
    for _ in range(batch):
        seq: list[int] = []
        while len(seq) < length:
            seq = list(pool[rng.integers(len(pool))]) + seq
        rows.append(seq[-length:])
    return np.asarray(rows, dtype=np.int64)


def summarize(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000
    return {
        "median_ms": round(float(np.median(ms)), 4),
        "p95_ms": round(float(np.percentile(ms, 95)), 4),
        "mean_ms": round(float(ms.mean()), 4),
        "min_ms": round(float(ms.min()), 4),
        "reps": len(ms),
    }


def inprocess(mut: ModelUnderTest, paths: dict[str, Path], args, with_torch: bool = True) -> list[dict]:
    """Timings of torch eager (unless not `with_torch`) and each ONNX graph on the same batches, engine by engine
    in alternating blocks of `--block` calls (components.timing.timed_in_turns: why not call by call), at each of
    `--threads` (torch threads = ORT intra-op threads for that pass)."""
    import torch

    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        rows += [r | {"threads": threads} for r in _inprocess_at(mut, paths, args, threads, with_torch)]
    torch.set_num_threads(max(args.threads))
    return rows


def _inprocess_at(mut: ModelUnderTest, paths: dict[str, Path], args, threads: int, with_torch: bool = True) -> list[dict]:
    import onnxruntime as ort
    import torch

    from components.models.text_sasrec import TopKGraph
    from components.timing import timed_in_turns
    from serving import contract

    graph = TopKGraph(mut.model.cpu().eval(), contract.MAX_K)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    sessions = {name: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]) for name, path in paths.items()}
    outputs = [contract.OUTPUT_ITEMS, contract.OUTPUT_SCORES, contract.OUTPUT_USER]
    max_len = mut.model.cfg.max_len
    lengths = sorted({min(max_len, n) if n > 0 else max_len for n in args.lengths})
    rng = np.random.default_rng(1)  # the same histories at every thread count
    rows = []
    with torch.inference_mode():
        for batch in args.batches:
            for length in lengths:
                history = fixed_length_batch(mut.test_inputs, batch, length, rng)
                exclude = np.ones(batch, dtype=bool)
                feeds = {contract.INPUT_HISTORY: history, contract.INPUT_EXCLUDE_SEEN: exclude}
                engines: dict[str, Callable[[], object]] = {
                    **({"torch": lambda: graph(torch.from_numpy(history), torch.from_numpy(exclude))} if with_torch else {}),
                    **{f"onnx_{name}": (lambda s=s: s.run(outputs, feeds)) for name, s in sessions.items()},
                }
                for run in engines.values():
                    for _ in range(args.warmup):
                        run()
                timed = timed_in_turns([lambda i, run=run: run() for run in engines.values()], calls=args.reps, block=args.block)
                times = dict(zip(engines, timed))
                for name, t in times.items():
                    rows.append({"model": mut.name, "engine": name, "batch": batch, "seq": length, **summarize(t)})
                log.info(
                    "%s %d threads, batch %d seq %d: %s", mut.name, threads, batch, length,
                    ", ".join(f"{n} {np.median(t) * 1000:.3f} ms" for n, t in times.items()),
                )
    return rows


def fastest(rows: list[dict], threads: int | None = None) -> dict:
    """{(engine, batch, seq): the row with the lowest median} among all thread counts, or at `threads` only."""
    best: dict = {}
    for r in rows:
        key = (r["engine"], r["batch"], r["seq"])
        if (threads is None or r["threads"] == threads) and (key not in best or r["median_ms"] < best[key]["median_ms"]):
            best[key] = r
    return best


def speedups(rows: list[dict], over: str, under: str, threads: int | None = None) -> dict:
    """median(over) / median(under) per (batch, seq): how many times faster `under` is. threads=None:
    each engine at its fastest of the thread counts measured; else both at `threads`."""
    by = fastest(rows, threads)
    out: dict = {}
    for (engine, batch, seq), r in by.items():
        if engine == under and (over, batch, seq) in by:
            out.setdefault(f"batch{batch}", {})[f"seq{seq}"] = round(by[(over, batch, seq)]["median_ms"] / r["median_ms"], 2)
    return out


def fastest_threads(rows: list[dict]) -> dict:
    """{engine: {batchB: {seqS: the thread count with the lowest median}}}."""
    out: dict = {}
    for (engine, batch, seq), r in sorted(fastest(rows).items()):
        out.setdefault(engine, {}).setdefault(f"batch{batch}", {})[f"seq{seq}"] = r["threads"]
    return out


# ---------------------------------------------------------------------------------------- packaging


def package(mut: ModelUnderTest, onnx_path: Path, item_vectors: np.ndarray, precision: str, quantization: str, work: Path) -> dict:
    from components.export import write_bundle
    from components.packaging import build_bento, export_bento, save_bundle_to_store
    from serving import contract

    max_len = mut.model.cfg.max_len
    users = {u: [mut.item_ids[i - 1] for i in seq[-max_len:]] for u, seq in mut.users.items() if len(seq)}
    manifest = {
        "model_name": contract.BENTO_MODEL_NAME,
        "max_len": max_len,
        "n_items": len(mut.item_ids),
        "precision": precision,
        "quantization": quantization,
        "benchmark_model": mut.description,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    bundle = write_bundle(work / "bundle", onnx_path, mut.item_ids, mut.titles, users, manifest, item_vectors)
    model_tag = save_bundle_to_store(bundle, labels={"source": "benchmarks-serving"}, metadata=manifest)
    started = time.perf_counter()
    bento_tag = build_bento(model_tag, labels={"source": "benchmarks-serving"})
    build_s = time.perf_counter() - started
    archive = export_bento(bento_tag, work / f"{bento_tag.replace(':', '-')}.bento")
    return {
        "model": mut.name,
        "precision": precision,
        "model_tag": model_tag,
        "bento_tag": bento_tag,
        "bento_build_s": round(build_s, 1),
        "bento_size_bytes": archive.stat().st_size,
        "bento_size_mib": round(archive.stat().st_size / 2**20, 2),
        "bundle_bytes": sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file()),
        "users": len(users),
        "bodies": users,  # popped before the JSON is written
    }


def random_weight_bento(n_items: int, folder: Path) -> tuple[ModelUnderTest, Path, dict, list[dict]]:
    """A random-weight model of `n_items` items (d_model 64, 2 layers, max_len 200: serving speed does not depend
    on the weights), its ONNX graph under `folder`, a Bento of it in the current BentoML store (`package`), and
    three /recommend bodies: histories of 50 of its own items, k=10. For serving_layouts.py and serving_overload.py."""
    from types import SimpleNamespace

    from components.export import export_onnx

    mut = ml1m_model(SimpleNamespace(synthetic=True, n_items=n_items, d_model=64, n_layers=2, n_heads=2, max_len=200,
                                     ml1m_data=Path("/nonexistent")))
    onnx_path = export_onnx(mut.model, folder / "model.onnx")
    packaged = package(mut, onnx_path, mut.model.item_table().detach().numpy(), "fp32", "none", folder)
    bodies = [{"history": seq[-50:], "k": 10} for seq in list(packaged.pop("bodies").values())[:3]]
    return mut, onnx_path, packaged, bodies


# ---------------------------------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, log_path: Path, started: float, timeout: float = 180) -> None:
    """Poll url/readyz until it answers 200; RuntimeError with the log's tail if the server exits or is not
    ready `timeout` seconds after `started` (time.monotonic())."""
    import httpx

    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"bentoml serve exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"bentoml serve not ready after {timeout:g} s:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.05)


class Server:
    """`bentoml serve <bento>` in its own process group; `ready_s` is the time from start to /readyz 200."""

    def __init__(self, bento_tag: str, model_tag: str, service_env: dict, cpus: str | None, log_path: Path, env: dict):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "bentoml", "serve", bento_tag, "--host", "127.0.0.1", "--port", str(self.port)]
        if cpus is not None:
            command = ["taskset", "-c", cpus, *command]
        self.log_path = log_path
        from serving.contract import MODEL_TAG_ENV

        started = time.monotonic()
        with log_path.open("w") as out:
            # cwd: the work folder, so the Bento's own copy of serving/ is what runs, not the checkout's.
            self.proc = subprocess.Popen(
                command, cwd=log_path.parent, env={**env, MODEL_TAG_ENV: model_tag, **service_env},
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        try:
            wait_ready(self.url, self.proc, log_path, started)
        except RuntimeError:
            self.stop()
            raise
        self.ready_s = time.monotonic() - started

    def _tree(self) -> list:
        """The server's process and all its descendants (psutil)."""
        import psutil

        root = psutil.Process(self.proc.pid)
        return [root, *root.children(recursive=True)]

    def rss_mb(self) -> float:
        """Resident memory of the server's whole process tree."""
        import psutil

        try:
            return round(sum(p.memory_info().rss for p in self._tree()) / 2**20, 1)
        except psutil.Error:
            return float("nan")

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the server's whole process tree so far (a process that has just
        exited is left out)."""
        return sum(seconds for _, seconds in self.cpu_seconds_by_process())

    def cpu_seconds_by_process(self) -> list[tuple[object, float]]:
        """(psutil.Process, its user + system CPU seconds so far) for each process of the server's tree."""
        import psutil

        found = []
        for proc in self._tree():
            try:
                times = proc.cpu_times()
                found.append((proc, times.user + times.system))
            except psutil.Error:
                pass
        return found

    def processes(self) -> int:
        return len(self._tree())

    def batch_stats(self) -> tuple[float, float]:
        """(ranker queries, ranker batches) so far, from BentoML's Prometheus metrics; (0, 0) unbatched."""
        import re

        import httpx

        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        found = []
        for name in ("sum", "count"):
            match = re.search(rf'^bentoml_service_adaptive_batch_size_{name}{{[^}}]*method_name="rank"[^}}]*}} (\S+)$', text, re.M)
            found.append(float(match.group(1)) if match else 0.0)
        return found[0], found[1]

    def stop(self) -> None:
        stop_group(self.proc)


def stop_group(proc: subprocess.Popen) -> None:
    """Stop a server started in its own process group (start_new_session): SIGTERM to the group, SIGKILL after 30 s."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        except ProcessLookupError:  # the group is gone already
            pass


# ---------------------------------------------------------------------------------------- load (locust)

LOCUSTFILE = '''"""Generated by benchmarks/serving.py: POST /recommend with bodies drawn from a JSON file."""
import json
import os
import random
import time

from locust import FastHttpUser, constant, constant_throughput, events, task

BODIES = json.load(open(os.environ["BF_BODIES"]))
RATE = float(os.environ.get("BF_USER_RATE", "0"))  # requests/s per user; 0 = closed loop, no think time
OUT = os.environ["BF_LATENCIES"]
_state = {"steady_since": None, "rows": []}  # rows: [ms, ok, steady]


@events.spawning_complete.add_listener
def _steady(user_count, **kwargs):
    _state["steady_since"] = time.time()  # --reset-stats resets locust's own stats now too


@events.request.add_listener
def _record(request_type, name, response_time, response_length, exception=None, start_time=None, **kwargs):
    # Steady state: requests sent once every user runs (not those in flight while users were spawning).
    since = _state["steady_since"]
    steady = since is not None and (start_time is None or start_time >= since)
    _state["rows"].append([response_time, exception is None, steady])


@events.test_stop.add_listener
def _dump(environment, **kwargs):
    with open(OUT, "w") as f:
        json.dump(_state["rows"], f)


class Client(FastHttpUser):
    wait_time = constant_throughput(RATE) if RATE > 0 else constant(0)

    @task
    def recommend(self):
        with self.client.post("/recommend", json=random.choice(BODIES), catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {(response.text or '')[:200]}")
            elif b'"items":[{' not in (response.content or b""):
                response.failure("no items in the response")
'''


@dataclass(frozen=True)
class Scenario:
    name: str
    users: int
    rate: float | None  # total target requests/s; None = closed loop (as fast as each user can)


def run_locust(scenario: Scenario, url: str, bodies: Path, work: Path, run_time: int, cpus: str | None, env: dict) -> dict:
    prefix = work / f"locust-{scenario.name}"
    latencies = work / f"latencies-{scenario.name}.json"
    command = [
        str(Path(sys.executable).parent / "locust"), "-f", str(work / "locustfile.py"), "--headless",
        "-u", str(scenario.users), "-r", str(scenario.users), "--run-time", f"{run_time}s", "--host", url,
        "--csv", str(prefix), "--reset-stats", "--only-summary", "--stop-timeout", "10", "--loglevel", "WARNING",
    ]
    if cpus is not None:
        command = ["taskset", "-c", cpus, *command]
    user_rate = (scenario.rate / scenario.users) if scenario.rate else 0.0
    child_env = {**env, "BF_BODIES": str(bodies), "BF_USER_RATE": str(user_rate), "BF_LATENCIES": str(latencies)}
    started = time.monotonic()
    with (work / f"locust-{scenario.name}.log").open("w") as out:
        proc = subprocess.run(command, env=child_env, stdout=out, stderr=subprocess.STDOUT, timeout=run_time + 120)
    wall = time.monotonic() - started
    with open(f"{prefix}_stats.csv") as f:
        row = next(r for r in csv.DictReader(f) if r["Name"] == "Aggregated")

    def number(key: str) -> float | None:
        value = row.get(key, "N/A")
        return None if value in ("N/A", "", None) else float(value)

    rows = json.loads(latencies.read_text()) if latencies.exists() else []
    steady = np.array([r[0] for r in rows if r[2] and r[1]], dtype=float)
    exact = {f"p{q}_ms": round(float(np.percentile(steady, q)), 2) for q in (50, 95, 99)} if len(steady) else {}
    if len(steady):
        exact["max_ms"] = round(float(steady.max()), 2)
    return {
        "scenario": scenario.name,
        "rps_target": scenario.rate,
        "concurrency": scenario.users,
        "users_rate_each": round(user_rate, 3) if user_rate else None,
        "requests": int(number("Request Count") or 0),
        "achieved_rps": round(number("Requests/s") or 0.0, 1),
        "p50_ms": number("50%"),
        "p95_ms": number("95%"),
        "p99_ms": number("99%"),
        "max_ms": number("Max Response Time"),
        # Every failed request of the run, ramp-up included (locust's CSV counts after the reset only).
        "errors": int(sum(1 for r in rows if not r[1])),
        "errors_steady": int(number("Failure Count") or 0),
        "exact": exact,
        "locust_exit_code": proc.returncode,
        "wall_s": round(wall, 1),
    }


# ---------------------------------------------------------------------------------------- load (wrk)

# wrk (C, epoll; Debian package `wrk`) drives the same requests at a fraction of locust's CPU, so on a
# 2-core machine less of the measured latency is the load generator's own. Pacing: before each request
# wrk asks delay() how long to wait; the script hands out arrival times at the target rate (Poisson or
# evenly spaced) to whichever connection asks next. Latency is wrk's own (µs resolution), measured from
# sending a request to its full response; the delay before it is not part of it.
WRK_SCRIPT = '''-- Generated by benchmarks/serving.py: POST /recommend with bodies from a file, paced to a target rate.
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bf_timespec;
int clock_gettime(int clk_id, bf_timespec *tp);
]]
local clock = ffi.new("bf_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, clock)  -- CLOCK_MONOTONIC
  return tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1e6
end

local bodies, headers = {}, { ["Content-Type"] = "application/json" }
local interval, poisson, next_slot = 0, false, nil
bad = 0  -- 200 answers without recommendations (read by done() through thread:get)

function init(args)
  for line in io.lines(args[1]) do bodies[#bodies + 1] = line end
  local rate = tonumber(args[2])
  if rate > 0 then interval = 1000 / rate end
  poisson = args[3] == "poisson"
  math.randomseed(tonumber(args[4]))
end

function request()
  return wrk.format("POST", "/recommend", headers, bodies[math.random(#bodies)])
end

function response(status, headers, body)
  if status == 200 and not string.find(body, '"items":[{', 1, true) then bad = bad + 1 end
end
%(delay)s
local threads = {}
function setup(thread)
  thread:set("seed", #threads + 1)
  threads[#threads + 1] = thread
end

function done(summary, latency, requests)
  local e, missing = summary.errors, 0
  for _, thread in ipairs(threads) do missing = missing + thread:get("bad") end
  io.write(string.format('BF_RESULT {"requests": %%d, "duration_us": %%d, "connect": %%d, "read": %%d, "write": %%d, '
    .. '"status": %%d, "timeout": %%d, "no_items": %%d, "p50_us": %%d, "p95_us": %%d, "p99_us": %%d, "max_us": %%d, "mean_us": %%.1f}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout, missing,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max, latency.mean))
end
'''
WRK_DELAY = '''
function delay()  -- the next arrival time at the target rate, handed to whichever connection asks
  local now = now_ms()
  local gap = poisson and -math.log(1 - math.random()) * interval or interval
  if next_slot == nil or next_slot < now then next_slot = now end  -- behind schedule: no catch-up burst
  local slot = next_slot
  next_slot = slot + gap
  return math.floor(slot - now + 0.5)
end
'''


def run_wrk(scenario: Scenario, url: str, bodies: Path, work: Path, run_time: int, cpus: str | None, arrivals: str) -> dict:
    """One scenario with wrk: one thread, `users` connections; paced to the target rate when there is one."""
    script = work / f"wrk-{'paced' if scenario.rate else 'closed'}.lua"
    script.write_text(WRK_SCRIPT % {"delay": WRK_DELAY if scenario.rate else ""})
    command = ["wrk", "-t", "1", "-c", str(scenario.users), "-d", f"{run_time}s", "--timeout", "10s", "-s", str(script),
               f"{url}/recommend", "--", str(bodies), str(scenario.rate or 0), arrivals, "7"]
    if cpus is not None:
        command = ["taskset", "-c", cpus, *command]
    started = time.monotonic()
    proc = subprocess.run(command, capture_output=True, text=True, timeout=run_time + 120)
    wall = time.monotonic() - started
    (work / f"wrk-{scenario.name}.log").write_text(proc.stdout + proc.stderr)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("BF_RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    w = json.loads(line[len("BF_RESULT "):])
    ms = {f"p{q}_ms": round(w[f"p{q}_us"] / 1000, 2) for q in (50, 95, 99)} | {"max_ms": round(w["max_us"] / 1000, 2)}
    errors = sum(w[k] for k in ("connect", "read", "write", "status", "timeout", "no_items"))
    # Self-check: `users` connections cannot be busy for more than users × duration in all, so
    # mean latency × requests must stay within it. wrk 4.1.0 (Debian) breaks this here: against a test
    # server answering 95 % of requests at once and 5 % after 100 ms, one connection, it reported 999
    # requests in 5.0 s with a mean latency of 27 ms (25 s of busy time).
    busy_s = w["mean_us"] * w["requests"] / 1e6
    consistent = busy_s <= 1.05 * scenario.users * w["duration_us"] / 1e6
    if not consistent:
        log.warning("wrk %s: latencies inconsistent with its own counts (%.1f s busy on %d connections in %.1f s): not a measurement",
                    scenario.name, busy_s, scenario.users, w["duration_us"] / 1e6)
    return {
        "scenario": scenario.name,
        "rps_target": scenario.rate,
        "concurrency": scenario.users,
        "users_rate_each": None,
        "arrivals": arrivals if scenario.rate else None,
        "requests": w["requests"],
        "achieved_rps": round(w["requests"] / (w["duration_us"] / 1e6), 1),
        **ms,
        "errors": errors,
        "errors_steady": errors,
        "error_kinds": {k: w[k] for k in ("connect", "read", "write", "status", "timeout", "no_items") if w[k]},
        "exact": dict(ms),
        "latency_consistent": consistent,
        "wrk_exit_code": proc.returncode,
        "wall_s": round(wall, 1),
    }


def popular_bodies(url: str) -> list[dict]:
    """Three /recommend bodies for the served model: histories of 5 of its own items (its most popular 15, as
    an empty history gets them), k=10."""
    import httpx

    items = [row["item_id"] for row in httpx.post(f"{url}/recommend", json={"history": [], "k": 15}).json()["items"]]
    return [{"history": items[j : j + 5], "k": 10} for j in range(0, 15, 5)]


UNANSWERED_BUSY_SHARE = 0.95  # run_hey: a closed loop whose answered requests account for less of its clients' time


def run_hey(scenario: Scenario, url: str, bodies: list[dict], work: Path, run_time: int, cpus: str | None, streams: int,
            timeout_s: int = 10) -> dict:
    """One scenario with hey (Go; Debian package hey): several hey processes, each POSTing its own body
    (a user id or a history) and writing every answered request to CSV; the percentiles are computed here.
    `errors` counts answers other than 200. hey's CSV has no row for a request that got no answer (refused
    connection, or no answer within `timeout_s`), so those cannot be counted: at a target rate they show as an
    achieved rate below it; in a closed loop, as `answered_busy_share` below 1: each client is always waiting on
    one request, so the answered requests' latencies add up to clients × run time (1.001 against a healthy
    server, 0.0 against a closed port), less the time spent on requests that got no answer.

    Closed loop: min(users, streams) processes share `users` workers. Target rate: `streams` processes
    of one worker each at rate/streams requests/s, started 1/rate s apart, so together they send
    evenly spaced requests (hey's -q paces each worker; a worker whose answer is late sends its next
    request at once and then skips ticks, so a slow server shows up as a lower achieved rate)."""
    processes = streams if scenario.rate else min(scenario.users, streams)
    workers = [scenario.users // processes + (j < scenario.users % processes) for j in range(processes)] if not scenario.rate else [1] * processes
    procs = []
    for j in range(processes):
        body, out_path = work / f"hey-body-{j}.json", work / f"hey-{scenario.name}-{j}.csv"
        body.write_text(json.dumps(bodies[j % len(bodies)]))
        command = ["hey", "-z", f"{run_time}s", "-c", str(workers[j]), "-m", "POST", "-T", "application/json", "-D", str(body),
                   "-t", str(timeout_s), "-o", "csv"]
        if scenario.rate:
            command += ["-q", f"{scenario.rate / processes:g}"]
        command.append(f"{url}/recommend")
        if cpus is not None:
            command = ["taskset", "-c", cpus, *command]
        out = out_path.open("w")
        procs.append((subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT), out, out_path))
        if scenario.rate:
            time.sleep(1 / scenario.rate)  # stagger the streams: one request every 1/rate s in all
    latencies, errors, busy_ok = [], 0, True
    for j, (proc, out, out_path) in enumerate(procs):
        proc.wait(timeout=run_time + 120)
        out.close()
        with out_path.open() as f:
            rows = list(csv.DictReader(f))
        if proc.returncode != 0 or (rows and "response-time" not in rows[0]):
            raise RuntimeError(f"hey exited with {proc.returncode}: {out_path.read_text()[-2000:]}")
        times = np.array([float(r["response-time"]) for r in rows])
        offsets = np.array([float(r["offset"]) for r in rows])
        errors += sum(r["status-code"] != "200" for r in rows)
        latencies.append(times)
        if len(rows):
            # Self-check (the one wrk failed): a worker is busy with one request at a time.
            span = (offsets + times).max() - offsets.min()
            busy_ok &= bool(times.sum() <= 1.05 * workers[j] * span + 0.01)
    ms = np.concatenate(latencies) * 1000
    pct = {f"p{q}_ms": round(float(np.percentile(ms, q)), 2) if len(ms) else None for q in (50, 95, 99)}
    busy_share = None if scenario.rate else round(float(ms.sum()) / 1000 / (scenario.users * run_time), 3)
    if busy_share is not None and busy_share < UNANSWERED_BUSY_SHARE:
        log.warning("hey %s: the answered requests account for %.0f %% of the %d clients' time: the rest went to requests "
                    "that got no answer (timeouts, refused connections), which hey's CSV leaves out", scenario.name,
                    100 * busy_share, scenario.users)
    return {
        "scenario": scenario.name,
        "rps_target": scenario.rate,
        "concurrency": scenario.users if not scenario.rate else processes,
        "users_rate_each": round(scenario.rate / processes, 2) if scenario.rate else None,
        "arrivals": "uniform (staggered streams)" if scenario.rate else None,
        "requests": int(len(ms)),
        "achieved_rps": round(len(ms) / run_time, 1),  # hey -z: each process sends for exactly run_time
        **pct,
        "max_ms": round(float(ms.max()), 2) if len(ms) else None,
        "errors": int(errors),
        "errors_steady": int(errors),
        "exact": dict(pct),
        "latency_consistent": busy_ok,
        "answered_busy_share": busy_share,  # closed loops: below UNANSWERED_BUSY_SHARE, requests went unanswered
        "hey_processes": processes,
        "latency_resolution_ms": 0.1,
    }


def compare_responses(answers: dict[str, list[dict]]) -> dict:
    """Item ids, `because` and scores of the same requests answered by each service."""
    names = list(answers)
    if len(names) < 2:
        return {"compared": 0}
    a, b = answers[names[0]], answers[names[1]]
    same_ids, same_because, worst = True, True, 0.0
    for x, y in zip(a, b):
        same_ids &= [r["item_id"] for r in x["items"]] == [r["item_id"] for r in y["items"]]
        same_because &= [r["because"] for r in x["items"]] == [r["because"] for r in y["items"]]
        if len(x["items"]) == len(y["items"]):
            worst = max(worst, max((abs(p["score"] - q["score"]) for p, q in zip(x["items"], y["items"])), default=0.0))
    return {"services": names, "compared": min(len(a), len(b)), "identical_item_ids": same_ids,
            "identical_because": same_because, "max_abs_score_diff": worst}


def load_tests(served: dict, bodies: list[dict], args, work: Path, env: dict) -> tuple[list[dict], dict]:
    import httpx

    bodies_path = work / "bodies.json"
    bodies_path.write_text(json.dumps(bodies))
    bodies_lines = work / "bodies.jsonl"  # wrk reads one body per line
    bodies_lines.write_text("".join(json.dumps(b, separators=(",", ":")) + "\n" for b in bodies))
    (work / "locustfile.py").write_text(LOCUSTFILE)
    scenarios = [Scenario(f"c{c}", c, None) for c in args.concurrency]
    rate = Scenario(f"r{args.rate:g}", args.rate_users, args.rate) if args.rate > 0 else None
    if rate:
        scenarios.append(rate)
    cpus = os.cpu_count() or 1
    pin = {"shared": (None, None), "split": ("0", "1")}  # (server cpus, locust cpus)
    pinnings = [args.pinning]
    if args.compare_pinning and cpus >= 2:
        pinnings.append("split" if args.pinning == "shared" else "shared")
    results, servers = [], {}
    answers: dict[str, list[dict]] = {}
    probes = bodies[: args.identity_probes]
    for service in args.services:
        for pinning in pinnings:
            todo = scenarios if pinning == args.pinning else [s for s in (rate,) if s]
            if not todo:
                continue
            server_cpus, locust_cpus = pin[pinning]
            server = Server(served["bento_tag"], served["model_tag"], SERVICES[service], server_cpus,
                            work / f"serve-{service}-{pinning}.log", env)
            try:
                with httpx.Client(timeout=60) as client:
                    for body in bodies[: args.warmup_requests]:  # warm the HTTP path and the graph shapes
                        client.post(f"{server.url}/recommend", json=body).raise_for_status()
                    if service not in answers:
                        answers[service] = [client.post(f"{server.url}/recommend", json=b).json() for b in probes]
                servers[f"{service}/{pinning}"] = {
                    "ready_s": round(server.ready_s, 2), "processes": server.processes(), "rss_mb_after_warmup": server.rss_mb(),
                    "server_cpus": server_cpus or "all", "locust_cpus": locust_cpus or "all",
                }
                log.info("%s (%s pinning): ready in %.1f s", service, pinning, server.ready_s)
                for scenario, window in [(sc, w) for sc in todo for w in range(args.rate_windows if sc.rate else 1)]:
                    for generator in args.generators:
                        before = server.batch_stats()
                        if generator == "wrk":
                            row = run_wrk(scenario, server.url, bodies_lines, work, args.run_time, locust_cpus, args.arrivals)
                        elif generator == "hey":
                            row = run_hey(scenario, server.url, bodies, work, args.run_time, locust_cpus, args.hey_streams)
                        else:
                            row = run_locust(scenario, server.url, bodies_path, work, args.run_time, locust_cpus, env)
                        queries, batches = (x - y for x, y in zip(server.batch_stats(), before))
                        row = {"service": service, "pinning": pinning, "generator": generator, **row, "window": window,
                               "mean_ranker_batch": round(queries / batches, 2) if batches else None}
                        results.append(row)
                        log.info(
                            "%s %s %s (%s): %.1f req/s, p50 %s p95 %s p99 %s ms, errors %d", service, pinning, scenario.name,
                            generator, row["achieved_rps"], row["p50_ms"], row["p95_ms"], row["p99_ms"], row["errors"],
                        )
                servers[f"{service}/{pinning}"]["rss_mb_after_load"] = server.rss_mb()
            finally:
                server.stop()
    return results, {"servers": servers, "responses": compare_responses(answers)}


# ---------------------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke test: sample model only, few repetitions, seconds of load")
    parser.add_argument("--out", type=Path, help="results JSON (default benchmarks/results/serving.json; --quick: a temp file)")
    parser.add_argument("--work", type=Path, help="working folder (Bento store, bundle, locust files, server logs); default: a temp folder")
    parser.add_argument("--keep-work", action="store_true", help="keep the working folder (logs, .bento archive)")
    g = parser.add_argument_group("models")
    g.add_argument("--models", default="ml1m,sample", help="models for the in-process comparison and the int8 decision")
    g.add_argument("--serve-model", choices=["ml1m", "sample"], default="ml1m", help="the model packaged, served and load-tested")
    g.add_argument("--serve-precision", choices=["auto", "fp32", "int8"], default="auto", help="auto: int8 if quantize_int8 accepts it (as the flow does)")
    g.add_argument("--ml1m-data", type=Path, default=ROOT.parent / "shared" / "data" / "ml-1m")
    g.add_argument("--synthetic", action="store_true", help="ML-1M-sized random-weight model on synthetic histories, even with the data")
    g.add_argument("--n-items", type=int, default=3416, help="catalog size of the synthetic model")
    g.add_argument("--d-model", type=int, default=64)
    g.add_argument("--n-layers", type=int, default=2)
    g.add_argument("--n-heads", type=int, default=2)
    g.add_argument("--max-len", type=int, default=200)
    g.add_argument("--ml1m-steps", type=int, default=300, help="training steps of the ML-1M model (0 = random weights)")
    g.add_argument("--sample-steps", type=int, default=300, help="training steps of the sample model")
    g.add_argument("--sample-max-len", type=int, default=50)
    g.add_argument("--train-minutes", type=float, default=10.0, help="cap on each training")
    g = parser.add_argument_group("in-process latency")
    g.add_argument("--threads", default=",".join(str(t) for t in sorted({1, os.cpu_count() or 1})),
                   help="thread counts, comma-separated: each is one pass with torch threads = ORT intra-op threads; the "
                        "headline ratios take each engine at its fastest of them, and the same-thread ratios are beside them")
    g.add_argument("--batches", default="1,64")
    g.add_argument("--lengths", default="50,0", help="history lengths; 0 = the model's max_len")
    g.add_argument("--reps", type=int, default=100)
    g.add_argument("--warmup", type=int, default=10)
    g.add_argument("--block", type=int, default=10, help="in-process calls per engine in a row (plus one uncounted call first)")
    g = parser.add_argument_group("load")
    g.add_argument("--services", default="batched,unbatched", help=f"comma-separated, of {', '.join(SERVICES)}")
    g.add_argument("--concurrency", default="1,8,32,64", help="closed-loop locust users, no think time")
    g.add_argument("--rate", type=float, default=200.0, help="target requests/s of the constant-rate scenario (0: none)")
    g.add_argument("--rate-users", type=int, default=50, help="users sharing the target rate")
    g.add_argument("--run-time", type=int, default=30, help="seconds per scenario")
    g.add_argument("--rate-windows", type=int, default=3, help="the constant-rate scenario runs this many windows of --run-time "
                   "back to back; its acceptance takes the median window's p99 (one window's p99 moved by 1.4x between runs on one machine)")
    g.add_argument("--generators", default="locust,hey",
                   help="load generators, comma-separated: locust; hey (Go, Debian package hey: every request in its CSV, "
                        "percentiles computed here); wrk (Debian package wrk; experimental: its latencies failed the self-check "
                        "here, see latency_consistent)")
    g.add_argument("--hey-streams", type=int, default=16,
                   help="hey: processes (each its own request body); at the target rate each sends rate/streams req/s")
    g.add_argument("--arrivals", choices=["poisson", "uniform"], default="poisson",
                   help="wrk's arrival times in the target-rate scenario (locust's users each pace themselves)")
    g.add_argument("--pinning", choices=["shared", "split"], default="shared", help="split: server on CPU 0, locust on CPU 1")
    g.add_argument("--compare-pinning", action=argparse.BooleanOptionalAction, default=True,
                   help="also run the target-rate scenario under the other pinning")
    g.add_argument("--warmup-requests", type=int, default=100)
    g.add_argument("--identity-probes", type=int, default=50, help="requests whose answers must agree between the services")
    g.add_argument("--skip-load", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.serve_model = "sample", "sample"
        args.sample_steps, args.reps, args.warmup = 24, 5, 2
        args.concurrency, args.rate, args.rate_users, args.run_time = "1,8", 50.0, 10, 3
        args.compare_pinning, args.warmup_requests, args.identity_probes = False, 10, 10
    args.models = [m for m in args.models.split(",") if m]
    if args.serve_model not in args.models:
        args.models.append(args.serve_model)
    args.batches = [int(x) for x in args.batches.split(",")]
    args.threads = sorted({int(x) for x in str(args.threads).split(",") if x})
    if not args.threads or min(args.threads) < 1:
        parser.error("--threads: one or more thread counts of at least 1, comma-separated, e.g. 1,2")
    args.lengths = [int(x) for x in args.lengths.split(",")]
    args.concurrency = [int(x) for x in args.concurrency.split(",") if x]
    args.services = [s for s in args.services.split(",") if s]
    args.generators = [g for g in args.generators.split(",") if g]
    if set(args.generators) - set(GENERATORS):
        parser.error(f"--generators: unknown {sorted(set(args.generators) - set(GENERATORS))}; choose from {', '.join(GENERATORS)}")
    locust = Path(sys.executable).parent / "locust"
    if "locust" in args.generators and not args.skip_load and not locust.exists():
        parser.error(f"--generators locust: {locust} is missing; install the benchmark extra with make bench-serving or "
                     f"{Path(sys.executable).parent / 'pip'} install -c constraints.txt -e '.[bench]', or leave locust out: "
                     f"--generators {','.join(g for g in args.generators if g != 'locust') or 'hey'}")
    for name in ("wrk", "hey"):
        if name in args.generators and not shutil.which(name) and not args.skip_load:
            parser.error(f"--generators {name}: {name} is not on PATH; install it with apt-get install {name} "
                         f"(Debian/Ubuntu), or leave it out: --generators {','.join(g for g in args.generators if g != name) or 'locust'}")
    unknown = sorted(set(args.services) - set(SERVICES))
    if unknown:
        parser.error(f"--services: unknown {unknown}; choose from {sorted(SERVICES)}")
    if args.out is None:
        args.out = Path(tempfile.gettempdir()) / "behaviorflow-serving-quick.json" if args.quick else ROOT / "benchmarks" / "results" / "serving.json"
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    started = time.perf_counter()
    work = args.work or Path(tempfile.mkdtemp(prefix="bf-serving-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    # Our own Bento store: the benchmark's model and Bento never become anyone's `:latest`. The state
    # folder (embedding cache) stays the project's, so ML-1M text embeddings are reused.
    os.environ.setdefault("BEHAVIORFLOW_HOME", str(ROOT / ".behaviorflow"))
    os.environ["BENTOML_HOME"] = str(work / "bentoml")
    from components import settings

    settings.apply_environment()
    load_at_start = os.getloadavg()
    if load_at_start[0] > 0.5:
        log.warning("load average %.2f at start: something else is running, the numbers will be noisy", load_at_start[0])

    import onnxruntime as ort
    import torch

    from components.export import ExportConfig, check_parity, export_onnx, quantize_int8

    torch.set_num_threads(max(args.threads))
    commit, dirty = git_state()  # the code the run starts with
    results: dict = {
        "mode": "quick" if args.quick else "full",
        "command": " ".join([Path(sys.executable).name, "benchmarks/serving.py", *(argv if argv is not None else sys.argv[1:])]),
        "git_commit": commit,
        "git_dirty": dirty,
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpu": cpu_model(), "cpus": os.cpu_count(), "load_average_at_start": [round(x, 2) for x in load_at_start],
            "torch": torch.__version__, "onnxruntime": ort.__version__, "threads": args.threads,
            "threads_note": "in-process: one pass per thread count, torch.set_num_threads = ORT intra_op_num_threads; "
                            "onnx_vs_torch_speedup and int8_vs_fp32_speedup take each engine at its fastest thread count "
                            "(fastest_threads), *_same_threads compare them at each count; the service sets its own (BEHAVIORFLOW_ORT_THREADS)",
        },
        "models": {},
    }
    builders = {"ml1m": ml1m_model, "sample": sample_model}
    served_files = {}
    for name in args.models:
        log.info("model %s: building", name)
        mut = builders[name](args)
        entry: dict = {"description": mut.description, "config": asdict(mut.model.cfg), "training": mut.training}
        fp32 = export_onnx(mut.model, work / f"{name}.onnx")
        parity = check_parity(mut.model, fp32, mut.test_inputs, ExportConfig(), raise_on_failure=False)
        entry["parity"] = {k: v for k, v in parity.to_dict().items() if k != "batches"}
        paths = {"fp32": fp32}
        int8 = work / f"{name}.int8.onnx"
        if mut.test_targets is not None:
            q = quantize_int8(fp32, int8, mut.test_inputs, mut.test_targets, mut.model.cfg.max_len)
            entry["int8"] = q.to_dict()
        else:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])  # speed only (as quantize_int8)
            entry["int8"] = {"accepted": None, "reason": "random weights, no real targets to judge quality on",
                             "bytes_fp32": fp32.stat().st_size, "bytes_int8": int8.stat().st_size}
        paths["int8"] = int8
        rows = inprocess(mut, paths, args)
        entry["latency"] = rows
        entry["onnx_vs_torch_speedup"] = speedups(rows, "torch", "onnx_fp32")
        entry["int8_vs_fp32_speedup"] = speedups(rows, "onnx_fp32", "onnx_int8")
        entry["onnx_vs_torch_speedup_same_threads"] = {f"threads{t}": speedups(rows, "torch", "onnx_fp32", t) for t in args.threads}
        entry["int8_vs_fp32_speedup_same_threads"] = {f"threads{t}": speedups(rows, "onnx_fp32", "onnx_int8", t) for t in args.threads}
        entry["fastest_threads"] = fastest_threads(rows)
        results["models"][name] = entry
        if name == args.serve_model:
            with torch.no_grad():
                item_vectors = mut.model.item_table().numpy()
            accepted = bool(entry["int8"].get("accepted"))
            precision = args.serve_precision if args.serve_precision != "auto" else ("int8" if accepted else "fp32")
            served_files = {"mut": mut, "onnx": paths[precision], "vectors": item_vectors, "precision": precision,
                            "quantization": entry["int8"]["reason"]}

    # Headline numbers: the served model at the longest history measured, normally its max_len (every
    # length is in models.<name>.latency and under "all").
    head = results["models"][args.serve_model]
    longest = max(row["seq"] for row in head["latency"])
    for key in ("onnx_vs_torch_speedup", "int8_vs_fp32_speedup"):
        results[key] = {b: v.get(f"seq{longest}") for b, v in head[key].items()} | {
            "model": args.serve_model, "seq": longest, "threads": "each engine at its fastest of " + ",".join(map(str, args.threads)),
            "same_threads": {t: {b: v.get(f"seq{longest}") for b, v in per.items()} for t, per in head[f"{key}_same_threads"].items()},
            "all": {m: e[key] for m, e in results["models"].items()},
        }
    results["int8_decisions"] = {m: {"accepted": e["int8"]["accepted"], "reason": e["int8"]["reason"]} for m, e in results["models"].items()}

    if not args.skip_load:
        mut = served_files["mut"]
        log.info("packaging %s (%s) and building the Bento", mut.name, served_files["precision"])
        served = package(mut, served_files["onnx"], served_files["vectors"], served_files["precision"], served_files["quantization"], work)
        users = served.pop("bodies")
        rng = np.random.default_rng(2)
        ids = list(users)
        picked = [ids[i] for i in rng.choice(len(ids), size=min(2000, len(ids)), replace=False)]
        bodies = [{"user_id": u, "k": 10} if j % 2 else {"history": users[u], "k": 10} for j, u in enumerate(picked)]
        results["serving"] = served | {"request_mix": "half {user_id}, half {history: that user's stored history (up to max_len ids)}, k=10, exclude_seen default"}
        load, extra = load_tests(served, bodies, args, work, dict(os.environ))
        results["load"] = load
        results["serving"] |= extra
        results["serving"]["ready_s"] = {k: v["ready_s"] for k, v in extra["servers"].items()}

    results["acceptance"] = acceptance(results, args)
    results["total_wall_s"] = round(time.perf_counter() - started, 1)
    results["work_dir"] = str(work) if args.keep_work else None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str))
    print_report(results)
    print(f"\nresults: {args.out}" + (f"   work folder kept: {work}" if args.keep_work else ""))
    if not args.keep_work and args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def acceptance(r: dict, args) -> dict:
    out: dict = {}
    o = r["onnx_vs_torch_speedup"]
    for b in ("batch1", "batch64"):
        per_seq = r["models"][o["model"]]["onnx_vs_torch_speedup"].get(b, {})
        if per_seq:
            out[f"onnx_ge_{TARGET_SPEEDUP:g}x_{b}"] = min(per_seq.values()) >= TARGET_SPEEDUP
    windows: dict[str, list[dict]] = {}
    for row in r.get("load", []):
        if row["rps_target"] and row["pinning"] == args.pinning:
            windows.setdefault(f"{row['service']}_at_{row['rps_target']:g}rps_{row.get('generator', 'locust')}", []).append(row)
    for key, rows in windows.items():
        p99s = [row["p99_ms"] for row in rows]
        median = statistics.median(p99s) if None not in p99s else None
        out[key] = {
            "p99_ms": median, "p99_ms_windows": p99s, "p99_exact_ms": [row["exact"].get("p99_ms") for row in rows],
            "achieved_rps": min(row["achieved_rps"] for row in rows), "errors": sum(row["errors"] for row in rows),
            "passed": median is not None and median <= TARGET_P99_MS and all(row["errors"] == 0 for row in rows)
            and all(row["achieved_rps"] >= 0.95 * row["rps_target"] for row in rows),
            "rule": f"the median window's p99 <= {TARGET_P99_MS:g} ms, 0 errors and >= 95 % of the rate in every window",
        }
    return out


def print_report(r: dict) -> None:
    print(f"\nbehaviorflow serving benchmark ({r['mode']}), commit {r['git_commit'][:10]}{' (dirty)' if r['git_dirty'] else ''}, "
          f"{r['machine']['cpus']} CPUs, threads {r['machine']['threads']}, load at start {r['machine']['load_average_at_start'][0]}")
    for name, m in r["models"].items():
        print(f"\n[{name}] {m['description']}")
        t = m.get("training", {})
        if t.get("best_val"):
            print(f"  training: {t['steps']} steps in {t['wall_s']} s, val {t['best_val']}")
        p = m["parity"]
        print(f"  ONNX parity: {p['cases']} histories, top-K identical {p['identical_topk']}, max |Δscore| {p['max_abs_score_diff']:.2e}")
        q = m["int8"]
        verdict = {True: "ACCEPTED", False: "REJECTED", None: "not decided"}[q["accepted"]]
        print(f"  int8: {verdict} — {q['reason']}  ({q['bytes_fp32'] / 2**20:.2f} MiB → {q['bytes_int8'] / 2**20:.2f} MiB)")
        print(f"  {'threads':>7} {'batch':>5} {'seq':>4} | {'torch ms':>9} {'fp32 ms':>8} {'int8 ms':>8} | {'fp32/torch':>10} {'int8/fp32':>9}   (median per call; p95 in the JSON)")
        cells = {(x["engine"], x["batch"], x["seq"], x["threads"]): x for x in m["latency"]}
        for threads, batch, seq in sorted({(x["threads"], x["batch"], x["seq"]) for x in m["latency"]}):
            t_, f_, i_ = (cells[(e, batch, seq, threads)]["median_ms"] for e in ("torch", "onnx_fp32", "onnx_int8"))
            print(f"  {threads:>7} {batch:>5} {seq:>4} | {t_:9.3f} {f_:8.3f} {i_:8.3f} | {t_ / f_:9.2f}x {f_ / i_:8.2f}x")
        if len({x["threads"] for x in m["latency"]}) > 1:
            print(f"  each engine at its fastest thread count: fp32/torch {m['onnx_vs_torch_speedup']}, int8/fp32 {m['int8_vs_fp32_speedup']}"
                  f"  (threads {m['fastest_threads']})")
    if "serving" in r:
        s = r["serving"]
        print(f"\nserved: {s['model']} ({s['precision']}), Bento {s['bento_tag']}: .bento {s['bento_size_mib']} MiB, "
              f"build {s['bento_build_s']} s; bentoml serve → /readyz: " + ", ".join(f"{k} {v} s" for k, v in s["ready_s"].items()))
        resp = s["responses"]
        if resp.get("compared"):
            print(f"responses batched vs unbatched ({resp['compared']} requests): identical ids {resp['identical_item_ids']}, "
                  f"because {resp['identical_because']}, max |Δscore| {resp['max_abs_score_diff']:.2e}")
        print(f"\n{'service':<14} {'pinning':<7} {'load':<6} {'scenario':<8} {'users':>5} | {'req/s':>7} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} "
              f"{'p99 exact':>9} {'errors':>6} {'batch':>5}")
        for row in r["load"]:
            f = lambda v: "-" if v is None else f"{v:g}"  # noqa: E731
            print(f"{row['service']:<14} {row['pinning']:<7} {row.get('generator', 'locust'):<6} {row['scenario']:<8} {row['concurrency']:>5} | {row['achieved_rps']:7.1f} "
                  f"{f(row['p50_ms']):>7} {f(row['p95_ms']):>7} {f(row['p99_ms']):>7} {f(row['exact'].get('p99_ms')):>9} "
                  f"{row['errors']:>6} {f(row['mean_ranker_batch']):>5}")
        closed = [x for x in r["load"] if x["rps_target"] is None]
        for service, generator in dict.fromkeys((x["service"], x.get("generator", "locust")) for x in closed):
            best = max((x for x in closed if x["service"] == service and x.get("generator", "locust") == generator), key=lambda x: x["achieved_rps"])
            print(f"max throughput {service} ({generator}): {best['achieved_rps']} req/s (closed loop, {best['concurrency']} users)")
        by = {(x["service"], x["scenario"], x["pinning"], x.get("generator", "locust"), x.get("window", 0)): x for x in r["load"]}
        for (service, scenario, pinning, generator, window), x in by.items():
            other = by.get(("unbatched", scenario, pinning, generator, window))
            if service == "batched" and other and other["achieved_rps"]:
                label = f"{scenario} window {window + 1}" if x["rps_target"] else scenario
                print(f"batched/unbatched {label} ({pinning}, {generator}): throughput {x['achieved_rps'] / other['achieved_rps']:.2f}x, "
                      f"p99 {x['p99_ms']} vs {other['p99_ms']} ms")
    print("\nheadline: ONNX fp32 vs torch eager, each at its fastest thread count (" + r["onnx_vs_torch_speedup"]["model"] + f", seq {r['onnx_vs_torch_speedup']['seq']}): "
          f"batch 1 {r['onnx_vs_torch_speedup'].get('batch1')}x, batch 64 {r['onnx_vs_torch_speedup'].get('batch64')}x; "
          f"int8 vs fp32: batch 1 {r['int8_vs_fp32_speedup'].get('batch1')}x, batch 64 {r['int8_vs_fp32_speedup'].get('batch64')}x")
    print("acceptance: " + json.dumps(r["acceptance"]))


if __name__ == "__main__":
    sys.exit(main())
