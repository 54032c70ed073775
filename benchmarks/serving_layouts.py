"""Which service layout costs less per request, by catalog size: each request ranked alone, or batched in a Ranker.

BEHAVIORFLOW_BATCHING picks the layout (serving/layout.py): `0`, the HTTP front ranks each request itself, one
ONNX call per history (BEHAVIORFLOW_WORKERS processes, 'auto': one per usable CPU); `1`, the front hands each
history to a Ranker service that batches them (adaptive batching, one front process). A batch pays once for
what a single-history call pays per history: reading the item table to score every item. Small catalogs
make that cheap and leave the hop between the two services as the cost; large ones make it the bulk of a
request.

For each catalog size (`--catalogs`; random weights, d_model 64, 2 layers, max_len 200: speed does not depend
on the weights) this builds a bundle and a Bento of this checkout's serving/ and measures:

1. in-process, the ONNX graph's time per history at batch 1 and 64 (history 50; 1 and 2 ONNX Runtime threads);
2. served, one layout at a time in alternating rounds (as benchmarks/serving_ab.py; hey): 8 clients in a
   closed loop and 200 requests/s evenly spaced, with the CPU time each of the server's processes spent per
   request answered (user + system, /proc), split into the front (the Recommender processes), the Ranker and
   the rest (BentoML's arbiter). CPU per request is what a machine with more cores divides among requests:
   the layout that needs less of it answers more on any number of cores, as long as no single process is
   the limit (the batched layout has one front process: it can answer at most 1 / its CPU per request).

    .venv/bin/python benchmarks/serving_layouts.py --out benchmarks/results/serving_layouts.json

Needs hey (apt-get install hey). Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))

from provenance import ROOT, alternating, git_state, load_average, machine, serving_benchmark, write_result  # noqa: E402

_bench = serving_benchmark()
Scenario, Server, run_hey = _bench.Scenario, _bench.Server, _bench.run_hey
SCENARIOS = [Scenario("c8", 8, None), Scenario("r200", 16, 200.0)]
LAYOUTS = {  # --layouts: the service environment of each
    "unbatched": {"BEHAVIORFLOW_BATCHING": "0"},
    "batched": {"BEHAVIORFLOW_BATCHING": "1"},
    "batched_nospin": {"BEHAVIORFLOW_BATCHING": "1", "BEHAVIORFLOW_ORT_SPIN": "0"},  # the Ranker's ORT threads sleep when idle
}
RANKER_SUFFIX = "_ranker"  # serving/contract.py: RANKER_SERVICE_NAME is the front's name + this


def role(process) -> str:
    """'front', 'ranker' or 'other' (BentoML's arbiter, the supervisor), from a server process's command line."""
    try:
        command = process.cmdline()
    except Exception:  # ended meanwhile
        return "other"
    if "--service-name" not in command:
        return "other"
    return "ranker" if command[command.index("--service-name") + 1].endswith(RANKER_SUFFIX) else "front"


def cpu_by_role(server) -> dict[str, float]:
    """CPU seconds (user + system) of the server's processes so far, by role."""
    totals = {"front": 0.0, "ranker": 0.0, "other": 0.0}
    for process, seconds in server.cpu_seconds_by_process():
        totals[role(process)] += seconds
    return totals


def inprocess(mut, onnx_path: Path, reps: int) -> list[dict]:
    """The graph's time per history at batch 1 and 64, history 50, with 1 and 2 ONNX Runtime threads (median of
    `reps` calls; benchmarks/serving.py's in-process timing, without torch)."""
    args = SimpleNamespace(threads=[1, 2], batches=[1, 64], lengths=[50], warmup=3, reps=reps, block=10)
    median = {(r["threads"], r["batch"]): r["median_ms"] for r in _bench.inprocess(mut, {"fp32": onnx_path}, args, with_torch=False)}
    rows = []
    for threads in args.threads:
        row = {"threads": threads, "batch1_ms_per_history": round(median[threads, 1], 3), "batch64_ms_per_history": round(median[threads, 64] / 64, 3)}
        row["batch64_gain"] = round(row["batch1_ms_per_history"] / row["batch64_ms_per_history"], 2)
        rows.append(row)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--catalogs", default="3416,100000,300000", help="catalog sizes (items), comma-separated")
    parser.add_argument("--layouts", default="unbatched,batched", help=f"layouts, the first one the reference for the ratios (of {', '.join(LAYOUTS)})")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of both layouts per catalog")
    parser.add_argument("--run-time", type=int, default=6, help="seconds of load per scenario and round")
    parser.add_argument("--reps", type=int, default=50, help="in-process calls per batch size and thread count")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serving_layouts.json")
    args = parser.parse_args(argv)
    layouts = args.layouts.split(",")
    if len(layouts) < 2 or set(layouts) - set(LAYOUTS):
        parser.error(f"--layouts: two or more of {', '.join(LAYOUTS)}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a stopped run still stops its server and deletes its Bentos
    if shutil.which("hey") is None:
        raise SystemExit("hey is not installed: apt-get install hey")
    work = Path(tempfile.mkdtemp(prefix="behaviorflow-serving-layouts-"))
    os.environ["BENTOML_HOME"] = str(work / "bentoml")  # a store of its own: nothing of the project's is touched
    os.environ.setdefault("BEHAVIORFLOW_HOME", str(work / "home"))
    from components import settings

    settings.apply_environment()
    load_at_start, (commit, dirty) = load_average(), git_state()
    env = {**os.environ, "BEHAVIORFLOW_WORKERS": "auto"}
    catalogs = []
    try:
        for n_items in (int(n) for n in args.catalogs.split(",")):
            folder = work / f"catalog-{n_items}"
            mut, onnx_path, packaged, bodies = _bench.random_weight_bento(n_items, folder)
            ranked = inprocess(mut, onnx_path, args.reps)
            print(f"{n_items} items: ONNX per history, 1 / 2 threads: batch 1 {ranked[0]['batch1_ms_per_history']} / "
                  f"{ranked[1]['batch1_ms_per_history']} ms, batch 64 {ranked[0]['batch64_ms_per_history']} / {ranked[1]['batch64_ms_per_history']} ms", flush=True)
            rows = {s.name: {layout: [] for layout in layouts} for s in SCENARIOS}
            ready = {layout: [] for layout in layouts}
            rss = {layout: [] for layout in layouts}  # MB, all the server's processes, after the warm-up
            for round_, layout in alternating(tuple(layouts), args.rounds):
                server = Server(packaged["bento_tag"], packaged["model_tag"], LAYOUTS[layout], None, folder / f"serve-{layout}-{round_}.log", env)
                try:
                    ready[layout].append(round(server.ready_s, 2))
                    run_hey(Scenario("warmup", 8, None), server.url, bodies, folder, 3, None, 8)
                    rss[layout].append(server.rss_mb())
                    for scenario in SCENARIOS:
                        before = cpu_by_role(server)
                        result = run_hey(scenario, server.url, bodies, folder, args.run_time, None, 16)
                        after = cpu_by_role(server)
                        answered = max(result["requests"] - result["errors"], 1)
                        result["cpu_ms_per_request"] = {r: round(1000 * (after[r] - before[r]) / answered, 3) for r in after}
                        result["cpu_ms_per_request"]["total"] = round(sum(result["cpu_ms_per_request"].values()), 3)
                        rows[scenario.name][layout].append(result)
                        cpu = result["cpu_ms_per_request"]
                        print(f"  round {round_ + 1} {layout:<9} {scenario.name:<4} {result['achieved_rps']:7.1f} req/s  p50 {result['p50_ms']:7.2f}  "
                              f"p99 {result['p99_ms']:7.2f} ms  CPU/request: front {cpu['front']:.2f}, ranker {cpu['ranker']:.2f}, "
                              f"total {cpu['total']:.2f} ms  errors {result['errors']}", flush=True)
                finally:
                    server.stop()
            summary = {}
            for name, by_layout in rows.items():
                summary[name] = {layout: {
                    "achieved_rps": statistics.median(r["achieved_rps"] for r in runs),
                    "p50_ms": statistics.median(r["p50_ms"] for r in runs),
                    "p99_ms": statistics.median(r["p99_ms"] for r in runs),
                    "errors": sum(r["errors"] for r in runs),
                    "cpu_ms_per_request": {k: statistics.median(r["cpu_ms_per_request"][k] for r in runs) for k in ("front", "ranker", "other", "total")},
                } for layout, runs in by_layout.items()}
                reference = layouts[0]
                u = summary[name][reference]["cpu_ms_per_request"]["total"]
                for other in layouts[1:]:
                    b = summary[name][other]["cpu_ms_per_request"]["total"]
                    pairs = list(zip(by_layout[reference], by_layout[other]))
                    cheaper = f"{sum(bb['cpu_ms_per_request']['total'] < uu['cpu_ms_per_request']['total'] for uu, bb in pairs)} of {len(pairs)}"
                    summary[name][f"cpu_per_request_{other}_over_{reference}"] = round(b / u, 2)
                    summary[name][f"rounds_{other}_cheaper"] = cheaper
                    print(f"{n_items} items {name:<4}: CPU per request {reference} {u:.2f} ms, {other} {b:.2f} ms "
                          f"({round(b / u, 2)}x; {other} cheaper in {cheaper} rounds)", flush=True)
            catalogs.append({"n_items": n_items, "model": mut.description, "inprocess": ranked, "ready_s": ready, "rss_mb": rss,
                             "bento_size_mib": packaged["bento_size_mib"], "summary": summary, "runs": rows})
            shutil.rmtree(folder, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {"git_commit": commit, "git_dirty": dirty, "command": "python benchmarks/serving_layouts.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "question": "CPU per request of the unbatched and the batched layout, by catalog size (random-weight models, history 50)",
              "rounds": args.rounds, "run_time_s": args.run_time, "catalogs": catalogs, "machine": machine(load_at_start)}
    write_result(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
