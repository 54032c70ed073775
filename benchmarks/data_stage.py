"""The retrain's data stage (validate + prepare) with the item texts cleaned once (Dataset.item_texts) against
cleaned twice (validation's has-text check, then prepare, as until 2026-12-02), side by side in one process.

Reads a generated shop (benchmarks/shop_scale_data.py writes one; no dataset in the repository) and times, in
alternating rounds, what the flow's validate and prepare tasks do, each way, with the Great Expectations project
in a temporary folder. Checks that both ways prepare the same item texts and statistics.

    .venv/bin/python benchmarks/shop_scale_data.py --out /tmp/shop_100k
    .venv/bin/python benchmarks/data_stage.py --data /tmp/shop_100k          # ~5 min on 2 cores at 100,000 items
"""

from __future__ import annotations

import argparse
import os
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
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "data_stage.json")
    args = parser.parse_args()

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

if __name__ == "__main__":
    main()
