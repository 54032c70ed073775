"""The defaults on sparse, short-history data: a shop-like cut of MovieLens-1M, CPU.

ML-1M is dense (293 ratings per item, 165 per user); shops and review sites are not (a handful of steps per
user, a long tail of items seen a few times, new items every day). This benchmark asks whether the
defaults that were chosen on ML-1M still hold there, without tuning anything to it: every user keeps one
random contiguous window of their training history, 4 steps or more (4 + a geometric number, median about 8,
at most 50), so the same 3,416 items with the same title-and-genre text get about one twentieth of the
interactions. Leave-one-out on each window: the last step is the test target, the one before it the
validation target; full ranking over all items, input items excluded. Items that occur only as a test
target are new to the model: the `cold_start` slice, as in a shop's daily catalog.

Models, each with the project's defaults (TrainConfig(), TextSASRecConfig(); early stopping on the
validation targets): popularity, the text-aware model, its id-only variant (text off); `--variants` adds
named overrides, e.g. `lr3e-3:train.lr=0.003`, to see whether a default is far off here.

    .venv/bin/python benchmarks/ml1m_sparse.py --out benchmarks/results/ml1m_sparse.json
    .venv/bin/python benchmarks/ml1m_sparse.py --seeds 0,1 --variants 'dropout0.5:model.dropout=0.5'

The data is read by path and never copied (research-only licence; see ../shared/data/ml-1m/README.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ml1m import ROOT, apply_overrides, evaluate, fit, load, machine_line, trained_mask  # noqa: E402 (benchmarks/ is on sys.path; ml1m applies the settings and puts the repository on it)
from provenance import git_state  # noqa: E402

from components.evaluation import model_topk, popularity_topk  # noqa: E402
from components.models.text_sasrec import TextSASRecConfig  # noqa: E402
from components.tokenization import TextEncoderConfig, embed_items  # noqa: E402
from components.training import TrainConfig  # noqa: E402
from components import settings  # noqa: E402

log = logging.getLogger("benchmarks.ml1m_sparse")
MIN_STEPS, MAX_STEPS, GEOMETRIC_P = 4, 50, 0.2


def sparse_windows(sequences: list[np.ndarray], seed: int) -> list[np.ndarray]:
    """One random contiguous window per user: MIN_STEPS + Geometric(GEOMETRIC_P) - 1 steps, at most MAX_STEPS
    and at most the whole history (users with fewer than MIN_STEPS steps are left out)."""
    rng = np.random.default_rng(seed)
    out = []
    for seq in sequences:
        if len(seq) < MIN_STEPS:
            continue
        length = min(len(seq), MAX_STEPS, MIN_STEPS + int(rng.geometric(GEOMETRIC_P)) - 1)
        start = int(rng.integers(0, len(seq) - length + 1))
        out.append(seq[start : start + length])
    return out


def split(windows: list[np.ndarray]) -> dict:
    """Leave-one-out: training sequences, validation (input, target), test (input, target)."""
    train = [w[:-2] for w in windows]
    valid = ([w[:-2] for w in windows], np.array([w[-2] for w in windows], dtype=np.int64))
    test = ([w[:-1] for w in windows], np.array([w[-1] for w in windows], dtype=np.int64))
    return {"train": train, "valid": valid, "test": test}


def describe(train: list[np.ndarray], test_targets: np.ndarray, n_items: int) -> dict:
    counts = np.bincount(np.concatenate(train), minlength=n_items + 1)[1:]
    lengths = np.array([len(s) for s in train]) + 2
    learned = trained_mask(train, n_items)
    return {"users": len(train), "interactions": int(lengths.sum()), "history_steps_median": float(np.median(lengths)),
            "history_steps_mean": round(float(lengths.mean()), 2), "items_in_training": int((counts > 0).sum()),
            "training_interactions_per_item_median": float(np.median(counts[counts > 0])),
            "items_seen_at_most_5_times_share": round(float(((counts > 0) & (counts <= 5)).sum() / max(1, (counts > 0).sum())), 3),
            "test_targets_new": int((~learned[test_targets]).sum())}


def run_model(name: str, data: dict, split_data: dict, embeddings: np.ndarray, model_cfg: TextSASRecConfig, train_cfg: TrainConfig) -> dict:
    n_items, train = data["n_items"], split_data["train"]
    (test_inputs, test_targets) = split_data["test"]
    has_id = trained_mask(train, n_items)
    started = time.perf_counter()
    model, result = fit(name, data | {"valid": split_data["valid"]}, embeddings, model_cfg, train_cfg, train, has_id)
    out = evaluate(model_topk(model, test_inputs, 20), test_targets, n_items, train)
    best = max(result.curve, key=lambda r: r["val_NDCG@10"]) if result.curve else {}
    out |= {"train_wall_s": round(time.perf_counter() - started, 1), "epochs": len(result.curve), "best_epoch": best.get("epoch"),
            "best_val_NDCG@10": round(best.get("val_NDCG@10", float("nan")), 4)}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "ml-1m")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ml1m_sparse.json")
    parser.add_argument("--seeds", default="0", help="data seeds (each draws other windows; the model seed is train.seed)")
    parser.add_argument("--models", default="text,id_only", help="default models to train: text, id_only or both")
    parser.add_argument("--variants", action="append", default=[], metavar="NAME:model.X=V,train.Y=W",
                        help="also the text model with these overrides of the defaults, under NAME")
    parser.add_argument("--max-minutes", type=float, default=None, help="cap each fit's budget (default: TrainConfig's, early stopping ends it first)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    started = time.perf_counter()
    commit, dirty = git_state()
    data = load(args.data)
    embeddings = embed_items(data["texts"], TextEncoderConfig(), settings.cache_dir())
    n_items = data["n_items"]
    model_cfg, train_cfg = TextSASRecConfig(), TrainConfig(progress=False)
    if args.max_minutes:
        train_cfg = replace(train_cfg, max_minutes=args.max_minutes)
    variants = {"text": (model_cfg, train_cfg), "id_only": (replace(model_cfg, use_text=False), train_cfg)}
    variants = {k: v for k, v in variants.items() if k in set(args.models.split(","))}
    for spec in args.variants:
        name, _, overrides = spec.partition(":")
        variants[name] = apply_overrides([o for o in overrides.split(",") if o], model_cfg, train_cfg, where="--variants")

    results: dict = {"git_commit": commit, "git_dirty": dirty, "command": "python benchmarks/ml1m_sparse.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                     "protocol": f"ML-1M SASRec version's training histories, one random window per user ({MIN_STEPS} + Geometric({GEOMETRIC_P}) - 1 steps, "
                                 f"at most {MAX_STEPS}); leave-one-out (last step test, the one before validation); full ranking over {n_items} items, input items excluded",
                     "config": {"model": asdict(model_cfg), "train": asdict(train_cfg)},
                     "variants": {name: {"model": {k: v for k, v in asdict(m).items() if v != asdict(model_cfg)[k]},
                                         "train": {k: v for k, v in asdict(t).items() if v != asdict(train_cfg)[k]}} for name, (m, t) in variants.items()},
                     "seeds": {}}

    def save() -> None:
        results["total_wall_s"] = round(time.perf_counter() - started, 1)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))

    for seed in [int(s) for s in args.seeds.split(",") if s]:
        split_data = split(sparse_windows(data["train"], seed))
        test_inputs, test_targets = split_data["test"]
        entry = results["seeds"][str(seed)] = {"data": describe(split_data["train"], test_targets, n_items)}
        log.info("seed %d: %s", seed, entry["data"])
        entry["popularity"] = evaluate(popularity_topk(split_data["train"], test_inputs, n_items, 20), test_targets, n_items, split_data["train"])
        for name, (m_cfg, t_cfg) in variants.items():
            entry[name] = run_model(f"{name}-seed{seed}", data, split_data, embeddings, m_cfg, t_cfg)
            save()
    results["machine"] = machine_line()
    save()
    print_table(results)
    return 0


def print_table(r: dict) -> None:
    for seed, entry in r["seeds"].items():
        d = entry["data"]
        print(f"\nseed {seed}: {d['users']} users, {d['interactions']} interactions (median {d['history_steps_median']:.0f} steps), "
              f"{d['items_in_training']} items trained (median {d['training_interactions_per_item_median']:.0f} interactions; "
              f"{d['items_seen_at_most_5_times_share']:.0%} seen at most 5 times), {d['test_targets_new']} test targets new")
        print(f"{'model':<16} {'HR@10':>7} {'CI':>17} {'NDCG@10':>8} {'long tail HR@10':>16} {'new HR@10':>10} {'epochs':>7} {'wall s':>7}")
        for name, m in entry.items():
            if name == "data":
                continue
            s = m.get("slices", {})
            tail = s.get("long_tail", {}).get("HR@10", float("nan"))
            new = s.get("cold_start", {}).get("HR@10", float("nan"))
            print(f"{name:<16} {m['HR@10']:7.4f} {str(m['ci95']['HR@10']):>17} {m['NDCG@10']:8.4f} {tail:16.4f} {new:10.4f} "
                  f"{m.get('epochs', '-'):>7} {m.get('train_wall_s', '-'):>7}")


if __name__ == "__main__":
    sys.exit(main())
