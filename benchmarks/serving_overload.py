"""Does the service still accept new connections, health probes among them, while it is overloaded?

A Kubernetes probe (deploy/k8s/recommender.yaml: /livez and /readyz, 3 s timeout) opens a new connection every
time. While the service is busy, each of its processes answers the requests that reached it in turns of its event
loop, and accepts new connections between turns: uvloop (libuv since 1.45) accepts one connection per turn,
asyncio every connection waiting. With many clients, connections that uvloop has not accepted yet pile up in the
listening socket's queue, and a probe waits behind all of them.

For each event loop (BEHAVIORFLOW_EVENT_LOOP; `--loops`), served one at a time in alternating rounds (a Bento of
this checkout's serving/, a random-weight model of `--items` items, two processes), and each number of clients
(`--clients`, closed loops of hey, whose requests time out only after the whole run: none is dropped from its
counts), this measures:

- the requests: per second, p50 / p99 / max latency, also without the first 3 s (connections being opened);
- a probe the way the kubelet sends it: GET /livez on a new connection every `--probe-every` s while the load
  runs, each given up to 60 s; its latency, and how many took over 1 s and over 3 s (the manifest's timeout);
- the connections waiting to be accepted (`ss`: the listening socket's Recv-Q), sampled as often.

    .venv/bin/python benchmarks/serving_overload.py --out benchmarks/results/serving_overload.json

Needs hey (apt-get install hey) and ss (iproute2). Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from provenance import ROOT, alternating, git_state, load_average, machine, serving_benchmark, write_result  # noqa: E402

_bench = serving_benchmark()
Scenario, Server, run_hey = _bench.Scenario, _bench.Server, _bench.run_hey
STEADY_AFTER_S = 3.0  # requests sent before this (the clients' connections being opened) are left out of "steady"


def accept_queue(port: int) -> int | None:
    """Connections waiting to be accepted on the listening socket of `port` (ss's Recv-Q), or None."""
    out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True).stdout.split()
    return int(out[1]) if len(out) > 1 and out[1].isdigit() else None


def probe_while(url: str, every: float, stop: threading.Event, found: list[dict]) -> None:
    """GET /livez on a fresh connection every `every` seconds until `stop`, as the kubelet probes."""
    import httpx

    while not stop.is_set():
        started = time.perf_counter()
        try:
            status = httpx.get(f"{url}/livez", timeout=60).status_code
        except httpx.HTTPError as error:
            status = type(error).__name__
        found.append({"latency_ms": round(1000 * (time.perf_counter() - started), 1), "status": status})
        stop.wait(every)


def watch_accept_queue(port: int, every: float, stop: threading.Event, found: list[int]) -> None:
    """The listening socket's accept queue every `every` seconds until `stop`."""
    while not stop.is_set():
        queued = accept_queue(port)
        if queued is not None:
            found.append(queued)
        stop.wait(every)


def request_latencies(folder: Path, scenario: str) -> tuple[np.ndarray, np.ndarray]:
    """(latency s, offset s) of every answered request of the last hey run of `scenario` (run_hey's CSV files)."""
    times, offsets = [], []
    for path in folder.glob(f"hey-{scenario}-*.csv"):
        with path.open() as f:
            for row in csv.DictReader(f):
                times.append(float(row["response-time"]))
                offsets.append(float(row["offset"]))
    return np.array(times), np.array(offsets)


def percentiles(seconds: np.ndarray) -> dict:
    ms = seconds * 1000
    return {"requests": int(len(ms)), **({f"p{q}_ms": round(float(np.percentile(ms, q)), 1) for q in (50, 99)} if len(ms) else {}),
            "max_ms": round(float(ms.max()), 1) if len(ms) else None, "over_3s": int((ms > 3000).sum())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loops", default="asyncio,uvloop", help="event loops (BEHAVIORFLOW_EVENT_LOOP), comma-separated")
    parser.add_argument("--clients", default="64,512", help="closed-loop clients, comma-separated")
    parser.add_argument("--items", type=int, default=3416, help="catalog size of the random-weight model")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of every event loop")
    parser.add_argument("--run-time", type=int, default=15, help="seconds of load per number of clients and round")
    parser.add_argument("--probe-every", type=float, default=0.5, help="seconds between the starts of two probes")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serving_overload.json")
    args = parser.parse_args(argv)
    loops, clients = args.loops.split(","), [int(c) for c in args.clients.split(",")]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a stopped run still stops its server and deletes its Bento
    for tool in ("hey", "ss"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed: apt-get install {'hey' if tool == 'hey' else 'iproute2'}")
    work = Path(tempfile.mkdtemp(prefix="behaviorflow-serving-overload-"))
    os.environ["BENTOML_HOME"] = str(work / "bentoml")  # a store of its own: nothing of the project's is touched
    os.environ.setdefault("BEHAVIORFLOW_HOME", str(work / "home"))
    from components import settings

    settings.apply_environment()
    load_at_start, (commit, dirty) = load_average(), git_state()
    env = {**os.environ, "BEHAVIORFLOW_WORKERS": "auto", "BEHAVIORFLOW_BATCHING": "0"}
    runs: list[dict] = []
    try:
        folder = work / "model"
        _, _, packaged, bodies = _bench.random_weight_bento(args.items, folder)
        for round_, loop in alternating(tuple(loops), args.rounds):
            server = Server(packaged["bento_tag"], packaged["model_tag"], {"BEHAVIORFLOW_EVENT_LOOP": loop}, None, folder / f"serve-{loop}-{round_}.log", env)
            try:
                run_hey(Scenario("warmup", 8, None), server.url, bodies, folder, 3, None, 8)
                for n in clients:
                    stop, probes, queued = threading.Event(), [], []
                    watchers = [threading.Thread(target=probe_while, args=(server.url, args.probe_every, stop, probes)),
                                threading.Thread(target=watch_accept_queue, args=(server.port, args.probe_every, stop, queued))]
                    for watcher in watchers:
                        watcher.start()
                    try:
                        load = run_hey(Scenario(f"c{n}", n, None), server.url, bodies, folder, args.run_time, None, 16,
                                       timeout_s=args.run_time + 60)
                    finally:
                        stop.set()
                        for watcher in watchers:
                            watcher.join()
                    times, offsets = request_latencies(folder, f"c{n}")
                    waits = np.array([p["latency_ms"] for p in probes])
                    run = {
                        "loop": loop, "round": round_, "clients": n, "achieved_rps": load["achieved_rps"], "errors": load["errors"],
                        "requests_all": percentiles(times), "requests_steady": percentiles(times[offsets >= STEADY_AFTER_S]),
                        "probes": len(probes), "probe_p50_ms": round(float(np.median(waits)), 1) if len(waits) else None,
                        "probe_max_ms": round(float(waits.max()), 1) if len(waits) else None,
                        "probes_over_1s": int((waits > 1000).sum()), "probes_over_3s": int((waits > 3000).sum()),
                        "probe_failures": sum(p["status"] != 200 for p in probes),
                        "accept_queue_max": max(queued, default=None), "accept_queue_median": statistics.median(queued) if queued else None,
                        "probe_log": probes, "accept_queue_log": queued,
                    }
                    runs.append(run)
                    steady = run["requests_steady"]
                    print(f"round {round_ + 1} {loop:<7} {n:>4} clients: {run['achieved_rps']:7.1f} req/s, max {run['requests_all']['max_ms']} ms "
                          f"({run['requests_all']['over_3s']} over 3 s), steady p50 {steady.get('p50_ms')} "
                          f"p99 {steady.get('p99_ms')} max {steady['max_ms']} ms; {run['probes']} probes: p50 {run['probe_p50_ms']} ms, "
                          f"max {run['probe_max_ms']} ms, over 3 s {run['probes_over_3s']}; accept queue max {run['accept_queue_max']}", flush=True)
            finally:
                server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = {}
    for loop in loops:
        for n in clients:
            mine = [r for r in runs if r["loop"] == loop and r["clients"] == n]
            waits = [p["latency_ms"] for r in mine for p in r["probe_log"]]
            summary[f"{loop}_c{n}"] = {
                "achieved_rps_median": statistics.median(r["achieved_rps"] for r in mine),
                "steady_p99_ms_median": statistics.median(r["requests_steady"]["p99_ms"] for r in mine),
                "steady_max_ms_max": max(r["requests_steady"]["max_ms"] for r in mine),
                "all_p50_ms_median": statistics.median(r["requests_all"]["p50_ms"] for r in mine),
                "all_max_ms_max": max(r["requests_all"]["max_ms"] for r in mine),
                "requests_over_3s": sum(r["requests_all"]["over_3s"] for r in mine),
                "probes": len(waits), "probe_p50_ms": round(statistics.median(waits), 1), "probe_max_ms": max(waits),
                "probes_over_1s": sum(w > 1000 for w in waits), "probes_over_3s": sum(w > 3000 for w in waits),
                "accept_queue_max": max((r["accept_queue_max"] for r in mine if r["accept_queue_max"] is not None), default=None),
            }
    report = {"git_commit": commit, "git_dirty": dirty, "command": "python benchmarks/serving_overload.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "question": "latency of a fresh-connection /livez (as the kubelet probes) while many clients keep the service busy, by event loop",
              "items": args.items, "rounds": args.rounds, "run_time_s": args.run_time, "summary": summary, "runs": runs,
              "machine": machine(load_at_start)}
    write_result(report, args.out)
    for name, row in summary.items():
        print(f"{name:<14} {row['achieved_rps_median']:7.1f} req/s  p50 {row['all_p50_ms_median']} ms, max {row['all_max_ms_max']} ms, "
              f"{row['requests_over_3s']} requests over 3 s; steady p99 {row['steady_p99_ms_median']} ms  "
              f"probes {row['probes']}: p50 {row['probe_p50_ms']} ms, max {row['probe_max_ms']} ms, over 1 s {row['probes_over_1s']}, "
              f"over 3 s {row['probes_over_3s']}; accept queue up to {row['accept_queue_max']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
