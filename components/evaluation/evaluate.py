"""The evaluation step: candidate, popularity, the id-only baseline (when trained) and (when one exists)
the champion, ranked on the same held-out test cases with the same protocol, so the gate compares like
with like.

Always: full-ranking metrics (every catalog item is a candidate), bootstrap intervals, and the same
metrics on slices of the cases (components/evaluation/slices.py: cold-start, warm, long-tail and head
targets). On request (`sampled`): the target ranked among N sampled negatives as well, under keys
prefixed `sampled_` (components/evaluation/sampled.py) — never instead of the full ranking, which the
gate reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from components.evaluation import sampled as sampling
from components.evaluation.bundle import bundle_topk, ids_to_indices
from components.evaluation.metrics import bootstrap_ci, coverage, metrics_from_ranks, per_case, ranks_from_topk
from components.evaluation.rankers import model_scores, model_topk, popularity_scores, popularity_topk
from components.evaluation.slices import case_slices, empty_slices, slice_metrics
from serving.contract import MAX_K

SLICE_K = 10  # slices report HR and NDCG at this cut-off (or the list length, if shorter)


@dataclass
class EvaluationReport:
    cases: int  # test cases ranked
    list_len: int  # top-K list length the rankers returned
    exclude_seen: bool  # items of a case's input were not candidates
    results: dict[str, dict]  # ranker ("model", "id_only", "popularity", "champion") -> metric -> value; full ranking, plus sampled_* keys on request
    intervals: dict[str, dict] = field(default_factory=dict)  # ranker -> {"NDCG@10": [lo, hi], ...} (full ranking, 95 % bootstrap)
    slices: dict[str, dict] = field(default_factory=dict)  # ranker -> slice -> {"HR@10", "NDCG@10", "cases"} (full ranking)
    split: str = "leave_one_out"  # how the test cases were cut (PrepareConfig.split)
    sampled_negatives: int | None = None  # negatives per case behind the sampled_* metrics; None = not computed
    notes: list[str] = field(default_factory=list)  # what was left out of the results, and why

    def to_dict(self) -> dict:
        return {
            "cases": self.cases,
            "list_len": self.list_len,
            "exclude_seen": self.exclude_seen,
            "split": self.split,
            "sampled_negatives": self.sampled_negatives,
            "results": self.results,
            "ci95": self.intervals,
            "slices": self.slices,
            "notes": self.notes,
        }

    def text_behind_baseline(self) -> str | None:
        """A warning when the id-only baseline's NDCG@10 lies above the text-aware model's whole 95 % interval:
        on this data the item text does not help the model (yet). None when it does not, or without a baseline."""
        base, model = self.results.get("id_only"), self.results["model"]
        interval = self.intervals.get("model", {}).get("NDCG@10")
        if not base or not interval or base["NDCG@10"] <= interval[1]:
            return None
        return (
            f"the id-only baseline (NDCG@10 {base['NDCG@10']:.4f}) beats the text-aware model ({model['NDCG@10']:.4f}, "
            f"95 % interval {interval[0]:.4f}–{interval[1]:.4f}): on this data the item text does not help the model yet. "
            f"Check what the items' text says (title, category, brand, description: does it tell items apart?) or give "
            f"training more time (train.max_minutes); the gate compares with popularity and the champion, not with this baseline "
            f"(gate.beat_id_only makes it)"
        )

    def flat_metrics(self) -> dict[str, float]:
        """Every number under one flat name, as MLflow records them: the model's unprefixed (`NDCG@10`,
        `sampled_NDCG@10`, `cold_start_HR@10`, `cold_start_cases`), every other ranker's prefixed with its
        name (`popularity_NDCG@10`, `champion_head_HR@10`)."""
        out: dict[str, float] = {}
        for ranker, metrics in self.results.items():
            prefix = "" if ranker == "model" else f"{ranker}_"
            out.update({f"{prefix}{key}": value for key, value in metrics.items()})
            for name, values in self.slices.get(ranker, {}).items():
                out.update({f"{prefix}{name}_{key}": value for key, value in values.items()})
        return out


def evaluate_rankers(
    model,
    prepared,
    list_len: int = 20,
    exclude_seen: bool = True,
    champion_bundle: Path | None = None,
    *,
    sampled: int | None = None,
    seed: int = 0,
    baselines: dict | None = None,
) -> EvaluationReport:
    """Rank `prepared`'s test cases with the model, popularity and (given its bundle) the champion.

    baselines: more torch models to rank the same cases with, by name (e.g. {"id_only": model}); they are
    reported like the model (metrics, intervals, slices, sampled metrics).

    sampled: also rank each target among this many uniformly sampled negatives (drawn with `seed`,
    never an input item or the target; the same negatives for every ranker) and add the result as
    `sampled_*` keys. The champion gets none: its ONNX graph returns only its top MAX_K items, so the
    rank of a target among sampled negatives is not always known.
    """
    inputs, targets = prepared.test_split()
    baselines = baselines or {}
    tops = {
        "model": model_topk(model, inputs, list_len, exclude_seen),
        **{name: model_topk(baseline, inputs, list_len, exclude_seen) for name, baseline in baselines.items()},
        "popularity": popularity_topk(prepared.train, inputs, prepared.n_items, list_len, exclude_seen),
    }
    if champion_bundle is not None:
        id_histories = [[prepared.item_ids[i - 1] for i in h] for h in inputs]
        index_of = {item: i + 1 for i, item in enumerate(prepared.item_ids)}
        tops["champion"] = ids_to_indices(bundle_topk(champion_bundle, id_histories, list_len, exclude_seen), index_of, list_len)
    masks = case_slices(targets, prepared.train, prepared.n_items)
    notes = [f"slice '{name}': no test case has such a target, so it is left out" for name in empty_slices(masks)]
    results, intervals, slices = {}, {}, {}
    for name, top in tops.items():
        ranks = ranks_from_topk(top, targets)
        results[name] = metrics_from_ranks(ranks, top.shape[1]) | {"coverage@10": coverage(top, prepared.n_items)}
        cases = per_case(ranks, 10)
        intervals[name] = {metric: list(bootstrap_ci(values)) for metric, values in cases.items()}
        slices[name] = slice_metrics(ranks, masks, min(SLICE_K, top.shape[1]))
    if sampled is not None:
        negatives = sampling.sample_negatives(inputs, targets, prepared.n_items, sampled, seed)
        scores = {
            "model": model_scores(model, inputs, exclude_seen),
            **{name: model_scores(baseline, inputs, exclude_seen) for name, baseline in baselines.items()},
            "popularity": popularity_scores(prepared.train, inputs, prepared.n_items, exclude_seen),
        }
        for name, batches in scores.items():
            ranks = sampling.sampled_ranks(batches, targets, negatives)
            results[name] |= sampling.prefixed(metrics_from_ranks(ranks, list_len))
        if "champion" in tops:
            notes.append(f"champion: no sampled metrics — its ONNX graph returns only its top {MAX_K} items, so a target's rank among sampled negatives is not always known")
    return EvaluationReport(
        cases=len(targets),
        list_len=list_len,
        exclude_seen=exclude_seen,
        results=results,
        intervals=intervals,
        slices=slices,
        split=prepared.split,
        sampled_negatives=sampled,
        notes=notes,
    )
