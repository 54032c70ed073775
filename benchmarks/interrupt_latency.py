"""How soon does Ctrl-C (or SIGTERM) stop `behaviorflow retrain`, stage by stage? Two versions of the code side by
side: --old (a commit, checked out as a temporary git worktree) and this checkout, run by the same virtual environment,
each run in a fresh state folder; without --old, this checkout alone. A few seconds into a stage, SIGINT goes to the
run's whole process group — what Ctrl-C in a terminal does — and the script records the seconds from the signal to
exit, the exit code, the lines printed after it, the MLflow run's status and its `interrupted` tag, the versions left
in the registry with their `registration` tag, what is left in the Bento store, and whether the temporary Prefect API
server outlived the run. A run still alive --cap-s seconds after the signal is killed (SIGKILL to its group) and
recorded as such.

--signal TERM sends SIGTERM to the retrain process alone instead: what Kubernetes (pod deletion or eviction, to the
container's first process), `docker stop` and a Prefect worker cancelling a flow run send (the worker to the flow-run
process's group; --to group for that).

The data and text stages run on a generated shop (`shop_scale_data.py`: a catalog whose embedding takes minutes),
the later stages on the bundled sample (1 epoch, no id-only baseline), so that each stage is reached in minutes:

    .venv/bin/python benchmarks/shop_scale_data.py --out /tmp/shop_20k --items 20000 --users 30000
    .venv/bin/python benchmarks/interrupt_latency.py --old 4cf46a9 --shop /tmp/shop_20k      # ~35 min on 2 cores

--sample-only runs every stage on the bundled sample (what `make run` trains), the embedding slowed to one item text
per forward pass (`text.batch_size=1`, as tests/test_interrupt.py does) so that the signal lands in it:

    .venv/bin/python benchmarks/interrupt_latency.py --signal TERM --sample-only --out benchmarks/results/interrupt_latency_sigterm.json
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from provenance import ROOT, alternating, git_state, load_average, machine, write_result

# stage: (data, the log line that starts it, seconds to wait after it)
STAGES = {
    "validate": ("shop", r"\[1/9\]", 3.0),
    "tokenize": ("shop", r"\[3/9\]", 3.0),
    "embed": ("shop", r"embedding \d+ item texts on", 5.0),
    "train": ("sample", r"\[4/9\]", 6.0),
    "evaluate": ("sample", r"\[5/9\]", 0.5),
    "export": ("sample", r"\[7/9\]", 2.0),
    "package and register": ("sample", r"\[8/9\]", 2.0),
}
SAMPLE_SETS = ["--set", "train.max_epochs=1", "--set", "evaluate.id_only_baseline=false"]
# --sample-only: the data and text stages on the sample too, each signalled sooner (the sample's stages are short)
SAMPLE_ONLY = {"validate": 0.5, "tokenize": 1.0, "embed": 3.0, "train": 2.0}
SAMPLE_ONLY_SETS = ["--set", "text.batch_size=1"]
SIGNALS = {"INT": signal.SIGINT, "TERM": signal.SIGTERM, "HUP": signal.SIGHUP}
STATE_ENV = ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "PREFECT_HOME", "BENTOML_HOME", "PREFECT_LOGGING_LEVEL", "BEHAVIORFLOW_HOME")


def interrupt_once(checkout: Path, stage: str, shop: Path | None, cap_s: float, signum: int = signal.SIGINT, to_group: bool = True) -> dict:
    data, pattern, delay = STAGES[stage]
    if shop is None and stage in SAMPLE_ONLY:  # --sample-only
        data, delay = "sample", SAMPLE_ONLY[stage]
    home = Path(tempfile.mkdtemp(prefix="interrupt-latency-"))
    env = {k: v for k, v in os.environ.items() if k not in STATE_ENV} | {"BEHAVIORFLOW_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    files = ["--events", str(shop / "events.csv"), "--items", str(shop / "items.csv"), "--set", "train.max_minutes=1"] if data == "shop" else SAMPLE_SETS
    if shop is None:
        files = [*files, *SAMPLE_ONLY_SETS]
    log = home / "retrain.log"
    with log.open("w") as out:  # cwd = the checkout: `-m flows.cli` imports that checkout's code
        proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "retrain", *files], cwd=checkout, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    started = time.monotonic()
    while not re.search(pattern, log.read_text(errors="replace")):
        if proc.poll() is not None:
            return {"error": f"exited {proc.returncode} before '{pattern}'", "log_tail": log.read_text(errors="replace")[-2000:]}
        time.sleep(0.05)
    reached = time.monotonic() - started
    time.sleep(delay)
    before = len(log.read_bytes())
    helpers = _descendants(proc.pid)  # the temporary Prefect API server, and whatever else the run started
    sent = time.monotonic()
    if to_group:
        os.killpg(proc.pid, signum)
    else:
        os.kill(proc.pid, signum)
    try:
        code: int | str = proc.wait(timeout=cap_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        code = f"still running after {cap_s:.0f} s: killed"
    seconds = time.monotonic() - sent
    after = log.read_bytes()[before:].decode(errors="replace").splitlines()
    time.sleep(0.5)  # a helper stopped by the kernel's PR_SET_PDEATHSIG signal gets a moment to go
    outlived = [pid for pid in helpers if _alive(pid)]
    for pid in outlived:
        os.kill(pid, signal.SIGKILL)
    db = home / "mlflow.db"
    runs, versions, tags = [], [], []
    if db.exists():
        with sqlite3.connect(db) as con:
            runs = [status for (status,) in con.execute("select status from runs")]
            tags = [value for (value,) in con.execute("select value from tags where key = 'interrupted'")]
            # a rolled-back version is deleted: MLflow keeps its row, with current_stage 'Deleted_Internal'
            versions = [f"{v}: {state}" + (" (deleted: rolled back)" if stage == "Deleted_Internal" else "") for v, state, stage in con.execute(
                "select v.version, t.value, v.current_stage from model_versions v left join model_version_tags t on t.name = v.name and t.version = v.version and t.key = 'registration'")]
    store = home / "bentoml"
    left = sorted(f"{kind}/{path.parent.name}:{path.name}" for kind in ("models", "bentos")
                  for path in (store / kind).glob("*/*") if path.is_dir()) if store.is_dir() else []
    # a shell's view: 128 + N for a process that signal N ended (Popen gives -N)
    shown = code if isinstance(code, str) or code >= 0 else f"{128 - code} (killed by {signal.Signals(-code).name})"
    return {"exit_code": shown, "seconds_to_exit": round(seconds, 1), "stage_reached_after_s": round(reached, 1),
            "lines_after_signal": len([line for line in after if line.strip()]), "tracebacks": sum("Traceback" in line for line in after),
            "last_line": next((line for line in reversed(after) if line.strip()), "")[:200], "mlflow_runs": runs,
            "interrupted_tags": tags, "versions": versions, "bento_store": left, "helpers_outlived": len(outlived)}


def _descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", help="the commit to compare with (checked out as a temporary git worktree); without it, this checkout alone")
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--shop", type=Path, help="a shop_scale_data.py folder (events.csv, items.csv) for the data and text stages")
    data.add_argument("--sample-only", action="store_true", help="every stage on the bundled sample (module docstring)")
    parser.add_argument("--signal", choices=list(SIGNALS), default="INT", help="INT (default), TERM or HUP")
    parser.add_argument("--to", choices=["group", "process"], help="where the signal goes: the run's process group (the default for "
                        "INT, as a terminal's Ctrl-C) or the retrain process alone (the default for TERM and HUP)")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, of: {', '.join(STAGES)}")
    parser.add_argument("--runs", type=int, default=1, help="runs per stage and version (default: 1); more than 1 records a list")
    parser.add_argument("--cap-s", type=float, default=150.0, help="kill a run still alive this long after the signal (default: 150)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "interrupt_latency.json")
    args = parser.parse_args()
    stages = args.stages.split(",")
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        parser.error(f"--stages: unknown {unknown}; known: {list(STAGES)}")
    # Started in the background (`nohup … &`), this process would ignore SIGINT, as a shell's background jobs do, and
    # so would every retrain it starts: the retrains are measured as a terminal's foreground job.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signum, to = SIGNALS[args.signal], args.to or ("group" if args.signal == "INT" else "process")
    load_at_start, (commit, dirty) = load_average(), git_state()
    checkouts = {"new": ROOT}
    if args.old:
        old_tree = Path(tempfile.mkdtemp(prefix="interrupt-latency-old-")) / "checkout"
        subprocess.run(["git", "worktree", "add", "--detach", str(old_tree), args.old], cwd=ROOT, check=True, capture_output=True)
        checkouts["old"] = old_tree
    results: dict[str, dict[str, dict]] = {stage: {} for stage in stages}
    try:
        for i, stage in enumerate(stages):
            ways = ("old", "new") if i % 2 == 0 else ("new", "old")  # alternating: neither version always runs first
            for _, way in alternating(ways, args.runs) if args.old else [(i, "new") for i in range(args.runs)]:
                result = interrupt_once(checkouts[way], stage, args.shop, args.cap_s, signum, to == "group")
                if args.runs > 1:
                    results[stage].setdefault(way, []).append(result)
                else:
                    results[stage][way] = result
                print(f"{stage:<22} {way}: {result}", flush=True)
    finally:
        if args.old:
            subprocess.run(["git", "worktree", "remove", "--force", str(old_tree)], cwd=ROOT, capture_output=True)
    write_result({
        "benchmark": "interrupt_latency",
        "question": f"seconds from SIG{args.signal} (to the {to}) to the exit of behaviorflow retrain, by stage" + (", old vs new" if args.old else ""),
        "command": " ".join(sys.argv),
        "commit": commit, "dirty": dirty, "old": args.old,
        "signal": f"SIG{args.signal}", "to": to,
        "machine": machine(load_at_start),
        "shop": str(args.shop) if args.shop else None,
        "sample_sets": " ".join(SAMPLE_SETS + (SAMPLE_ONLY_SETS if args.sample_only else [])),
        "stages": results,
    }, args.out)


if __name__ == "__main__":
    main()
