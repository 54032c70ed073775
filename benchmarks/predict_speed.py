"""Batch prediction (`behaviorflow predict`, and evaluation's re-scoring of the champion): histories ranked in
the given order, each graph call padded to its batch's longest, vs grouped by length as the service batches
them (`serving.ranking.BundleRanker.topk` since this benchmark was added).

The model has random weights (no dataset needed: neither the graph's cost nor the padding depends on them),
the ML-1M benchmark model's shape (3,416 items, d_model 64, 2 blocks, 2 heads), exported to ONNX as a retrain
exports it. Histories are generated with two length profiles:

    shop   log-normal, median 6 steps (as benchmarks/shop_scale_data.py's users: most short, a long tail)
    ml1m   log-normal, median 96 steps, at least 20 (MovieLens-1M's users rated at least 20 movies)

and ranked at max_len 50 (the default) and 200 (the ML-1M benchmark's). Both ways run in one process on
the same bundle and histories, in alternating order, in chunks of predict's 1,024 lines (grouped within each
chunk, as predict reads its file); the result
records histories per second, the speedup, and how many top-10 lists are identical (grouping changes only
the padding, so a list may differ only where two items' scores tie within float32 rounding).

    python benchmarks/predict_speed.py                 # ~3-5 min; writes benchmarks/results/predict_speed.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.provenance import alternating, git_state, load_average, machine, timing_summary, write_result  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "predict_speed.json"
PROFILES = {"shop": (6.0, 1.0, 1), "ml1m": (96.0, 0.8, 20)}  # median, log-normal sigma, shortest


def lengths(profile: str, n: int, seed: int) -> np.ndarray:
    median, sigma, shortest = PROFILES[profile]
    rng = np.random.default_rng(seed)
    return np.clip(np.round(rng.lognormal(np.log(median), sigma, n)), shortest, 2000).astype(int)


def build_bundle(directory: Path, items: int, max_len: int) -> Path:
    """A bundle (serving/contract.py) of a randomly initialised TextSASRec, exported and written as a retrain does."""
    import torch

    from components.export.onnx_export import export_onnx, write_bundle
    from components.models.text_sasrec import TextSASRec, TextSASRecConfig

    torch.manual_seed(0)
    cfg = TextSASRecConfig(n_items=items, d_model=64, n_layers=2, n_heads=2, max_len=max_len, token_embeddings=False)
    model = TextSASRec(cfg, torch.nn.functional.normalize(torch.randn(items, cfg.text_dim), dim=1)).eval()
    onnx_path = export_onnx(model, directory / "model.onnx")
    ids = [f"I{i}" for i in range(1, items + 1)]
    manifest = {"model_name": "predict-speed", "max_len": max_len, "n_items": items, "precision": "fp32"}
    with torch.no_grad():
        vectors = model.item_table().numpy()
    return write_bundle(directory / "bundle", onnx_path, ids, ids, {}, manifest, vectors)


def topk_in_given_order(ranker, histories: list[list[str]], k: int, batch_size: int) -> list[list[str]]:
    """BundleRanker.topk as it was before length grouping (fp32, exclude_seen, no new-item policy): batches in the
    given order, each padded to its longest history."""
    from serving import contract

    index_of, item_ids = ranker.bundle.index_of, ranker.bundle.item_ids
    out = []
    for start in range(0, len(histories), batch_size):
        chunk = [[index_of[i] for i in h if i in index_of] for h in histories[start : start + batch_size]]
        items, scores, users = ranker.session.run(
            [contract.OUTPUT_ITEMS, contract.OUTPUT_SCORES, contract.OUTPUT_USER],
            {contract.INPUT_HISTORY: contract.pad_histories(chunk, ranker.bundle.max_len), contract.INPUT_EXCLUDE_SEEN: np.full(len(chunk), True)},
        )
        for history, row_items, row_scores, user in zip(chunk, items.tolist(), scores.tolist(), users):
            banned = set(history)
            ranked = [(i, s) for i, s in zip(row_items, row_scores) if i > 0 and np.isfinite(s) and i not in banned]
            if len(ranked) < k:
                ranked = ranker.bundle.fill_to_k(ranked, k, user, banned, ranker._item_vectors)
            out.append([item_ids[i - 1] for i, _ in ranked[:k]])
    return out


def in_predicts_chunks(ranker, histories: list[list[str]], k: int, batch_size: int) -> list[list[str]]:
    """As `behaviorflow predict` ranks a file (components/prediction/predict.py): `batch_size` lines at a time, each
    chunk through BundleRanker.topk, which groups that chunk's histories by length."""
    return [ranked for start in range(0, len(histories), batch_size) for ranked in ranker.topk(histories[start : start + batch_size], k, True, batch_size)]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--histories", type=int, default=10_000, help="histories per case (default 10,000)")
    parser.add_argument("--items", type=int, default=3416, help="catalog size (default: ML-1M's 3,416)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of both ways per case, alternating (default 3)")
    parser.add_argument("--batch-size", type=int, default=1024, help="histories per batch (default: predict's 1,024)")
    parser.add_argument("--cases", default="shop@50,ml1m@50,ml1m@200", help="profile@max_len, comma-separated")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    from serving.ranking import BundleRanker

    load_at_start, (commit, dirty) = load_average(), git_state()
    cases = []
    with tempfile.TemporaryDirectory(prefix="predict-speed-") as work:
        for case in args.cases.split(","):
            profile, max_len = case.split("@")
            ranker = BundleRanker(build_bundle(Path(work) / case, args.items, int(max_len)))
            rng = np.random.default_rng(1)
            histories = [[f"I{i}" for i in rng.integers(1, args.items + 1, size=n)] for n in lengths(profile, args.histories, seed=2)]
            ways = {"given_order": lambda: topk_in_given_order(ranker, histories, 10, args.batch_size),
                    "length_groups": lambda: in_predicts_chunks(ranker, histories, 10, args.batch_size)}
            times: dict[str, list[float]] = {way: [] for way in ways}
            answers = {}
            for _, way in alternating(tuple(ways), args.rounds):
                started = time.perf_counter()
                answers[way] = ways[way]()
                times[way].append(time.perf_counter() - started)
            summary = timing_summary(times, "given_order", "length_groups", 3)
            same = sum(a == b for a, b in zip(answers["given_order"], answers["length_groups"]))
            capped = np.minimum(lengths(profile, args.histories, seed=2), int(max_len))
            cases.append({
                "case": case, "profile": profile, "max_len": int(max_len),
                "history_length": {"median": float(np.median(capped)), "mean_read": round(float(capped.mean()), 1), "max_read": int(capped.max())},
                **summary,
                "histories_per_s": {way: round(args.histories / t, 1) for way, t in summary["median_s"].items()},
                "identical_top10_lists": same, "histories": args.histories,
            })
            print(f"{case}: {cases[-1]['histories_per_s']} histories/s, {summary['speedup']}x, {same}/{args.histories} identical top-10 lists", flush=True)
    report = {
        "command": "python benchmarks/predict_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "git_commit": commit, "git_dirty": dirty,
        "machine": machine(load_at_start),
        "model": {"n_items": args.items, "d_model": 64, "n_layers": 2, "n_heads": 2, "weights": "random", "k": 10, "batch_size": args.batch_size},
        "cases": cases,
    }
    write_result(report, args.out)
    return report


if __name__ == "__main__":
    main()
