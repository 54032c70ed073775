"""Item-text tokenization: each text's leading words (`window_texts`) vs the whole text, side by side in one run.

The model reads an item's first `text.max_tokens` (64) tokens, but a fast tokenizer tokenizes the whole text before
it truncates. On a catalog of long HTML descriptions most of that work is thrown away. This times
`tokenize_items` (which hands the tokenizer only the leading words where they fill the window) against the
tokenizer on the whole texts, in the same chunks, on a generated Amazon-like catalog (benchmarks/shop_scale_data.py:
15 % of items without a description, 30 % one sentence, 35 % a short HTML block, 20 % a long page), cleaned as
`prepare.item_texts` cleans it, and checks that both give the same ids and masks.

    .venv/bin/python benchmarks/tokenize_speed.py                  # ~1 min on 2 cores
    .venv/bin/python benchmarks/tokenize_speed.py --items 20000 --rounds 3
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from components.tokenization import TextEncoderConfig  # noqa: E402
from components.tokenization import encode  # noqa: E402
from provenance import alternating, git_state, load_average, machine, timing_summary, write_result  # noqa: E402


def catalog_texts(n: int, seed: int) -> list[str]:
    import pandas as pd

    from components.preparation.prepare import item_texts
    from shop_scale_data import write_items

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "items.csv"
        write_items(path, n, np.random.default_rng(seed))
        items = pd.read_csv(path, dtype=str, keep_default_na=False)
    return item_texts(items)


def whole_texts(texts: list[str], tokenizer, max_tokens: int) -> dict[str, np.ndarray]:
    """What tokenize_items did before window_texts: every text whole, in the same chunks."""
    ids, masks = [], []
    for start in range(0, len(texts), encode.TOKENIZE_CHUNK):
        out = tokenizer(texts[start : start + encode.TOKENIZE_CHUNK], padding="max_length", truncation=True, max_length=max_tokens, return_tensors="np")
        ids.append(out["input_ids"].astype(np.int64))
        masks.append(out["attention_mask"].astype(np.int64))
    return {"input_ids": np.concatenate(ids), "attention_mask": np.concatenate(masks)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2, help="timed runs of each way (alternating)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "tokenize_speed.json")
    args = parser.parse_args()

    commit, dirty = git_state()
    load_at_start = load_average()
    texts = catalog_texts(args.items, args.seed)
    config = TextEncoderConfig()
    tokenizer = encode._load("tokenizer", config)
    times: dict[str, list[float]] = {"whole_text": [], "leading_words": []}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for round_, way in alternating(("whole_text", "leading_words"), args.rounds):
            started = time.perf_counter()
            if way == "whole_text":
                results[way] = whole_texts(texts, tokenizer, config.max_tokens)
            else:  # a fresh cache folder: tokenize_items must tokenize, not read its cache
                results[way] = encode.tokenize_items(texts, config, Path(tmp) / f"r{round_}")
            times[way].append(time.perf_counter() - started)
    same = all(np.array_equal(results["whole_text"][k], results["leading_words"][k]) for k in ("input_ids", "attention_mask"))
    report = {
        "question": "tokenize_items: each item text's leading words (window_texts) vs the whole text",
        "commit": commit,
        "dirty": dirty,
        "machine": machine(load_at_start),
        "items": args.items,
        "seed": args.seed,
        "max_tokens": config.max_tokens,
        "mean_characters_per_text": round(float(np.mean([len(t) for t in texts])), 1),
        "max_characters_per_text": int(max(len(t) for t in texts)),
        **timing_summary(times, "whole_text", "leading_words", digits=2),
        "same_ids_and_masks": same,
    }
    write_result(report, args.out)
    if not same:
        sys.exit("the ids differ: window_texts changed what the model reads")


if __name__ == "__main__":
    main()
