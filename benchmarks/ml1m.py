"""MovieLens-1M next-item benchmark (SASRec/BERT4Rec/gSASRec protocol), CPU.

Protocol (as published): the SASRec version of ML-1M (6,040 users, 3,416 items), leave-one-out, full
ranking over all items, items of the input excluded, history length 200. Hyperparameters are chosen on
the 512 validation users only (`val/`); the test is the 3,261 users whose exact test input is known
(`test/input.recovered.tsv.gz`, targets in `test/output.txt`). Item text = "title. genres" from
`movies.dat` through `sas_to_original_items.txt`.

The data is read by path and never copied (research-only licence; see ../shared/data/ml-1m/README.md).

    .venv/bin/python benchmarks/ml1m.py                       # text model, id-only, popularity, cold start
    .venv/bin/python benchmarks/ml1m.py --minutes 60 --cold-minutes 15 --skip-cold
    .venv/bin/python benchmarks/ml1m.py --data /path/to/ml-1m --out benchmarks/results/ml1m.json

Results: a printed table, an MLflow run per variant (experiment "behaviorflow-benchmarks") and the
JSON file (default benchmarks/results/ml1m.json).
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from components import settings  # noqa: E402
from provenance import cpu_model, git_state  # noqa: E402 (benchmarks/ is on sys.path: scripts run from there)

settings.apply_environment()

import torch  # noqa: E402

from components.evaluation import bootstrap_ci, coverage, metrics_from_ranks, model_topk, popularity_topk, ranks_from_topk  # noqa: E402
from components.evaluation.metrics import per_case  # noqa: E402
from components.evaluation.rankers import model_scores, topk_of_scores  # noqa: E402
from components.evaluation.slices import case_slices, slice_metrics  # noqa: E402
from components.models.text_sasrec import TextSASRec, TextSASRecConfig  # noqa: E402
from components.tokenization import TextEncoderConfig, embed_items, item_tokens  # noqa: E402
from components.training import TrainConfig, train_model  # noqa: E402

log = logging.getLogger("benchmarks.ml1m")
GSASREC_NDCG10 = 0.1726


def read_lines(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        return [line.rstrip("\n") for line in f]


def load(data: Path) -> dict:
    sas = data / "sasrec-version"
    n_items = json.loads((sas / "dataset_stats.json").read_text())["num_items"]
    train = [np.array(line.split(), dtype=np.int64) for line in read_lines(sas / "train" / "input.txt.gz")]
    val_inputs = [np.array(line.split(), dtype=np.int64) for line in read_lines(sas / "val" / "input.txt")]
    val_targets = np.array([int(x) for x in read_lines(sas / "val" / "output.txt")], dtype=np.int64)
    test_all = np.array([int(x) for x in read_lines(sas / "test" / "output.txt")], dtype=np.int64)
    test_users, test_inputs = [], []
    for line in read_lines(sas / "test" / "input.recovered.tsv.gz"):
        user, items = line.split("\t")
        test_users.append(int(user))
        test_inputs.append(np.array(items.split(), dtype=np.int64))
    test_targets = test_all[np.array(test_users) - 1]
    # Item text: sas id -> original MovieLens id -> "Title (year). Genre, Genre"
    to_original = dict(tuple(map(int, line.split())) for line in read_lines(sas / "sas_to_original_items.txt"))
    movies = {}
    with open(data / "movies.dat", encoding="iso-8859-1") as f:
        for line in f:
            movie_id, title, genres = line.rstrip("\n").split("::")
            movies[int(movie_id)] = f"{title}. {', '.join(genres.split('|'))}"
    texts = [movies[to_original[i]] for i in range(1, n_items + 1)]
    tokens, vocab = item_tokens(texts, TextEncoderConfig(), settings.cache_dir())  # for model.token_embeddings
    return {"n_items": n_items, "train": train, "valid": (val_inputs, val_targets), "test": (test_inputs, test_targets), "texts": texts,
            "tokens": tokens, "token_vocab": vocab}


def evaluate(topk: np.ndarray, targets: np.ndarray, n_items: int, train: list[np.ndarray] | None = None) -> dict:
    """Full-ranking metrics with 95 % bootstrap intervals; given the training sequences, also HR/NDCG@10
    by the target's training popularity (long tail, head; components/evaluation/slices.py)."""
    ranks = ranks_from_topk(topk, targets)
    out = metrics_from_ranks(ranks, topk.shape[1]) | {"coverage@10": coverage(topk, n_items)}
    out["ci95"] = {m: [round(x, 4) for x in bootstrap_ci(v)] for m, v in per_case(ranks, 10).items()}
    out["cases"] = int(len(targets))
    if train is not None:
        out["slices"] = slice_metrics(ranks, case_slices(targets, train, n_items), 10)
    return out


def hr10(topk: np.ndarray, targets: np.ndarray, mask: np.ndarray) -> dict:
    ranks = ranks_from_topk(topk[mask], targets[mask])
    return {"HR@10": float((ranks < 10).mean()) if mask.any() else None, "NDCG@10": float(np.where(ranks < 10, 1 / np.log2(ranks + 2), 0).mean()) if mask.any() else None, "cases": int(mask.sum())}


def all_scores(model, inputs: list[np.ndarray]) -> np.ndarray:
    """The model's score of every item [len(inputs), n_items + 1] (seen items and padding -inf)."""
    return np.concatenate(list(model_scores(model, inputs)))


def items_above(scores: np.ndarray, targets: np.ndarray, cold: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, how many items score above the target: all of them, and the cold ones (strictly above:
    a tie goes to the target)."""
    above = scores > scores[np.arange(len(targets)), targets][:, None]
    return above.sum(1), (above & cold[None, :]).sum(1)


def places_hr(scores: np.ndarray, targets: np.ndarray, cold: np.ndarray, slots: list[int], k: int = 10) -> dict:
    """HR@k for each m in `slots` when the top k keeps at least m places for never-trained items, as the
    service's `new_items` does (serving.contract.keep_new_items): the best m of them replace the
    lowest-ranked trained items where the model's own top k holds fewer; m = 0 is the model as it is.
    A cold target is then a hit if the model ranks it in the top k or among the m best cold items; a
    trained target, if it stays among the k - max(c, m) best trained items, c being the cold items
    already in the model's top k."""
    rank_all, rank_cold = items_above(scores, targets, cold)
    rank_warm = rank_all - rank_cold
    top = np.argpartition(-scores, min(k, scores.shape[1] - 1), axis=1)[:, :k]
    c = (cold[top] & np.isfinite(np.take_along_axis(scores, top, 1))).sum(1)
    is_cold = cold[targets]
    return {m: float(np.where(is_cold, (rank_all < k) | (rank_cold < m), rank_warm < k - np.maximum(c, m)).mean()) for m in slots}


def new_item_places(scores: np.ndarray, targets: np.ndarray, cold: np.ndarray, places: list[int]) -> list[dict]:
    """Cold and warm HR@10 and their ratio for each `new_items` = m: what a given ratio costs on warm items."""
    is_cold = cold[targets]
    cold_hr = places_hr(scores[is_cold], targets[is_cold], cold, places)
    warm_hr = places_hr(scores[~is_cold], targets[~is_cold], cold, places)
    n_cold, n_warm = int(is_cold.sum()), int((~is_cold).sum())
    return [{"new_items": m, "cold_HR@10": round(cold_hr[m], 4), "warm_HR@10": round(warm_hr[m], 4),
             "all_HR@10": round((cold_hr[m] * n_cold + warm_hr[m] * n_warm) / (n_cold + n_warm), 4),
             "ratio": round(cold_hr[m] / warm_hr[m], 3) if warm_hr[m] else None} for m in places]


def new_item_scores(scores: np.ndarray, cold: np.ndarray, a: float, b: float) -> np.ndarray:
    """`scores` [cases, items] with every never-trained item's score s taken as a * s + b (the others as
    they are; -inf, an excluded item, stays -inf for a > 0)."""
    return np.where(cold[None, :], a * scores + b, scores)


def mean_nll(scores: np.ndarray, targets: np.ndarray) -> float:
    """The mean cross-entropy of `targets` under a softmax over each row of `scores`."""
    top = scores.max(1, keepdims=True)
    return float((np.log(np.exp(scores - top).sum(1)) + top[:, 0] - scores[np.arange(len(targets)), targets]).mean())


def offset_curve(test_scores: np.ndarray, test_targets: np.ndarray, val_scores: np.ndarray, val_targets: np.ndarray, cold: np.ndarray,
                 offsets: list[float], grid: np.ndarray = np.arange(-2.0, 3.0, 0.05)) -> dict:
    """Are the model's scores of never-trained items on the right scale? Adds an offset b to every cold
    item's score and reports, per b in `offsets`, the test users' HR@10 on cold, warm and all targets,
    and the validation users' mean cross-entropy (negative log-likelihood of their targets over the
    catalog). `calibrated_offset` is the b in `grid` with the lowest validation cross-entropy: 0 means
    the model gives new items, as a class, the probability the validation targets say they have (the
    offset a likelihood-trained correction would learn), and any b > 0 moves them up at warm items' cost."""
    def validation_nll(b: float) -> float:
        return mean_nll(new_item_scores(val_scores, cold, 1.0, b), val_targets)

    is_cold = cold[test_targets]
    rows = []
    for b in offsets:
        hit = items_above(new_item_scores(test_scores, cold, 1.0, b), test_targets, cold)[0] < 10
        rows.append({"offset": b, "cold_HR@10": round(float(hit[is_cold].mean()), 4), "warm_HR@10": round(float(hit[~is_cold].mean()), 4),
                     "all_HR@10": round(float(hit.mean()), 4), "ratio": round(float(hit[is_cold].mean() / hit[~is_cold].mean()), 3),
                     "validation_nll": round(validation_nll(b), 4)})
    nll = [validation_nll(b) for b in grid]
    best = int(np.argmin(nll))
    return {"rows": rows, "calibrated_offset": round(float(grid[best]), 2), "validation_cold_targets": int(cold[val_targets].sum()),
            "validation_nll_at_0": round(validation_nll(0.0), 4), "validation_nll_at_calibrated": round(nll[best], 4)}


def scale_calibration(scores: np.ndarray, targets: np.ndarray, val_scores: np.ndarray, val_targets: np.ndarray, cold: np.ndarray,
                      scales: list[float], offsets: np.ndarray = np.arange(-5.0, 5.0, 0.05)) -> dict:
    """offset_curve's question for the spread as well as the level: are never-trained items' scores too
    compressed? Each new item's score s becomes a * s + b; for each a in `scales`, b is the offset with
    the lowest validation cross-entropy (as `calibrated_offset`), and the row gives HR@10 on the cases
    (`scores`, `targets`) whose target is cold, on the others, and on all, under that (a, b). `fitted` is
    the (a, b) with the lowest cross-entropy of all: a > 1 would mean the likelihood itself asks for more
    spread between new items, which lifts the best of them."""
    is_cold = cold[targets]
    rows = []
    for a in scales:
        nll = [mean_nll(new_item_scores(val_scores, cold, a, b), val_targets) for b in offsets]
        b = float(offsets[int(np.argmin(nll))])
        hit = items_above(new_item_scores(scores, cold, a, b), targets, cold)[0] < 10
        cold_hr, warm_hr = float(hit[is_cold].mean()), float(hit[~is_cold].mean())
        rows.append({"scale": a, "offset": round(b, 2), "validation_nll": round(min(nll), 4), "cold_HR@10": round(cold_hr, 4),
                     "warm_HR@10": round(warm_hr, 4), "all_HR@10": round(float(hit.mean()), 4), "ratio": round(cold_hr / warm_hr, 3) if warm_hr else None})
    best = min(rows, key=lambda r: r["validation_nll"])
    return {"rows": rows, "fitted": {"scale": best["scale"], "offset": best["offset"]}, "validation_cold_targets": int(cold[val_targets].sum())}


def fit(name: str, data: dict, embeddings: np.ndarray, model_cfg: TextSASRecConfig, train_cfg: TrainConfig, train: list[np.ndarray], has_id: np.ndarray,
        epoch_metrics=None):
    torch.manual_seed(train_cfg.seed)
    tokens = torch.from_numpy(data["tokens"]) if model_cfg.token_embeddings and model_cfg.use_text else None
    model = TextSASRec(replace(model_cfg, n_items=data["n_items"], text_dim=embeddings.shape[1], token_vocab=data["token_vocab"]),
                       torch.from_numpy(embeddings), torch.from_numpy(has_id), tokens)
    log.info("%s: training for up to %.0f min", name, train_cfg.max_minutes)
    result = train_model(model, train, data["valid"], train_cfg, epoch_metrics=epoch_metrics)
    return model, result


def trained_mask(train: list[np.ndarray], n_items: int) -> np.ndarray:
    mask = np.zeros(n_items + 1, dtype=bool)
    for seq in train:
        mask[seq] = True
    mask[0] = False
    return mask


def cold_items(train: list[np.ndarray], n_items: int, seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """A random 10 % of the items as a mask [n_items + 1], and the training sequences without them."""
    rng = np.random.default_rng(seed)
    cold = np.zeros(n_items + 1, dtype=bool)
    cold[rng.choice(np.arange(1, n_items + 1), n_items // 10, replace=False)] = True
    return cold, [s[~cold[s]] for s in train]


def apply_overrides(overrides: list[str], model_cfg: TextSASRecConfig, train_cfg: TrainConfig, where: str = "--set"):
    """model.X=V / train.X=V strings (V read as YAML) applied to the two configs."""
    import yaml

    for text in overrides:
        key, value = text.split("=", 1)
        section, field = key.split(".")
        if section == "model":
            model_cfg = replace(model_cfg, **{field: yaml.safe_load(value)})
        elif section == "train":
            train_cfg = replace(train_cfg, **{field: yaml.safe_load(value)})
        else:
            raise SystemExit(f"{where} {text!r}: {key!r} must start with model. or train.")
    return model_cfg, train_cfg


def log_mlflow(name: str, params: dict, metrics: dict, curve: list[dict]) -> str:
    import mlflow

    from components.registry import configure

    configure("behaviorflow-benchmarks")
    with mlflow.start_run(run_name=f"ml1m-{name}") as run:
        mlflow.log_params({k: v for k, v in params.items() if not isinstance(v, dict)})
        mlflow.log_metrics({k.replace("@", "_at_"): v for k, v in metrics.items() if isinstance(v, (int, float))})
        for row in curve:
            mlflow.log_metrics({"val_NDCG_at_10": row["val_NDCG@10"], "train_loss": row["loss"]}, step=row["epoch"])
        return run.info.run_id


def full_data_models(results: dict, data: dict, embeddings: np.ndarray, model_cfg: TextSASRecConfig, train_cfg: TrainConfig, has_id: np.ndarray) -> None:
    """The text-aware model on the whole training data: test metrics, wall time, memory, learning curve."""
    n_items, (test_inputs, test_targets) = data["n_items"], data["test"]
    model, fit_text = fit("text", data, embeddings, model_cfg, train_cfg, data["train"], has_id)
    results["text"] = evaluate(model_topk(model, test_inputs, 20), test_targets, n_items, data["train"])
    results["train_wall_s"] = round(fit_text.wall_s, 1)
    results["peak_rss_mb"] = fit_text.peak_rss_mb  # the process's high-water mark when training ended
    results["epochs"] = len(fit_text.curve)
    results["learning_curve"] = [[round(r["minutes"], 2), round(r["val_NDCG@10"], 4)] for r in fit_text.curve]
    results["rss_curve"] = [[round(r["minutes"], 2), r["rss_mb"]] for r in fit_text.curve]  # resident MB at each epoch's end
    reached = [r["minutes"] for r in fit_text.curve if r["val_NDCG@10"] >= GSASREC_NDCG10]
    results["minutes_to_ndcg10_0.1726"] = round(reached[0], 2) if reached else None
    results["minutes_to_ndcg10_0.1726_note"] = "first epoch whose validation NDCG@10 (512 users) reached 0.1726"
    log_mlflow("text", {"variant": "text", **asdict(model_cfg), **asdict(train_cfg)}, {k: v for k, v in results["text"].items() if isinstance(v, float)}, fit_text.curve)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "ml-1m")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ml1m.json")
    parser.add_argument("--minutes", type=float, default=60.0, help="training budget of the text-aware model")
    parser.add_argument("--id-minutes", type=float, default=30.0, help="training budget of the id-only variant")
    parser.add_argument("--cold-minutes", type=float, default=15.0, help="training budget of each cold-start model")
    parser.add_argument("--skip-cold", action="store_true")
    parser.add_argument("--skip-id", action="store_true")
    parser.add_argument("--skip-text", action="store_true", help="no text-aware model on the full data (e.g. an id-only run at another budget)")
    parser.add_argument("--cold-only", action="store_true", help="only popularity and the cold-start experiment (no full-data models)")
    parser.add_argument("--cold-models", default="text,id_only", help="cold-start models to train: text, id_only or both")
    parser.add_argument("--set", action="append", default=[], metavar="model.X=V|train.X=V", help="override a model/train field")
    parser.add_argument("--new-items", default="0,1,2,3", help="cold start: also HR@10 with at least m of the 10 places kept for never-trained items (the service's new_items), for each m here")
    parser.add_argument("--cold-scales", default="", help="cold start: also HR@10 with every never-trained item's score s taken as a * s + b, b fitted on the validation users' cross-entropy, for each a here (e.g. 1,1.25,1.5,2)")
    parser.add_argument("--cold-offsets", default="0,0.25,0.5,0.75,1", help="cold start: also HR@10 with this much added to every never-trained item's score (the service's new_item_boost), for each value here, and the offset that fits the validation users best")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(max(1, torch.get_num_threads()))

    # Protocol settings (max_len 200 is part of the published protocol) + our training defaults.
    model_cfg = TextSASRecConfig(max_len=200)
    train_cfg = TrainConfig(max_minutes=args.minutes, patience=1000, progress=False)
    model_cfg, train_cfg = apply_overrides(args.set, model_cfg, train_cfg)

    started = time.perf_counter()
    # The code that runs is the code at start: commits made while a long run goes on don't change it.
    commit, dirty = git_state()
    data = load(args.data)
    embeddings = embed_items(data["texts"], TextEncoderConfig(), settings.cache_dir())
    n_items, (test_inputs, test_targets) = data["n_items"], data["test"]
    log.info("loaded: %d train users, %d val, %d test, %d items (%.0f s)", len(data["train"]), len(data["valid"][1]), len(test_targets), n_items, time.perf_counter() - started)
    def save(stage: str) -> None:
        """Write what is measured so far (a long run that is stopped keeps its finished stages)."""
        results["stage"] = stage
        results["total_wall_s"] = round(time.perf_counter() - started, 1)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))

    results: dict = {"git_commit": commit, "git_dirty": dirty, "command": "python benchmarks/ml1m.py " + " ".join(argv if argv is not None else sys.argv[1:]), "protocol": "ML-1M SASRec version, leave-one-out, full ranking over 3,416 items, input items excluded, max_len 200; 512 validation users for selection, 3,261 test users", "config": {"model": asdict(model_cfg), "train": asdict(train_cfg)}}

    pop = popularity_topk(data["train"], test_inputs, n_items, 20)
    results["popularity"] = evaluate(pop, test_targets, n_items, data["train"])

    has_id = trained_mask(data["train"], n_items)
    if not (args.cold_only or args.skip_text):
        full_data_models(results, data, embeddings, model_cfg, train_cfg, has_id)
        save("text")

    if not (args.skip_id or args.cold_only):
        id_cfg = replace(model_cfg, use_text=False)
        id_model, fit_id = fit("id_only", data, embeddings, id_cfg, replace(train_cfg, max_minutes=args.id_minutes), data["train"], has_id)
        results["id_only"] = evaluate(model_topk(id_model, test_inputs, 20), test_targets, n_items, data["train"])
        results["id_only"]["train_wall_s"] = round(fit_id.wall_s, 1)
        results["id_only"]["learning_curve"] = [[round(r["minutes"], 2), round(r["val_NDCG@10"], 4)] for r in fit_id.curve]
        log_mlflow("id_only", {"variant": "id_only", **asdict(id_cfg)}, {k: v for k, v in results["id_only"].items() if isinstance(v, float)}, fit_id.curve)
        save("id_only")

    if not args.skip_cold:
        # Cold start: 10 % of items removed from training entirely; test cases whose target is one of them.
        cold, cold_train = cold_items(data["train"], n_items, seed=0)
        cold_has_id = trained_mask(cold_train, n_items)
        cold_cases = cold[test_targets]
        cold_cfg = replace(train_cfg, max_minutes=args.cold_minutes)
        results["cold_start"] = {"removed_items": int(cold.sum()), "cold_cases": int(cold_cases.sum()), "train_minutes_each": args.cold_minutes}
        wanted = set(args.cold_models.split(","))
        if wanted - {"text", "id_only"}:
            raise SystemExit(f"--cold-models: unknown {sorted(wanted - {'text', 'id_only'})}; choose from text, id_only")
        for name in [n for n in ("text", "id_only") if n in wanted]:
            cfg = model_cfg if name == "text" else replace(model_cfg, use_text=False)
            m, _ = fit(f"cold-{name}", data, embeddings, cfg, cold_cfg, cold_train, cold_has_id)
            scores = all_scores(m, test_inputs)  # scored once (45 MB): the top 20 and both policy tables come from it
            top = topk_of_scores(scores, 20)
            results["cold_start"][name] = hr10(top, test_targets, cold_cases)
            if name == "text":
                results["cold_start"]["warm_text"] = hr10(top, test_targets, ~cold_cases)
                results["cold_start"]["new_items"] = new_item_places(scores, test_targets, cold, [int(p) for p in args.new_items.split(",") if p])
                val_scores = all_scores(m, data["valid"][0])
                results["cold_start"]["offsets"] = offset_curve(scores, test_targets, val_scores, data["valid"][1], cold,
                                                                [float(b) for b in args.cold_offsets.split(",") if b])
                if args.cold_scales:
                    results["cold_start"]["scales"] = scale_calibration(scores, test_targets, val_scores, data["valid"][1], cold,
                                                                        [float(a) for a in args.cold_scales.split(",") if a])
            save(f"cold_start-{name}")
        warm = results["cold_start"].get("warm_text", {}).get("HR@10")
        results["cold_start"]["text_vs_warm_ratio"] = round(results["cold_start"]["text"]["HR@10"] / warm, 3) if warm else None

    results["machine"] = machine_line()
    save("done")
    print_table(results)
    return 0


def machine_line() -> str:
    """The result's "machine": torch's threads and the CPU's name."""
    cpu = cpu_model()
    return f"{torch.get_num_threads()} torch threads, CPU" + (f" ({cpu})" if cpu else "")


def print_table(r: dict) -> None:
    print("\nML-1M, 3,261 test users, full ranking (95 % bootstrap CI)")
    print(f"{'model':<12} {'HR@10':>8} {'CI':>17} {'NDCG@10':>8} {'CI':>17} {'HR@20':>8} {'NDCG@20':>8}")
    for name in ("text", "id_only", "popularity"):
        if name in r:
            m = r[name]
            print(f"{name:<12} {m['HR@10']:8.4f} {str(m['ci95']['HR@10']):>17} {m['NDCG@10']:8.4f} {str(m['ci95']['NDCG@10']):>17} {m['HR@20']:8.4f} {m['NDCG@20']:8.4f}")
    for name in ("text", "id_only", "popularity"):
        if "slices" in r.get(name, {}):
            parts = [f"{slice_name.replace('_', ' ')} {v['HR@10']:.4f} / {v['NDCG@10']:.4f} ({v['cases']} cases)" for slice_name, v in r[name]["slices"].items()]
            print(f"{name:<12} HR@10 / NDCG@10 by target: " + " · ".join(parts))
    if "text" in r:
        print(f"training wall time {r['train_wall_s']} s, peak RSS {r['peak_rss_mb']} MB, minutes to val NDCG@10 ≥ 0.1726: {r['minutes_to_ndcg10_0.1726']}")
    if "cold_start" in r:
        c = r["cold_start"]
        hr = lambda name: f"{c[name]['HR@10']:.4f}" if name in c else "not run"  # noqa: E731
        print(f"cold start ({c['removed_items']} items removed, {c['cold_cases']} test cases): text HR@10 {hr('text')}, id-only {hr('id_only')}, warm text {hr('warm_text')} (ratio {c['text_vs_warm_ratio']})")
        for row in c.get("new_items", []):
            print(f"  new_items={row['new_items']}: cold HR@10 {row['cold_HR@10']:.4f}, warm {row['warm_HR@10']:.4f}, "
                  f"all {row.get('all_HR@10', float('nan')):.4f} (ratio {row['ratio']})")
        if "offsets" in c:
            o = c["offsets"]
            print(f"  cold items' score offset with the lowest validation cross-entropy: {o['calibrated_offset']} "
                  f"({o['validation_cold_targets']} cold validation targets; NLL {o['validation_nll_at_calibrated']} against {o['validation_nll_at_0']} at 0)")
            for row in o["rows"]:
                print(f"  offset {row['offset']}: cold HR@10 {row['cold_HR@10']:.4f}, warm {row['warm_HR@10']:.4f}, all {row['all_HR@10']:.4f} "
                      f"(ratio {row['ratio']}); validation cross-entropy {row['validation_nll']}")
        if "scales" in c:
            print(f"  cold items' scores as a * s + b, b fitted on the validation cross-entropy (lowest overall: {c['scales']['fitted']})")
            for row in c["scales"]["rows"]:
                print(f"  a {row['scale']} (b {row['offset']}): cold HR@10 {row['cold_HR@10']:.4f}, warm {row['warm_HR@10']:.4f}, all {row['all_HR@10']:.4f} "
                      f"(ratio {row['ratio']}); validation cross-entropy {row['validation_nll']}")


if __name__ == "__main__":
    sys.exit(main())
