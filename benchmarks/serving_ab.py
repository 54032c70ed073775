"""Does a change to serving/ make the served model answer faster? This checkout's serving/ against another commit's.

Both are packaged as Bentos of the same registered model (components.packaging.build_bento, `source`: the
base commit's serving/ from `git archive`), so what differs is the service code and nothing else. They are
served one at a time, never side by side: each round starts one server, warms it up, runs every scenario
against it with hey and stops it, then does the same for the other, the order swapped every round. (In
three side-by-side runs of two servers whose code turned out to be identical, on this 2-core machine, the
second one answered one client 1.11, 1.36 and 1.39 times as fast as the first: the two places of a
side-by-side run are not the same.) `--same` serves this checkout in both places: the spread of that A/A
run is what a difference has to beat. With `--same`, `--base-env NAME=VALUE` sets a variable for the base
server only: a setting's cost, on the same code (e.g. BEHAVIORFLOW_ACCESS_LOG=1 against 0).

Scenarios (benchmarks/serving.py's run_hey): closed loops of 1 and 8 clients, and 200 requests/s evenly
spaced (the issue's p99 target). Medians over the rounds, ratios work / base, and in how many rounds the
work tree was ahead. Besides latency and requests/s, each scenario records the CPU time the server's
processes spent per request answered (user + system, from /proc): what a change saves in work, without the
queueing that turns it into latency. All of them move with the machine's speed from one minute to the next
(an A/A run here: one client 331-720 requests/s, 1.7-2.7 ms of server CPU per request, on the same code).

    make run                                    # a registered model (the sample) in the local registry
    .venv/bin/python benchmarks/serving_ab.py --base HEAD --out benchmarks/results/serving_inline_ab.json

Needs hey (apt-get install hey).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from provenance import ROOT, alternating, git_state, load_average, machine, serving_benchmark, write_result  # noqa: E402

_bench = serving_benchmark()
Scenario, Server, run_hey, popular_bodies = _bench.Scenario, _bench.Server, _bench.run_hey, _bench.popular_bodies
WAYS = ("work", "base")
SCENARIOS = [Scenario("c1", 1, None), Scenario("c8", 8, None), Scenario("r200", 16, 200.0)]


def serving_at(ref: str, out: Path) -> Path:
    """serving/ as of commit `ref`, extracted under `out`."""
    out.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", ref, "serving"], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out / "serving"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="HEAD", help="git commit whose serving/ is the baseline (default: HEAD, i.e. against uncommitted changes)")
    parser.add_argument("--same", action="store_true", help="A/A: serve this checkout in both places (the harness's own spread)")
    parser.add_argument("--base-env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for the base server only (repeatable; with --same: a setting's cost on the same code)")
    parser.add_argument("--model", default="behaviorflow-recommender", help="registered model name (default: behaviorflow-recommender)")
    parser.add_argument("--alias", default="champion", help="its alias to serve (default: champion; `make run` makes one)")
    parser.add_argument("--rounds", type=int, default=8, help="rounds of both (default: 8; short rounds follow the machine's drift)")
    parser.add_argument("--run-time", type=int, default=6, help="seconds of load per scenario and round")
    parser.add_argument("--workers", default="auto", help="BEHAVIORFLOW_WORKERS for both (default: auto, as shipped)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serving_ab.json")
    args = parser.parse_args(argv)
    if any("=" not in item for item in args.base_env):
        parser.error(f"--base-env takes NAME=VALUE, got {[i for i in args.base_env if '=' not in i]}")
    base_env = dict(item.split("=", 1) for item in args.base_env)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a stopped run still stops its server and deletes its Bentos
    if shutil.which("hey") is None:
        raise SystemExit("hey is not installed: apt-get install hey")
    os.environ.setdefault("BEHAVIORFLOW_HOME", str(ROOT / ".behaviorflow"))
    from components import settings
    from components.packaging import build_bento, pull_bento

    settings.apply_environment()
    load_at_start, (commit, dirty) = load_average(), git_state()
    base_commit = subprocess.run(["git", "rev-parse", args.base], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    work = Path(tempfile.mkdtemp(prefix="behaviorflow-serving-ab-"))
    pulled = pull_bento(f"{args.model}@{args.alias}", "serving_ab")
    import bentoml

    stamp = time.strftime("%Y%m%d%H%M%S")
    sources = {"work": ROOT / "serving", "base": ROOT / "serving" if args.same else serving_at(base_commit, work / "base")}
    bentos = {way: build_bento(pulled.bento_model_tag, version=f"ab-{way}-{stamp}", source=sources[way]) for way in WAYS}
    for way, tag in bentos.items():  # each Bento holds the code it was meant to
        packaged = Path(bentoml.bentos.get(tag).path) / "src" / "serving"
        differ = [f.name for f in sources[way].glob("*.py") if (packaged / f.name).read_bytes() != f.read_bytes()]
        if differ:
            raise SystemExit(f"Bento {tag} ({way}) does not hold {sources[way]}: {differ} differ")
    env = {**os.environ, "BEHAVIORFLOW_WORKERS": args.workers}
    rows: dict[str, dict[str, list[dict]]] = {s.name: {w: [] for w in WAYS} for s in SCENARIOS}
    ready_s: dict[str, list[float]] = {w: [] for w in WAYS}
    try:
        bodies = None
        for round_, way in alternating(WAYS, args.rounds):
            server = Server(bentos[way], pulled.bento_model_tag, base_env if way == "base" else {}, None, work / f"serve-{way}-{round_}.log", env)
            try:
                ready_s[way].append(round(server.ready_s, 2))
                bodies = bodies or popular_bodies(server.url)
                run_hey(Scenario("warmup", 8, None), server.url, bodies, work, 3, None, 8)  # every worker answers once
                for scenario in SCENARIOS:
                    cpu_before = server.cpu_seconds()
                    result = run_hey(scenario, server.url, bodies, work, args.run_time, None, 16)
                    result["server_cpu_ms_per_request"] = round(1000 * (server.cpu_seconds() - cpu_before) / max(result["requests"], 1), 3)
                    rows[scenario.name][way].append(result)
                    print(f"round {round_ + 1} {way:<4} {scenario.name:<4} {result['achieved_rps']:7.1f} req/s  p50 {result['p50_ms']:6.2f}  "
                          f"p99 {result['p99_ms']:6.2f} ms  server CPU {result['server_cpu_ms_per_request']:5.2f} ms/request  errors {result['errors']}", flush=True)
            finally:
                server.stop()
    finally:
        for tag in bentos.values():
            bentoml.bentos.delete(tag)
        shutil.rmtree(work / "base", ignore_errors=True)
    summary = {}
    for name, by_way in rows.items():
        med = {way: {key: statistics.median(r[key] for r in runs) for key in ("achieved_rps", "p50_ms", "p95_ms", "p99_ms", "server_cpu_ms_per_request")} for way, runs in by_way.items()}
        pairs = list(zip(by_way["work"], by_way["base"]))  # round by round
        ahead = sum(w["p99_ms"] < b["p99_ms"] for w, b in pairs) if name == "r200" else sum(w["achieved_rps"] > b["achieved_rps"] for w, b in pairs)
        summary[name] = {"median": med, "errors": {way: sum(r["errors"] for r in runs) for way, runs in by_way.items()},
                         "requests_ratio_work_over_base": round(med["work"]["achieved_rps"] / med["base"]["achieved_rps"], 2),
                         "p99_ratio_base_over_work": round(med["base"]["p99_ms"] / med["work"]["p99_ms"], 2),
                         "cpu_per_request_ratio_base_over_work": round(med["base"]["server_cpu_ms_per_request"] / med["work"]["server_cpu_ms_per_request"], 2),
                         "cpu_ratio_base_over_work_by_round": [round(b["server_cpu_ms_per_request"] / w["server_cpu_ms_per_request"], 2) for w, b in pairs],
                         "rounds_work_cheaper": f"{sum(w['server_cpu_ms_per_request'] < b['server_cpu_ms_per_request'] for w, b in pairs)} of {len(pairs)} (less server CPU per request)",
                         "rounds_work_ahead": f"{ahead} of {len(pairs)} ({'lower p99' if name == 'r200' else 'more requests'})"}
        print(f"{name:<5} work {med['work']['achieved_rps']:7.1f} req/s p99 {med['work']['p99_ms']:6.2f} ms CPU {med['work']['server_cpu_ms_per_request']:5.2f} ms/req | "
              f"base {med['base']['achieved_rps']:7.1f} req/s p99 {med['base']['p99_ms']:6.2f} ms CPU {med['base']['server_cpu_ms_per_request']:5.2f} ms/req | "
              f"{summary[name]['rounds_work_ahead']}; {summary[name]['rounds_work_cheaper']}", flush=True)
    # What was compared: serving/ of the work tree (committed or not) against the base commit's.
    diff = subprocess.run(["git", "diff", base_commit, "--", "serving"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    report = {"git_commit": commit, "git_dirty": dirty, "base_commit": base_commit, "same": args.same, "base_env": base_env,
              "serving_diff": "(none: A/A)" if args.same else diff or "(none)",
              "command": "python benchmarks/serving_ab.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "question": ("this checkout's serving/ in both places" + (f", the base server with {base_env}" if base_env else " (A/A)")) if args.same
              else f"this checkout's serving/ (work) against {base_commit[:7]}'s (base)" + (f", the base server with {base_env}" if base_env else ""),
              "model": pulled.bento_model_tag, "workers": args.workers, "rounds": args.rounds, "run_time_s": args.run_time,
              "ready_s": ready_s, "summary": summary, "runs": rows, "machine": machine(load_at_start)}
    write_result(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
