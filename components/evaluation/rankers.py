"""Top-K item lists — and full score rows, for sampled evaluation — from the rankers we compare: the
trained model (torch) and popularity."""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np


def item_counts(train: Sequence[np.ndarray], n_items: int) -> np.ndarray:
    """How often each item index occurs in the training sequences: int64 [n_items + 1] (0 = padding)."""
    steps = [np.asarray(s, dtype=np.int64) for s in train]
    return np.bincount(np.concatenate(steps or [np.zeros(0, np.int64)]), minlength=n_items + 1)


def popularity_order(counts: np.ndarray) -> np.ndarray:
    """Item indices by training count (item_counts), most frequent first, ties to the lower index; padding left out."""
    return np.argsort(-counts[1:], kind="stable") + 1


def popularity_topk(train: Sequence[np.ndarray], histories: Sequence[np.ndarray], n_items: int, k: int, exclude_seen: bool = True) -> np.ndarray:
    """Most frequent training items first (ties by lower index), skipping each history's items if asked; [N, k],
    places no item fills (a catalog smaller than k) 0, as in model_topk."""
    order = popularity_order(item_counts(train, n_items))
    out = np.zeros((len(histories), k), dtype=np.int64)
    for row, history in enumerate(histories):
        if exclude_seen:
            seen = set(np.asarray(history).tolist())
            picked = [i for i in order[: k + len(seen)] if i not in seen][:k]
        else:
            picked = order[:k]
        out[row, : len(picked)] = picked
    return out


def popularity_record(train: Sequence[np.ndarray], item_ids: Sequence[str]) -> dict:
    """The bundle's popularity list (serving.contract.POPULARITY_FIELD): the popularity ranker's top
    MAX_K items for an empty history, as item ids with their training counts, most frequent first (ties to
    the lower index), items never in training left out; and the training interactions they are shares of.
    The service and batch prediction answer a history with no known item with it."""
    from serving.contract import MAX_K

    counts = item_counts(train, len(item_ids))
    top = [int(i) for i in popularity_order(counts)[:MAX_K] if counts[i] > 0]
    return {"interactions": int(counts[1:].sum()), "items": [{"item_id": item_ids[i - 1], "count": int(counts[i])} for i in top]}


def popularity_scores(train: Sequence[np.ndarray], histories: Sequence[np.ndarray], n_items: int, exclude_seen: bool = True, batch_size: int = 256) -> Iterator[np.ndarray]:
    """Score rows [B, n_items + 1] per batch: the training count; -inf for padding and, if asked, seen items."""
    counts = item_counts(train, n_items).astype(np.float64)
    counts[0] = -np.inf
    for start in range(0, len(histories), batch_size):
        chunk = histories[start : start + batch_size]
        scores = np.repeat(counts[None, :], len(chunk), axis=0)
        if exclude_seen:
            for row, history in enumerate(chunk):
                scores[row, np.asarray(history, dtype=np.int64)] = -np.inf
        yield scores


def _model_score_batches(model, histories: Sequence[np.ndarray], exclude_seen: bool, batch_size: int, device):
    """Score rows [B, n_items + 1] (torch, on the model's device) per batch of histories: -inf for
    padding, for items the model cannot represent (`model.unscorable`) and, with `exclude_seen`, for
    every item of the history."""
    import torch

    from serving.contract import pad_histories

    was_training = model.training
    model.eval()
    device = device or next(model.parameters()).device
    try:
        with torch.inference_mode():
            table = model.item_table()
            for start in range(0, len(histories), batch_size):
                chunk = histories[start : start + batch_size]
                batch = torch.from_numpy(pad_histories(chunk, model.cfg.max_len)).to(device)  # the last max_len steps
                scores = model.encode(batch, table, last_only=True)[:, -1] @ table.T  # (B, n_items + 1)
                scores.masked_fill_(model.unscorable, float("-inf"))  # padding, and items the model cannot represent
                if exclude_seen:  # the whole history, also the steps before the model's window (as serving does)
                    seen = pad_histories(chunk, max((len(h) for h in chunk), default=1))
                    scores.scatter_(1, torch.from_numpy(seen).to(device), float("-inf"))
                yield scores
    finally:
        model.train(was_training)


def model_topk(model, histories: Sequence[np.ndarray], k: int, exclude_seen: bool = True, batch_size: int = 256, device: str | None = None) -> np.ndarray:
    """Full-ranking top-K of a TextSASRec-like model (anything with `.cfg`, `.item_table()`, `.encode()`).
    Where fewer than K items can be ranked (a tiny catalog, a long history), the rest of the row is 0
    (padding, never a target): an excluded or unscorable item is never listed, as in serving. The rows keep k
    places even for a catalog smaller than k, so that a target left out has rank k: a miss at every cut-off."""
    out = [topk_of_scores(scores, k) for scores in _model_score_batches(model, histories, exclude_seen, batch_size, device)]
    return np.concatenate(out) if out else np.zeros((0, k), dtype=np.int64)


def topk_of_scores(scores, k: int) -> np.ndarray:
    """The k best item indices of each row of `scores` (torch [B, n_items + 1]), an unrankable (-inf) place
    given as 0, and so are the places beyond the catalog when it is smaller than k: model_topk's answer from
    scores already computed (model_scores)."""
    import torch

    scores = torch.as_tensor(scores)
    values, indices = torch.topk(scores, min(k, scores.shape[1]), dim=1)
    top = indices.masked_fill(values == float("-inf"), 0).cpu().numpy()
    return np.pad(top, ((0, 0), (0, k - top.shape[1]))) if top.shape[1] < k else top


def model_scores(model, histories: Sequence[np.ndarray], exclude_seen: bool = True, batch_size: int = 256, device: str | None = None) -> Iterator[np.ndarray]:
    """Score rows [B, n_items + 1] (float32 numpy) per batch, masked as in `model_topk`."""
    for scores in _model_score_batches(model, histories, exclude_seen, batch_size, device):
        yield scores.float().cpu().numpy()
