"""How long does a successful `behaviorflow retrain` on the bundled sample take from printing its summary to the
process's exit? --old (a commit, checked out as a temporary git worktree) and this checkout side by side, run by the
same virtual environment in alternating rounds, each run in a fresh state folder. Each run records when its summary's
last line ("browse runs") was read, when its last line of any kind was read, when `main()` had returned and the
atexit handlers had run (a line that `--breakdown` adds through a tiny wrapper: `sys.exit(main())` with one atexit
handler registered first, so that it runs last), and when the process ended.

    .venv/bin/python benchmarks/exit_latency.py --old 23c3e9d --rounds 3      # ~6 min on 2 cores (1 epoch each)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from provenance import ROOT, alternating, git_state, load_average, machine, write_result

SAMPLE_SETS = ["--set", "train.max_epochs=1", "--set", "evaluate.id_only_baseline=false"]
STATE_ENV = ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "PREFECT_HOME", "BENTOML_HOME", "PREFECT_LOGGING_LEVEL", "BEHAVIORFLOW_HOME")
# The CLI as its console script runs it, and one atexit handler registered before anything else (so it runs after every
# other one) that prints when the atexit handlers were done: what is left after it is the interpreter's own teardown.
WRAPPER = ("import atexit, sys, time\n"
           "atexit.register(lambda: print(f'@atexit-done {time.time():.3f}', flush=True))\n"
           "from flows.cli import main\n"
           "rc = main()\n"
           "print(f'@main-returned {time.time():.3f}', flush=True)\n"
           "sys.exit(rc)\n")


def run_once(checkout: Path, sets: list[str], breakdown: bool) -> dict:
    home = Path(tempfile.mkdtemp(prefix="exit-latency-"))
    env = {k: v for k, v in os.environ.items() if k not in STATE_ENV} | {"BEHAVIORFLOW_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-c", WRAPPER] if breakdown else [sys.executable, "-m", "flows.cli"]
    started = time.time()
    proc = subprocess.Popen([*command, "retrain", *sets], cwd=checkout, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    seen: dict[str, float] = {}
    lines: list[str] = []

    def read() -> None:  # stdout may stay open after the exit (a child that inherited it): the exit is proc.wait()'s
        for line in proc.stdout:
            now = time.time()
            lines.append(line.rstrip())
            if line.startswith("@"):
                mark, _, at = line.strip().partition(" ")
                seen[mark[1:]] = float(at)
            else:
                seen["last line"] = now
                if line.strip().startswith("browse runs"):
                    seen["summary"] = now

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    code = proc.wait()
    ended = time.time()
    reader.join(timeout=5)
    if "summary" not in seen:
        return {"error": f"exit {code} without a summary", "log_tail": "\n".join(lines[-30:])}
    result = {"exit_code": code, "wall_s": round(ended - started, 2), "summary_to_exit_s": round(ended - seen["summary"], 2)}
    if breakdown and "main-returned" in seen and "atexit-done" in seen:
        result |= {"summary_to_main_returned_s": round(seen["main-returned"] - seen["summary"], 2),
                   "atexit_s": round(seen["atexit-done"] - seen["main-returned"], 2),
                   "atexit_done_to_exit_s": round(ended - seen["atexit-done"], 2)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", required=True, help="the commit to compare with (checked out as a temporary git worktree)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each version (default: 3)")
    parser.add_argument("--full", action="store_true", help="the default configuration (what `make run` trains) instead of 1 epoch without the id-only baseline")
    parser.add_argument("--breakdown", action="store_true", help="also time main()'s return and the atexit handlers (module docstring)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "exit_latency.json")
    args = parser.parse_args()
    sets = [] if args.full else SAMPLE_SETS
    load_at_start, (commit, dirty) = load_average(), git_state()
    old_tree = Path(tempfile.mkdtemp(prefix="exit-latency-old-")) / "checkout"
    subprocess.run(["git", "worktree", "add", "--detach", str(old_tree), args.old], cwd=ROOT, check=True, capture_output=True)
    checkouts = {"old": old_tree, "new": ROOT}
    runs: dict[str, list[dict]] = {"old": [], "new": []}
    try:
        for round_, way in alternating(("old", "new"), args.rounds):
            runs[way].append(result := run_once(checkouts[way], sets, args.breakdown))
            print(f"round {round_} {way}: {result}", flush=True)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(old_tree)], cwd=ROOT, capture_output=True)
    medians = {way: statistics.median(r["summary_to_exit_s"] for r in rs if "summary_to_exit_s" in r) for way, rs in runs.items()
               if any("summary_to_exit_s" in r for r in rs)}
    write_result({
        "benchmark": "exit_latency",
        "question": "seconds from a successful retrain's summary to its process's exit, old vs new",
        "command": " ".join(sys.argv),
        "commit": commit, "dirty": dirty, "old": args.old,
        "machine": machine(load_at_start),
        "sets": " ".join(sets) or "(defaults)",
        "runs": runs,
        "median_summary_to_exit_s": medians,
        "ratio_old_to_new": round(medians["old"] / medians["new"], 2) if len(medians) == 2 and medians["new"] > 0 else None,
    }, args.out)


if __name__ == "__main__":
    main()
