"""Does the served model answer faster on uvloop and httptools than on asyncio and h11?

uvicorn, under `bentoml serve`, runs its event loop on uvloop and parses HTTP with httptools when the two are
installed, else on asyncio and h11. (Since then the service runs on asyncio unless BEHAVIORFLOW_EVENT_LOOP=uvloop,
which the first server here sets: under load uvloop left new connections unaccepted, serving_overload.py.) A py-spy profile of the unbatched service under one client put nearly all
of a request's time in the HTTP path (the server loop, BentoML's middleware, JSON), not in ONNX Runtime, so
the server's own stack is what a request waits for.

Side by side in one run: two `behaviorflow serve` processes of the same registered model, on two ports; the
second one's Python cannot import uvloop or httptools (a folder on its PYTHONPATH whose uvloop and httptools
raise ImportError, so uvicorn falls back to asyncio and h11). Which libraries each server's workers loaded is
read from /proc and recorded, so the result says what was compared. Then hey in alternating rounds (the order
swapped every round), each scenario against both: closed loops of 1 and 8 clients, and 200 requests/s evenly
spaced (the issue's p99 target). Medians over the rounds; ratios stack / plain.

    make run                                    # a registered model (the sample) in the local registry
    .venv/bin/python benchmarks/serving_http_stack.py --out benchmarks/results/serving_uvloop_ab.json

Needs hey (apt-get install hey) and uvloop and httptools installed (pyproject.toml has them).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from provenance import ROOT, alternating, git_state, load_average, machine, serving_benchmark, write_result  # noqa: E402

_bench = serving_benchmark()
Scenario, run_hey, wait_ready, stop_group, popular_bodies = _bench.Scenario, _bench.run_hey, _bench.wait_ready, _bench.stop_group, _bench.popular_bodies

WAYS = ("stack", "plain")  # uvloop + httptools, asyncio + h11
BLOCKED = ("uvloop", "httptools")


def start(alias: str, port: int, env: dict, log: Path) -> subprocess.Popen:
    command = [str(ROOT / ".venv" / "bin" / "behaviorflow"), "serve", "--alias", alias, "--port", str(port)]
    out = log.open("w")
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def loaded_libraries(proc: subprocess.Popen) -> dict[str, list[str]]:
    """For each worker process under `proc` (bentoml's service workers): which of uvloop and httptools it has
    mapped into memory, from /proc/PID/maps."""
    import psutil

    out = {}
    for child in psutil.Process(proc.pid).children(recursive=True):
        try:
            if "_bentoml_impl.worker.service" not in " ".join(child.cmdline()):
                continue
            maps = Path(f"/proc/{child.pid}/maps").read_text()
        except (psutil.Error, OSError):
            continue
        out[str(child.pid)] = [name for name in BLOCKED if re.search(rf"/{name}/", maps)]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alias", default="champion", help="registered model alias to serve (default: champion; `make run` makes one)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--run-time", type=int, default=8, help="seconds of load per scenario and round")
    parser.add_argument("--workers", default="auto", help="BEHAVIORFLOW_WORKERS for both servers (default: auto, as shipped)")
    parser.add_argument("--ports", default="3100,3101")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serving_uvloop_ab.json")
    args = parser.parse_args(argv)
    if shutil.which("hey") is None:
        raise SystemExit("hey is not installed: apt-get install hey")
    load_at_start, (commit, dirty) = load_average(), git_state()
    work = Path(tempfile.mkdtemp(prefix="behaviorflow-http-stack-"))
    block = work / "block"
    for name in BLOCKED:
        (block / name).mkdir(parents=True)
        (block / name / "__init__.py").write_text(f"raise ImportError('{name} is blocked for the A/B')\n")
    ports = dict(zip(WAYS, (int(p) for p in args.ports.split(","))))
    base = {**os.environ, "BEHAVIORFLOW_WORKERS": args.workers}
    # The service runs on asyncio unless told otherwise (serving/layout.py, event_loop_from; serving_overload.py).
    envs = {"stack": {**base, "BEHAVIORFLOW_EVENT_LOOP": "uvloop"}, "plain": {**base, "PYTHONPATH": str(block) + os.pathsep + base.get("PYTHONPATH", "")}}
    procs, urls = {}, {}
    try:
        for way in WAYS:
            urls[way] = f"http://127.0.0.1:{ports[way]}"
            procs[way] = start(args.alias, ports[way], envs[way], work / f"serve-{way}.log")
        started = time.monotonic()
        for way in WAYS:
            wait_ready(urls[way], procs[way], work / f"serve-{way}.log", started)
        bodies = popular_bodies(urls["stack"])
        for way in WAYS:  # warm-up (8 clients, so that every worker answers)
            run_hey(Scenario("warmup", 8, None), urls[way], bodies, work, 3, None, 8)
        # After the warm-up: /readyz answers once one worker is up, and the others may still have been starting.
        libraries = {way: loaded_libraries(procs[way]) for way in WAYS}
        if not all(set(v) == set(BLOCKED) for v in libraries["stack"].values()) or any(libraries["plain"].values()):
            raise SystemExit(f"the servers do not differ as intended (worker pid -> uvloop/httptools loaded): {libraries}")
        scenarios = [Scenario("c1", 1, None), Scenario("c8", 8, None), Scenario("r200", 16, 200.0)]
        rows: dict[str, dict[str, list[dict]]] = {s.name: {w: [] for w in WAYS} for s in scenarios}
        for round_, way in alternating(WAYS, args.rounds):
            for scenario in scenarios:
                result = run_hey(scenario, urls[way], bodies, work, args.run_time, None, 16)
                rows[scenario.name][way].append(result)
                print(f"round {round_ + 1} {way:<5} {scenario.name:<5} {result['achieved_rps']:7.1f} req/s  p50 {result['p50_ms']:6.2f}  "
                      f"p99 {result['p99_ms']:6.2f} ms  errors {result['errors']}", flush=True)
    finally:
        for proc in procs.values():
            stop_group(proc)
    summary = {}
    for name, by_way in rows.items():
        med = {way: {key: statistics.median(r[key] for r in runs) for key in ("achieved_rps", "p50_ms", "p95_ms", "p99_ms")} for way, runs in by_way.items()}
        summary[name] = {"median": med, "errors": {way: sum(r["errors"] for r in runs) for way, runs in by_way.items()},
                         "requests_ratio": round(med["stack"]["achieved_rps"] / med["plain"]["achieved_rps"], 2),
                         "p99_ratio_plain_over_stack": round(med["plain"]["p99_ms"] / med["stack"]["p99_ms"], 2)}
    report = {"git_commit": commit, "git_dirty": dirty, "command": "python benchmarks/serving_http_stack.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "question": "the same served model on uvloop + httptools (stack) against asyncio + h11 (plain), side by side",
              "workers_loaded": libraries, "workers": args.workers, "rounds": args.rounds, "run_time_s": args.run_time,
              "summary": summary, "runs": rows, "machine": machine(load_at_start)}
    write_result(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
