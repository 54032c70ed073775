"""Evaluation: full-ranking next-item metrics (overall and by target slice; sampled-negative metrics on
request) for the model, the popularity baseline and the champion."""

from components.evaluation.metrics import KS, bootstrap_ci, coverage, metrics_from_ranks, ranks_from_topk
from components.evaluation.rankers import model_topk, popularity_topk

__all__ = [
    "KS",
    "bootstrap_ci",
    "coverage",
    "metrics_from_ranks",
    "model_topk",
    "popularity_topk",
    "ranks_from_topk",
]
