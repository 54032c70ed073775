"""A tiny but real model bundle for serving tests, and an independent numpy reference of its ranking.

The ONNX graph honours `serving.contract` exactly (names, dtypes, shapes, K = min(MAX_K, n_items)) and
computes a mean-of-history-embeddings recommender:

    user   = mean(E[h] for h in history if h != PAD)            # (B, D); an all-padding row gives 0
    scores = user @ E.T                                          # (B, n_items + 1)
    scores[:, PAD] = -inf; scores[b, history[b]] = -inf  where exclude_seen[b]
    top_scores, top_items = TopK(scores, K)
    user_vector = user

and the bundle's item_vectors.npy is E itself, so score(i) = user_vector · item_vectors[i] holds exactly.
Its "training interactions" are its users' histories: the manifest's popularity list (the answer for an
empty history) is what export writes for them (components.evaluation.rankers.popularity_record).
It is built with `onnx.helper` so serving can be tested before (and independently of) the torch exporter.
The reference functions at the end recompute every answer with plain numpy, from E alone.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from serving import contract

MAX_LEN = 20
REGISTRY_VERSION = "7"
MODEL_NAME = "tiny-recommender"
CREATED_AT = "2024-05-01T12:00:00+00:00"


def item_id(index: int) -> str:
    """The item id of 1-based item `index` ("i001", ...)."""
    return f"i{index:03d}"


def embeddings(n_items: int, dim: int, seed: int) -> np.ndarray:
    """The item table E (n_items + 1, dim) float32; row PAD_INDEX is zeros."""
    table = np.random.default_rng(seed).normal(size=(n_items + 1, dim)).astype(np.float32)
    table[contract.PAD_INDEX] = 0.0
    return table


def _graph(table: np.ndarray) -> onnx.ModelProto:
    n_rows, dim = table.shape
    k = min(contract.MAX_K, n_rows - 1)
    history, exclude = contract.INPUT_HISTORY, contract.INPUT_EXCLUDE_SEEN
    consts = [
        numpy_helper.from_array(table, "E"),
        numpy_helper.from_array(np.ascontiguousarray(table.T), "E_T"),
        numpy_helper.from_array(np.array(contract.PAD_INDEX, np.int64), "pad"),
        numpy_helper.from_array(np.arange(n_rows, dtype=np.int64).reshape(1, 1, n_rows), "all_items"),
        numpy_helper.from_array((np.arange(n_rows) == contract.PAD_INDEX).reshape(1, n_rows), "pad_col"),
        numpy_helper.from_array(np.array(-np.inf, np.float32), "neg_inf"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(np.array([2], np.int64), "axis2"),
        numpy_helper.from_array(np.array([k], np.int64), "k"),
    ]
    node = helper.make_node
    nodes = [
        # user vector: masked mean of the history's embeddings
        node("Gather", ["E", history], ["emb"], axis=0),                        # (B, S, D)
        node("Equal", [history, "pad"], ["is_pad"]),
        node("Not", ["is_pad"], ["is_item"]),
        node("Cast", ["is_item"], ["mask"], to=TensorProto.FLOAT),              # (B, S)
        node("Unsqueeze", ["mask", "axis2"], ["mask3"]),                        # (B, S, 1)
        node("Mul", ["emb", "mask3"], ["masked"]),
        node("ReduceSum", ["masked", "axis1"], ["total"], keepdims=0),          # (B, D)
        node("ReduceSum", ["mask", "axis1"], ["count"], keepdims=1),            # (B, 1)
        node("Max", ["count", "one"], ["count1"]),
        node("Div", ["total", "count1"], ["user"]),
        node("MatMul", ["user", "E_T"], ["raw"]),                               # (B, N + 1)
        # seen[b, i] = item i occurs in history b
        node("Unsqueeze", [history, "axis2"], ["h3"]),                          # (B, S, 1)
        node("Equal", ["h3", "all_items"], ["hit"]),                            # (B, S, N + 1)
        node("Cast", ["hit"], ["hit_f"], to=TensorProto.FLOAT),
        node("ReduceMax", ["hit_f", "axis1"], ["seen_f"], keepdims=0),          # (B, N + 1)
        node("Cast", ["seen_f"], ["seen"], to=TensorProto.BOOL),
        node("Unsqueeze", [exclude, "axis1"], ["exclude2"]),                    # (B, 1)
        node("And", ["seen", "exclude2"], ["drop_seen"]),
        node("Or", ["drop_seen", "pad_col"], ["drop"]),
        node("Where", ["drop", "neg_inf", "raw"], ["scores"]),
        node("TopK", ["scores", "k"], [contract.OUTPUT_SCORES, contract.OUTPUT_ITEMS], axis=-1),
        node("Identity", ["user"], [contract.OUTPUT_USER]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_mean_recommender",
        inputs=[
            helper.make_tensor_value_info(history, TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info(exclude, TensorProto.BOOL, ["batch"]),
        ],
        outputs=[
            helper.make_tensor_value_info(contract.OUTPUT_ITEMS, TensorProto.INT64, ["batch", k]),
            helper.make_tensor_value_info(contract.OUTPUT_SCORES, TensorProto.FLOAT, ["batch", k]),
            helper.make_tensor_value_info(contract.OUTPUT_USER, TensorProto.FLOAT, ["batch", dim]),
        ],
        initializer=consts,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9  # readable by every onnxruntime this project supports
    onnx.checker.check_model(model, full_check=True)
    return model


def tiny_users(n_items: int, seed: int) -> dict[str, list[str]]:
    """The users.json of make_tiny_bundle(n_items=n_items, seed=seed): five users, one longer than MAX_LEN."""
    rng = np.random.default_rng(seed + 1)
    users = {f"u{u}": [item_id(int(i)) for i in rng.integers(1, n_items + 1, size=3 + 2 * u)]
             for u in range(4)}
    users["u_long"] = [item_id(1 + i % n_items) for i in range(MAX_LEN + 7)]  # longer than max_len
    return users


def make_tiny_bundle(
    directory: Path, n_items: int = 30, dim: int = 8, seed: int = 0, item_vectors: bool = True, new_items: Sequence[int] = (),
    popularity: bool = True,
) -> Path:
    """Write model.onnx, items.json, users.json, manifest.json (and item_vectors.npy) into `directory`;
    the indices in `new_items` are marked new (no training interactions) in items.json. `popularity`
    False: a bundle exported before the manifest had its popularity list."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    table = embeddings(n_items, dim, seed)
    onnx.save(_graph(table), directory / contract.MODEL_FILE)
    if item_vectors:
        np.save(directory / contract.ITEM_VECTORS_FILE, table)
    items = [{"item_id": item_id(i), "title": f"Item {i}"} | ({"new": True} if i in new_items else {}) for i in range(1, n_items + 1)]
    users = tiny_users(n_items, seed)
    manifest = {
        "model_name": MODEL_NAME,
        "max_len": MAX_LEN,
        "registry_version": REGISTRY_VERSION,
        "data_fingerprint": "abc",
        "metrics": {"HR@10": 0.5, "NDCG@10": 0.25},
        "created_at": CREATED_AT,
        "n_items": n_items,
        "dim": dim,
        "seed": seed,
        "model": "tiny_mean_recommender (tests/tiny_bundle.py)",
    }
    if popularity:
        from components.evaluation.rankers import popularity_record

        train = [np.array([int(i[1:]) for i in history]) for history in users.values()]
        manifest[contract.POPULARITY_FIELD] = popularity_record(train, [item_id(i) for i in range(1, n_items + 1)])
    (directory / contract.ITEMS_FILE).write_text(json.dumps(items))
    (directory / contract.USERS_FILE).write_text(json.dumps(users))
    (directory / contract.MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    return directory


def reference_top_k(
    table: np.ndarray, history: Sequence[int], k: int, exclude_seen: bool, max_len: int = MAX_LEN,
    new: Sequence[int] = (), boost: float = 0.0,
) -> tuple[list[int], np.ndarray]:
    """What a correct service returns for one history of item indices, computed without ONNX.

    The model reads the most recent `max_len` items; with `exclude_seen`, every item of the full history
    is left out of the answer, and excluded items never fill the list up to k. `boost` is added to the
    scores of the items in `new` (the request's new_item_boost).
    """
    window = list(history)[-max_len:]
    user = table[window].mean(axis=0) if window else np.zeros(table.shape[1], np.float32)
    scores = table @ user
    scores[list(new)] += boost
    banned = {contract.PAD_INDEX} | (set(history) if exclude_seen else set())
    order = [int(i) for i in np.argsort(-scores, kind="stable") if int(i) not in banned]
    top = order[: min(k, contract.MAX_K)]
    return top, scores[top]


def reference_popular(users: dict[str, list[str]], k: int) -> tuple[list[str], list[float]]:
    """The k items most frequent in `users`' histories (the tiny bundle's training interactions), most
    first, ties to the lower index, and each one's share of all of them: counted with collections.Counter."""
    counts = Counter(item for history in users.values() for item in history)
    top = sorted(counts, key=lambda item: (-counts[item], int(item[1:])))[: min(k, contract.MAX_K)]
    return top, [counts[item] / sum(counts.values()) for item in top]


def _user(table: np.ndarray, history: Sequence[int], max_len: int) -> np.ndarray:
    window = list(history)[-max_len:]
    return table[window].astype(np.float64).mean(axis=0)


def reference_because(
    table: np.ndarray, history: Sequence[int], picks: Sequence[int], max_len: int = MAX_LEN
) -> list[list[int]]:
    """For each pick, the (at most MAX_BECAUSE) distinct items of the window with the largest dot product
    with the pick, largest first, ties to the more recent item."""
    window = list(history)[-max_len:]
    recent_first = list(dict.fromkeys(reversed(window)))
    out = []
    for pick in picks:
        sims = [float(np.dot(table[h].astype(np.float64), table[pick].astype(np.float64))) for h in recent_first]
        order = sorted(range(len(recent_first)), key=lambda j: -sims[j])  # sorted() is stable: recent first on ties
        out.append([recent_first[j] for j in order[: contract.MAX_BECAUSE]])
    return out


def reference_probabilities(
    table: np.ndarray, history: Sequence[int], candidates: Sequence[int], max_len: int = MAX_LEN
) -> np.ndarray:
    """P(next = c) for each candidate: softmax over items 1..n (padding excluded) of user · E[i]."""
    logits = table[1:].astype(np.float64) @ _user(table, history, max_len)
    probabilities = np.exp(logits - logits.max())
    probabilities /= probabilities.sum()
    return probabilities[np.asarray(candidates) - 1]
