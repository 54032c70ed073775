"""The retrain's data stage (validate + prepare) with the item texts cleaned once (Dataset.item_texts) against
cleaned twice (validation's has-text check, then prepare, as until 2026-12-02), side by side in one process.

Reads a generated shop (benchmarks/shop_scale_data.py writes one; no dataset in the repository) and times, in
alternating rounds, what the flow's validate and prepare tasks do, each way, with the Great Expectations project
in a temporary folder. Checks that both ways prepare the same item texts and statistics.

    .venv/bin/python benchmarks/shop_scale_data.py --out /tmp/shop_100k
    .venv/bin/python benchmarks/data_stage.py --data /tmp/shop_100k          # ~5 min on 2 cores at 100,000 items

`--compare-validation REV`: validate alone, the code of commit REV (a temporary git worktree) against this tree's,
each in fresh processes taking turns (alternating order), on the same data; each process validates `--repeats`
times into one Great Expectations project, as successive retrains do (Data Docs accumulate there). Loading the
data and cleaning the item texts are not timed. Checks that both report the same failures (none on the shop).

    .venv/bin/python benchmarks/data_stage.py --data /tmp/shop_100k --compare-validation 4cf46a9 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from provenance import alternating, git_state, load_average, machine, timing_summary, write_result  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder with events.csv and items.csv")
    parser.add_argument("--rounds", type=int, default=1, help="timed runs of each way (alternating)")
    parser.add_argument("--out", type=Path, default=None, help="result file (default: results/data_stage.json, "
                        "results/data_stage_validation.json with --compare-validation)")
    parser.add_argument("--compare-validation", metavar="REV", help="time validate: commit REV's code vs this tree's")
    parser.add_argument("--repeats", type=int, default=3, help="--compare-validation: validations per process")
    parser.add_argument("--child-tree", type=Path, help=argparse.SUPPRESS)  # one timed process of --compare-validation
    args = parser.parse_args()
    if args.child_tree:
        return validation_child(args.child_tree, args.data, args.repeats)
    if args.compare_validation:
        return compare_validation(args)
    args.out = args.out or ROOT / "benchmarks" / "results" / "data_stage.json"

    commit, dirty = git_state()
    load_at_start = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["BEHAVIORFLOW_HOME"] = tmp
        from components import settings

        settings.apply_environment()
        from components.data.readers import Dataset, load_dataset
        from components.preparation import prepare
        from components.validation import validate

        loaded = load_dataset(events=args.data / "events.csv", items=args.data / "items.csv")
        times: dict[str, list[float]] = {"cleaned_twice": [], "cleaned_once": []}
        prepared = {}
        for _, way in alternating(("cleaned_twice", "cleaned_once"), args.rounds):
            dataset = Dataset(loaded.events, loaded.items, loaded.events_source, loaded.items_source)  # nothing cached
            started = time.perf_counter()
            texts = dataset.item_texts if way == "cleaned_once" else None
            validate(dataset.events, dataset.items, events_source="events.csv", items_source="items.csv", item_texts=texts)
            prepared[way] = prepare(dataset.events, dataset.items, texts=texts)
            times[way].append(time.perf_counter() - started)
    same = prepared["cleaned_once"].item_texts == prepared["cleaned_twice"].item_texts and prepared["cleaned_once"].stats == prepared["cleaned_twice"].stats
    report = {
        "question": "data stage (validate + prepare): item texts cleaned once vs twice",
        "commit": commit,
        "dirty": dirty,
        "machine": machine(load_at_start),
        "items": len(loaded.items),
        "events": len(loaded.events),
        **timing_summary(times, "cleaned_twice", "cleaned_once", digits=1),
        "same_texts_and_stats": same,
    }
    write_result(report, args.out)


def compare_validation(args) -> None:
    """validate at commit args.compare_validation ("old") vs this tree ("new"), in alternating fresh processes."""
    commit, dirty = git_state()
    load_at_start = load_average()
    old_rev = subprocess.run(["git", "rev-parse", args.compare_validation], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    runs: dict[str, list[list[float]]] = {"old": [], "new": []}
    failures: dict[str, list] = {}
    with tempfile.TemporaryDirectory() as tmp:
        old_tree = Path(tmp) / "old"
        subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(old_tree), old_rev], cwd=ROOT, check=True)
        try:
            for _, way in alternating(("old", "new"), args.rounds):
                tree = old_tree if way == "old" else ROOT
                child = subprocess.run(
                    [sys.executable, __file__, "--data", str(args.data), "--repeats", str(args.repeats), "--child-tree", str(tree)],
                    capture_output=True, text=True, check=True,
                )
                result = json.loads(child.stdout.strip().splitlines()[-1])
                runs[way].append(result["seconds"])
                failures[way] = result["failures"]
                print(way, result["seconds"], flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old_tree)], cwd=ROOT, check=False)
    firsts = {way: [seconds[0] for seconds in process] for way, process in runs.items()}
    lasts = {way: [seconds[-1] for seconds in process] for way, process in runs.items()}
    report = {
        "question": "validate (both suites and Data Docs): the code of old_commit vs this tree, same data, alternating fresh processes",
        "commit": commit,
        "dirty": dirty,
        "old_commit": old_rev,
        "machine": machine(load_at_start),
        "items": None,
        "events": None,
        "repeats_per_process": args.repeats,
        "seconds_per_process": {way: [[round(t, 1) for t in process] for process in ps] for way, ps in runs.items()},
        "first_validation": timing_summary(firsts, "old", "new", digits=1),
        f"validation_{args.repeats}_in_one_project": timing_summary(lasts, "old", "new", digits=1),
        "same_failures": failures["old"] == failures["new"],
    }
    report["items"], report["events"] = result["items"], result["events"]
    write_result(report, args.out or ROOT / "benchmarks" / "results" / "data_stage_validation.json")


def validation_child(tree: Path, data: Path, repeats: int) -> None:
    """One process of --compare-validation: `tree`'s validate, `repeats` times into one GE project; prints a JSON line."""
    sys.path.insert(0, str(tree))
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["BEHAVIORFLOW_HOME"] = tmp
        from components import settings

        assert Path(settings.__file__).resolve().is_relative_to(tree.resolve()), settings.__file__
        settings.apply_environment()
        import great_expectations  # noqa: F401  (its import is not validation)
        from components.data.readers import Dataset, load_dataset
        from components.validation import validate

        loaded = load_dataset(events=data / "events.csv", items=data / "items.csv")
        dataset = Dataset(loaded.events, loaded.items, loaded.events_source, loaded.items_source)
        texts = dataset.item_texts
        seconds = []
        for _ in range(repeats):
            started = time.perf_counter()
            report = validate(dataset.events, dataset.items, events_source="events.csv", items_source="items.csv", item_texts=texts)
            seconds.append(time.perf_counter() - started)
    failures = [{k: f[k] for k in ("expectation", "column", "unexpected_count", "rows", "message")} for f in report.failures]
    print(json.dumps({"seconds": seconds, "failures": failures, "items": len(loaded.items), "events": len(loaded.events)}))


if __name__ == "__main__":
    main()
