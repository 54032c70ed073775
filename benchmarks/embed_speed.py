"""Item-text embedding speed: length-sorted batches vs catalog order, side by side in one run.

`embed_items` cuts each batch to its longest text. In catalog order, a catalog that mixes bare titles
with long descriptions puts a long text in almost every batch, so nearly every batch runs at full
length; sorted by length, most batches are short. This measures what that saves on a generated
catalog (no dataset needed; the bundled all-MiniLM-L6-v2 on this machine's CPU), and checks that both
orders give the same vectors.

    .venv/bin/python benchmarks/embed_speed.py                    # ~1-2 min on 2 cores
    .venv/bin/python benchmarks/embed_speed.py --items 8000 --long-share 0.2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from components.tokenization import TextEncoderConfig, embed_items, tokenize_items  # noqa: E402
from provenance import git_state  # noqa: E402

WORDS = "light grippy sole wet rock mud trail road running walking waterproof breathable mesh leather cushioned stable wide narrow".split()


def catalog(n: int, long_share: float, seed: int) -> list[str]:
    """Titles of 3-6 words; a `long_share` of the items also carry a 40-90 word description."""
    rng = np.random.default_rng(seed)
    texts = []
    for i in range(n):
        title = " ".join(rng.choice(WORDS, rng.integers(3, 7))) + f" {i}"
        texts.append(title + (". " + " ".join(rng.choice(WORDS, rng.integers(40, 91))) if rng.random() < long_share else ""))
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument("--long-share", type=float, default=0.3, help="share of items with a long description")
    parser.add_argument("--rounds", type=int, default=2, help="timed runs of each order (alternating)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "embed_speed.json")
    args = parser.parse_args()

    import torch

    commit, dirty = git_state()  # the code the run starts with
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    texts = catalog(args.items, args.long_share, args.seed)
    config = TextEncoderConfig(device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        lengths = tokenize_items(texts, config, Path(tmp) / "tokens")["attention_mask"].sum(1)
        seconds: dict[str, list[float]] = {"sorted": [], "catalog_order": []}
        vectors = {}
        for round_ in range(args.rounds):
            for name in (["sorted", "catalog_order"] if round_ % 2 == 0 else ["catalog_order", "sorted"]):
                cache = Path(tmp) / f"{name}-{round_}"  # a fresh cache: every run embeds
                started = time.perf_counter()
                vectors[name] = embed_items(texts, config, cache, progress=False, sort_by_length=name == "sorted")
                seconds[name].append(time.perf_counter() - started)
                print(f"round {round_ + 1}: {name:13s} {seconds[name][-1]:6.1f} s", flush=True)
    diff = float(np.abs(vectors["sorted"] - vectors["catalog_order"]).max())
    median = {k: float(np.median(v)) for k, v in seconds.items()}
    result = {
        "what": "embed_items on the CPU: length-sorted batches vs catalog order (same texts, same model, fresh caches)",
        "items": args.items,
        "long_share": args.long_share,
        "tokens": {"mean": float(lengths.mean()), "max_tokens": config.max_tokens, "at_max": float((lengths == config.max_tokens).mean())},
        "batch_size": config.batch_size,
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "load_average_at_start": load_at_start, "torch": torch.__version__},
        "seconds": seconds,
        "median_s": median,
        "speedup_sorted": round(median["catalog_order"] / median["sorted"], 2),
        "max_abs_vector_diff": diff,
        "config": asdict(config),
        "git_commit": commit,
        "git_dirty": dirty,
    }
    print(f"sorted {median['sorted']:.1f} s vs catalog order {median['catalog_order']:.1f} s: {result['speedup_sorted']}x; "
          f"largest vector difference {diff:.1e}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
