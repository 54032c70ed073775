"""Top-K item lists from the rankers we compare: the trained model (torch) and popularity."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def popularity_topk(train: Sequence[np.ndarray], histories: Sequence[np.ndarray], n_items: int, k: int, exclude_seen: bool = True) -> np.ndarray:
    """Most frequent training items first (ties by lower index), skipping each history's items if asked."""
    counts = np.bincount(np.concatenate([np.asarray(s, dtype=np.int64) for s in train] or [np.zeros(0, np.int64)]), minlength=n_items + 1)
    counts[0] = -1  # padding is never recommended
    order = np.argsort(-counts, kind="stable")
    order = order[order != 0]
    k = min(k, n_items)
    out = np.zeros((len(histories), k), dtype=np.int64)
    for row, history in enumerate(histories):
        if exclude_seen:
            seen = set(np.asarray(history).tolist())
            picked = [i for i in order[: k + len(seen)] if i not in seen][:k]
        else:
            picked = order[:k]
        out[row, : len(picked)] = picked
    return out


def model_topk(model, histories: Sequence[np.ndarray], k: int, exclude_seen: bool = True, batch_size: int = 256, device: str | None = None) -> np.ndarray:
    """Full-ranking top-K of a TextSASRec-like model (anything with `.cfg`, `.item_table()`, `.encode()`)."""
    import torch

    from serving.contract import pad_histories

    was_training = model.training
    model.eval()
    device = device or next(model.parameters()).device
    k = min(k, model.cfg.n_items)
    out = []
    with torch.inference_mode():
        table = model.item_table()
        for start in range(0, len(histories), batch_size):
            batch = torch.from_numpy(pad_histories(histories[start : start + batch_size], model.cfg.max_len)).to(device)
            scores = model.encode(batch, table)[:, -1] @ table.T  # (B, n_items + 1)
            scores[:, 0] = float("-inf")
            if exclude_seen:
                scores.scatter_(1, batch, float("-inf"))
            out.append(torch.topk(scores, k, dim=1).indices.cpu().numpy())
    model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, k), dtype=np.int64)
