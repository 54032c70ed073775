"""Choose how a cold item is represented, without looking at the test users (ML-1M, CPU).

The cold-start experiment of benchmarks/ml1m.py removes 10 % of the items from training and measures
the test users whose target is one of them. Choosing the cold-item representation on those cases would
tune to the test, and the 512 validation users hold only ~50 cold targets. So this script carves its
own slice: a *different* random 10 % of items (seed 1) is removed from training, and the selection
cases are the training users whose last training item is one of them (input: their earlier items with
the removed ones dropped, as the model saw them; target: that never-trained item). Warm quality is
the validation users' NDCG@10 / HR@10 (their targets are never trained on).

    .venv/bin/python benchmarks/ml1m_cold_selection.py --minutes 8 \\
        --variant neighbors: --variant mlp:model.cold_imputation=mlp

Each variant is "name:" followed by comma-separated model.X=V / train.X=V overrides. Results go to
benchmarks/results/ml1m_cold_selection.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ml1m import ROOT, all_scores, apply_overrides, cold_items, fit, hr10, items_above, load, new_item_places, offset_curve, scale_calibration, trained_mask  # noqa: E402


from components import settings  # noqa: E402
from provenance import git_state  # noqa: E402
from components.evaluation.rankers import topk_of_scores  # noqa: E402
from components.models.text_sasrec import TextSASRecConfig  # noqa: E402
from components.tokenization import TextEncoderConfig, embed_items  # noqa: E402
from components.training import TrainConfig  # noqa: E402

log = logging.getLogger("benchmarks.cold_selection")


def parse_variant(text: str, model_cfg: TextSASRecConfig, train_cfg: TrainConfig):
    """'NAME:model.X=V,train.X=V' -> (NAME, model config, train config)."""
    name, _, overrides = text.partition(":")
    return (name, *apply_overrides([o for o in overrides.split(",") if o], model_cfg, train_cfg, where="--variant"))


def cold_diagnostics(scores: np.ndarray, targets: np.ndarray, cold: np.ndarray) -> dict:
    """Why a cold target is missed: is it ranked low among the other removed items too (the text does
    not tell it apart), or only against the trained ones (its scores sit on another scale)? `scores`:
    all_scores of the cases whose targets are `targets`."""
    def mean_where(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return np.where(mask, scores, 0).sum(1) / np.maximum(1, mask.sum(1))

    among_all, among_cold = items_above(scores, targets, cold)
    finite = np.isfinite(scores)
    gaps = mean_where(scores, finite & cold[None, :]) - mean_where(scores, finite & ~cold[None, :])
    return {
        "median_rank_among_all": float(np.median(among_all) + 1),
        "HR@10_among_removed_items": float((among_cold < 10).mean()),
        "median_rank_among_removed_items": float(np.median(among_cold) + 1),
        "removed_minus_trained_mean_score": float(gaps.mean()),
    }


def warm_among_subset(scores: np.ndarray, targets: np.ndarray, trained: np.ndarray, size: int, seed: int = 0) -> dict:
    """The cold diagnostics' yardstick: a warm target ranked among a random set of `size` other trained
    items (as many as were removed), as a cold target is ranked among the removed items. Equal
    numbers would mean the model tells never-trained items apart as well as trained ones. `scores`:
    all_scores of the cases whose targets are `targets`."""
    rng = np.random.default_rng(seed)
    pool = np.flatnonzero(trained)
    target_scores = scores[np.arange(len(targets)), targets]
    above = []
    for row, (target, score) in enumerate(zip(targets, target_scores)):
        others = rng.choice(pool[pool != target], size=min(size, len(pool) - 1), replace=False)
        above.append(int((scores[row, others] > score).sum()))
    above = np.asarray(above)
    return {"HR@10_among_as_many_trained_items": float((above < 10).mean()), "median_rank_among_as_many_trained_items": float(np.median(above) + 1)}


def popularity_yardstick(popularity: np.ndarray, sel_inputs: list[np.ndarray], sel_targets: np.ndarray, cold: np.ndarray,
                         warm_inputs: list[np.ndarray], warm_targets: np.ndarray, trained: np.ndarray, seed: int = 0) -> dict:
    """What knowing each item's true popularity alone would give, for the two diagnostics above: a cold
    target ranked by its count in the full training data (which no model has for a new item) among the
    removed items, and a warm target among as many random trained items. Items of the input are left out,
    as in the model's rankings."""
    def top10_share(inputs, targets, pool_of) -> float:
        hits = []
        for inp, target in zip(inputs, targets):
            pool = pool_of(target)
            pool = pool[~np.isin(pool, inp)]
            hits.append(int((popularity[pool] > popularity[target]).sum()) < 10)
        return float(np.mean(hits))

    rng = np.random.default_rng(seed)
    removed, warm_pool = np.flatnonzero(cold), np.flatnonzero(trained)
    size = len(removed)
    return {
        "HR@10_among_removed_items": top10_share(sel_inputs, sel_targets, lambda t: removed[removed != t]),
        "HR@10_among_as_many_trained_items": top10_share(
            warm_inputs, warm_targets, lambda t: rng.choice(warm_pool[warm_pool != t], size=min(size, len(warm_pool) - 1), replace=False)),
        "note": "oracle: each item ranked by its interactions in the full training data, including the removed items' own",
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "ml-1m")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ml1m_cold_selection.json")
    parser.add_argument("--minutes", type=float, default=8.0, help="training budget of each variant")
    parser.add_argument("--variant", action="append", required=True, metavar="NAME:model.X=V,train.X=V")
    parser.add_argument("--set", action="append", default=[], metavar="model.X=V|train.X=V", help="override for every variant")
    parser.add_argument("--cold-curve", action="store_true", help="also measure the selection cases' HR@10 after every epoch (the variant's 'curve'; its time counts toward the budget)")
    parser.add_argument("--scales", default="", help="also fit a * s + b to new items' scores on the validation users' cross-entropy, for each a here (e.g. 0.8,1,1.25,1.5,2,3), and report HR@10 under each; the variant's 'scale_calibration'")
    parser.add_argument("--offsets", default="", help="also HR@10 with this much added to every new item's score (the service's new_item_boost), for each value here (e.g. 0,0.25,0.5): the yardstick for --scales; the variant's 'offsets'")
    parser.add_argument("--new-items", default="0,1,2,3", help="also report HR@10 with at least m of the 10 places kept for never-trained items (the service's new_items), for each m here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    settings.apply_environment()

    _, base_model, base_train = parse_variant("base:" + ",".join(args.set), TextSASRecConfig(max_len=200), TrainConfig(max_minutes=args.minutes, patience=1000, progress=False))
    data = load(args.data)
    embeddings = embed_items(data["texts"], TextEncoderConfig(), settings.cache_dir())
    n_items = data["n_items"]

    cold, cold_train = cold_items(data["train"], n_items, seed=1)  # not the test experiment's seed 0: other items
    has_id = trained_mask(cold_train, n_items)
    picked = [i for i, s in enumerate(data["train"]) if cold[s[-1]] and (~cold[s[:-1]]).sum() >= 1]
    sel_inputs = [data["train"][i][:-1][~cold[data["train"][i][:-1]]] for i in picked]
    sel_targets = np.array([data["train"][i][-1] for i in picked])
    val_inputs, val_targets = data["valid"]
    warm_val = ~cold[val_targets]
    log.info("%d items removed; %d selection cases (training users whose last item is removed); %d warm validation cases", cold.sum(), len(picked), warm_val.sum())

    commit, dirty = git_state()
    results = {"git_commit": commit, "git_dirty": dirty, "protocol": __doc__.split("\n\n")[1].replace("\n", " "), "removed_items": int(cold.sum()), "selection_cases": len(picked), "minutes_each": args.minutes, "variants": {}}
    warm_cases = np.flatnonzero(warm_val)
    popularity = np.bincount(np.concatenate(data["train"]), minlength=n_items + 1)
    results["popularity_yardstick"] = popularity_yardstick(popularity, sel_inputs, sel_targets, cold, [val_inputs[i] for i in warm_cases],
                                                           val_targets[warm_cases], ~cold & has_id)
    log.info("true popularity alone: cold target in the top 10 among the removed items %.3f, warm among as many trained items %.3f",
             results["popularity_yardstick"]["HR@10_among_removed_items"], results["popularity_yardstick"]["HR@10_among_as_many_trained_items"])
    def selection_hr(scores: np.ndarray) -> dict:
        return hr10(topk_of_scores(scores, 10), sel_targets, np.ones(len(sel_targets), dtype=bool))

    def cold_now(model) -> dict:  # --cold-curve: after every epoch
        return {"cold_HR@10": selection_hr(all_scores(model, sel_inputs))["HR@10"]}

    for text in args.variant:
        name, model_cfg, train_cfg = parse_variant(text, base_model, base_train)
        started = time.perf_counter()
        model, fitted = fit(name, data, embeddings, model_cfg, train_cfg, cold_train, has_id, cold_now if args.cold_curve else None)
        # Each case is scored once: every table and diagnostic below reads these.
        sel_scores = all_scores(model, sel_inputs)
        val_scores = all_scores(model, val_inputs)  # every validation user: the warm rows, and the fits' cross-entropy
        cold_hr = selection_hr(sel_scores) | cold_diagnostics(sel_scores, sel_targets, cold)
        warm = hr10(topk_of_scores(val_scores, 10), val_targets, warm_val)
        warm |= warm_among_subset(val_scores[warm_cases], val_targets[warm_cases], ~cold & has_id, int(cold.sum()))
        places = [int(m) for m in args.new_items.split(",") if m]
        # Selection cases (all cold) and warm validation cases in one table; new_item_places and
        # scale_calibration split them again.
        table = np.concatenate([sel_scores, val_scores[warm_cases]])
        table_targets = np.concatenate([sel_targets, val_targets[warm_cases]])
        reserved = new_item_places(table, table_targets, cold, places)
        scaled = shifted = None
        if args.scales:
            scaled = scale_calibration(table, table_targets, val_scores, val_targets, cold, [float(a) for a in args.scales.split(",")])
        if args.offsets:
            shifted = offset_curve(table, table_targets, val_scores, val_targets, cold, [float(b) for b in args.offsets.split(",")])
        results["variants"][name] = {
            "overrides": text.partition(":")[2],
            "cold_selection": cold_hr,
            "warm_validation": warm,
            "ratio": round(cold_hr["HR@10"] / warm["HR@10"], 3) if warm["HR@10"] else None,
            "new_items": reserved,
            **({"scale_calibration": scaled} if scaled else {}),
            **({"offsets": shifted} if shifted else {}),
            "epochs": len(fitted.curve),
            "best_epoch": fitted.best_epoch,
            "curve": fitted.curve,
            "best_val_NDCG@10": fitted.best_val.get("NDCG@10"),
            "wall_s": round(time.perf_counter() - started, 1),
            "config": {"model": asdict(model_cfg), "train": asdict(train_cfg)},
        }
        log.info("%s: cold HR@10 %.4f  warm val HR@10 %.4f NDCG@10 %.4f  ratio %s", name, cold_hr["HR@10"], warm["HR@10"], warm["NDCG@10"], results["variants"][name]["ratio"])
        args.out.write_text(json.dumps(results, indent=2))

    print(f"\n{'variant':<16} {'cold HR@10':>10} {'warm HR@10':>10} {'warm NDCG@10':>12} {'ratio':>6}")
    for name, v in results["variants"].items():
        print(f"{name:<16} {v['cold_selection']['HR@10']:10.4f} {v['warm_validation']['HR@10']:10.4f} {v['warm_validation']['NDCG@10']:12.4f} {v['ratio']:>6}")
    print(f"\n{'variant':<16} {'new_items':>9} {'cold HR@10':>10} {'warm HR@10':>10} {'ratio':>6}")
    for name, v in results["variants"].items():
        for row in v["new_items"]:
            print(f"{name:<16} {row['new_items']:>9} {row['cold_HR@10']:10.4f} {row['warm_HR@10']:10.4f} {row['ratio']:>6}")
    for name, v in results["variants"].items():
        if "offsets" in v:
            print(f"\n{name}: b added to new items' scores (lowest validation cross-entropy at {v['offsets']['calibrated_offset']})")
            for row in v["offsets"]["rows"]:
                print(f"  b {row['offset']:<5}  val NLL {row['validation_nll']:.4f}  cold HR@10 {row['cold_HR@10']:.4f}  warm {row['warm_HR@10']:.4f}  ratio {row['ratio']}")
        if "scale_calibration" in v:
            print(f"\n{name}: new items' scores as a * s + b, b fitted on the validation cross-entropy (fitted: {v['scale_calibration']['fitted']})")
            for row in v["scale_calibration"]["rows"]:
                print(f"  a {row['scale']:<5} b {row['offset']:>6}  val NLL {row['validation_nll']:.4f}  cold HR@10 {row['cold_HR@10']:.4f}  warm {row['warm_HR@10']:.4f}  ratio {row['ratio']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
