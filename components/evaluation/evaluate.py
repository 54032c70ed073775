"""The evaluation step: candidate, popularity and (when one exists) the champion, ranked on the same
held-out test cases with the same protocol, so the gate compares like with like."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from components.evaluation.bundle import bundle_topk, ids_to_indices
from components.evaluation.metrics import bootstrap_ci, coverage, metrics_from_ranks, per_case, ranks_from_topk
from components.evaluation.rankers import model_topk, popularity_topk


@dataclass
class EvaluationReport:
    cases: int
    list_len: int
    exclude_seen: bool
    results: dict[str, dict]  # ranker -> metrics ("model", "popularity", "champion")
    intervals: dict[str, dict] = field(default_factory=dict)  # ranker -> {"NDCG@10": [lo, hi], ...}

    def to_dict(self) -> dict:
        return {"cases": self.cases, "list_len": self.list_len, "exclude_seen": self.exclude_seen, "results": self.results, "ci95": self.intervals}


def evaluate_rankers(model, prepared, list_len: int = 20, exclude_seen: bool = True, champion_bundle: Path | None = None) -> EvaluationReport:
    inputs, targets = prepared.test_split()
    tops = {
        "model": model_topk(model, inputs, list_len, exclude_seen),
        "popularity": popularity_topk(prepared.train, inputs, prepared.n_items, list_len, exclude_seen),
    }
    if champion_bundle is not None:
        id_histories = [[prepared.item_ids[i - 1] for i in h] for h in inputs]
        index_of = {item: i + 1 for i, item in enumerate(prepared.item_ids)}
        tops["champion"] = ids_to_indices(bundle_topk(champion_bundle, id_histories, list_len, exclude_seen), index_of, list_len)
    results, intervals = {}, {}
    for name, top in tops.items():
        ranks = ranks_from_topk(top, targets)
        results[name] = metrics_from_ranks(ranks, top.shape[1]) | {"coverage@10": coverage(top, prepared.n_items)}
        cases = per_case(ranks, 10)
        intervals[name] = {metric: list(bootstrap_ci(values)) for metric, values in cases.items()}
    return EvaluationReport(cases=len(targets), list_len=list_len, exclude_seen=exclude_seen, results=results, intervals=intervals)
