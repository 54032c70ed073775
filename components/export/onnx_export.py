"""Export the model's inference path (history → top-K items) to ONNX and prove it matches torch.

Parity is a gate, not a report: on a probe set of real histories (several lengths and batch sizes),
ONNX Runtime must return the *identical* top-K item ids and scores within `score_atol` of torch; if it
does not, ParityFailed stops the flow before anything is packaged or registered.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from components.errors import ParityFailed
from components.models.text_sasrec import TextSASRec, TopKGraph
from serving import contract

log = logging.getLogger(__name__)
ONNX_OPSET = 23


@dataclass(frozen=True)
class ExportConfig:
    probe_size: int = 256  # histories in the parity probe set
    score_atol: float = 1e-4  # fp32 kernels differ slightly between torch and ORT; ids must not
    k: int = contract.MAX_K  # the graph returns this many items (capped at the catalog size)
    try_int8: bool = True  # also build an int8 variant; it is served only if it passes the three checks below
    int8_max_ndcg_drop: float = 0.01  # relative NDCG@10 drop vs fp32 tolerated on the test cases
    int8_min_top10_overlap: float = 0.9  # mean share of fp32's top-10 that int8 keeps
    int8_min_speedup: float = 1.1  # and int8 must answer one history this many times faster than fp32 here
    #   (dynamic quantization can be slower on small models); 0 = no speed check

    def __post_init__(self):
        if self.probe_size < 1 or not 1 <= self.k <= contract.MAX_K:
            raise ValueError(f"probe_size ({self.probe_size}) must be at least 1 and k ({self.k}) in 1..{contract.MAX_K}")
        if self.score_atol <= 0 or self.int8_max_ndcg_drop < 0 or not 0 <= self.int8_min_top10_overlap <= 1 or self.int8_min_speedup < 0:
            raise ValueError(f"score_atol ({self.score_atol}) must be > 0, int8_max_ndcg_drop ({self.int8_max_ndcg_drop}) >= 0, "
                             f"int8_min_top10_overlap ({self.int8_min_top10_overlap}) in [0, 1] and int8_min_speedup ({self.int8_min_speedup}) >= 0")


@dataclass
class ParityReport:
    cases: int
    max_abs_score_diff: float
    identical_topk: bool  # identical up to the order of items whose scores tie within `tolerance`
    mismatched_rows: int
    tie_swapped_rows: int
    tolerance: float
    seconds: float
    batches: list[dict] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.identical_topk and self.max_abs_score_diff <= self.tolerance

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def export_onnx(model: TextSASRec, path: Path, config: ExportConfig = ExportConfig()) -> Path:
    """Write the TopKGraph of `model` to `path` with dynamic batch and history length."""
    import warnings

    graph = TopKGraph(model.cpu().eval(), config.k)
    example = (torch.ones(2, min(3, model.cfg.max_len), dtype=torch.int64), torch.ones(2, dtype=torch.bool))
    batch = torch.export.Dim("batch")
    started = time.perf_counter()
    # The exporter warns about every torchvision operator it cannot register; torchvision is not used.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            graph,
            example,
            None,
            dynamo=True,
            # Opset 23 has the fused Attention operator: ONNX Runtime then runs each attention in one
            # kernel instead of ~8 elementwise passes over the (batch, heads, T, T) score tensor.
            opset_version=ONNX_OPSET,
            verbose=False,
            input_names=[contract.INPUT_HISTORY, contract.INPUT_EXCLUDE_SEEN],
            output_names=[contract.OUTPUT_ITEMS, contract.OUTPUT_SCORES, contract.OUTPUT_USER],
            dynamic_shapes={
                "history": {0: batch, 1: torch.export.Dim("seq", max=model.cfg.max_len)},
                "exclude_seen": {0: batch},
            },
        )
        program.optimize()
    path.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(path))
    log.info("exported ONNX graph to %s in %.1f s", path, time.perf_counter() - started)
    return path


def probe_histories(histories: Sequence[np.ndarray], size: int, seed: int = 0) -> list[np.ndarray]:
    """A fixed random subset of real histories, plus the edge cases: length 1 and the longest."""
    rng = np.random.default_rng(seed)
    picked = [histories[i] for i in rng.choice(len(histories), min(size, len(histories)), replace=False)]
    picked.append(histories[0][-1:])
    picked.append(max(histories, key=len))
    return picked


def check_parity(model: TextSASRec, onnx_path: Path, histories: Sequence[np.ndarray], config: ExportConfig = ExportConfig(), raise_on_failure: bool = True) -> ParityReport:
    """Run torch and ONNX Runtime on the same probe batches (batch sizes 1, 7 and 64) and compare."""
    import onnxruntime as ort

    started = time.perf_counter()
    graph = TopKGraph(model.cpu().eval(), config.k)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    probes = probe_histories(histories, config.probe_size)
    worst, mismatched, ties, batches, start = 0.0, 0, 0, [], 0
    sizes = iter([1, 7] + [64] * len(probes))
    while start < len(probes):
        size = next(sizes)
        chunk = probes[start : start + size]
        start += size
        padded = contract.pad_histories(chunk, model.cfg.max_len)
        exclude = np.arange(len(chunk)) % 2 == 0  # both modes in every batch
        ort_items, ort_scores = session.run(
            [contract.OUTPUT_ITEMS, contract.OUTPUT_SCORES],
            {contract.INPUT_HISTORY: padded, contract.INPUT_EXCLUDE_SEEN: exclude},
        )
        with torch.no_grad():
            items, scores, user = graph(torch.from_numpy(padded), torch.from_numpy(exclude))
            full = (user @ graph.table.T).numpy()  # every item's torch score, unmasked (the graph's own user vector)
            items, scores = items.numpy(), scores.numpy()
        # Slots scored -inf (padding, excluded items filling the tail of a short catalog) are not
        # recommendations, and their order among equal -inf scores is arbitrary: compare the rest.
        finite = np.isfinite(scores)
        if not np.array_equal(finite, np.isfinite(ort_scores)):
            diff = float("inf")
        else:
            diff = float(np.abs(np.subtract(ort_scores, scores, out=np.zeros_like(scores), where=finite)).max())  # -inf - -inf left out
        # Where the ids differ, it is a tie (not a disagreement) when torch itself scores ORT's item
        # within the tolerance of the score at that position: two items whose scores differ by less
        # than float32 kernel noise may come in either order.
        differ = (ort_items != items) & finite
        rows_at, cols_at = np.nonzero(differ)
        torch_of_ort = full[rows_at, ort_items[rows_at, cols_at]]
        tie = np.abs(torch_of_ort - scores[rows_at, cols_at]) <= config.score_atol
        real = np.zeros_like(differ)
        real[rows_at[~tie], cols_at[~tie]] = True
        rows = int(real.any(1).sum())
        ties += int(differ.any(1).sum()) - rows
        worst, mismatched = max(worst, diff), mismatched + rows
        batches.append({"batch": len(chunk), "seq": int(padded.shape[1]), "max_abs_diff": diff, "mismatched_rows": rows})
    report = ParityReport(
        cases=len(probes),
        max_abs_score_diff=worst,
        identical_topk=mismatched == 0,
        mismatched_rows=mismatched,
        tie_swapped_rows=ties,
        tolerance=config.score_atol,
        seconds=time.perf_counter() - started,
        batches=batches,
    )
    log.info("parity: %d cases, max |Δscore| %.2e, top-K identical: %s (%d %s with tied items swapped)", report.cases, worst, report.identical_topk,
             ties, "row" if ties == 1 else "rows")
    if raise_on_failure and not report.passed:
        raise ParityFailed(
            f"ONNX Runtime disagrees with torch on {mismatched} of {report.cases} probe histories "
            f"(max |score difference| {worst:.2e}, tolerance {config.score_atol:.0e}); nothing was packaged or registered. "
            "Re-run the export; if it persists, report it with the run's parity.json."
        )
    return report


def known_user_histories(user_ids: Sequence[str], sequences: Sequence[np.ndarray], item_ids: Sequence[str]) -> dict[str, list[str]]:
    """The bundle's users.json: every user's whole history as item ids, oldest first (item index i is
    item_ids[i - 1]). Whole, not cut to the model's window: the service reads the window from it and, with
    exclude_seen, leaves every item of it out of a user_id's answer, as of an explicit history and as the
    offline evaluation does. Cut to max_len, a known user's older items came back as recommendations (on the
    first 2,999 users of ML-1M, 69 % of them have more than 50 steps, 72 % of all steps lie before the last 50;
    the file is 3.6 times larger whole: 3.8 MB against 1.1 MB)."""
    return {user: [item_ids[i - 1] for i in sequence] for user, sequence in zip(user_ids, sequences)}


def write_bundle(out_dir: Path, onnx_path: Path, item_ids: list[str], titles: list[str], users: dict[str, list[str]], manifest: dict, item_vectors: np.ndarray | None = None, new_items: list[bool] | None = None, unscorable: list[bool] | None = None) -> Path:
    """The model bundle (serving/contract.py): what the Bento model store holds and the service loads.
    `new_items[i]` marks item i + 1 as new: no training interactions (the service can reserve places for them);
    `unscorable[i]` as one the model cannot score (the graph masks it; the service never ranks it)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if item_vectors is not None:
        np.save(out_dir / contract.ITEM_VECTORS_FILE, item_vectors.astype(np.float32))
    if onnx_path.resolve() != (out_dir / contract.MODEL_FILE).resolve():
        (out_dir / contract.MODEL_FILE).write_bytes(onnx_path.read_bytes())
    items = [{"item_id": i, "title": t} for i, t in zip(item_ids, titles)]
    for row, is_new in zip(items, new_items or []):
        if is_new:
            row["new"] = True
    for row, cannot in zip(items, unscorable or []):
        if cannot:
            row["unscorable"] = True
    (out_dir / contract.ITEMS_FILE).write_text(json.dumps(items, ensure_ascii=False))
    (out_dir / contract.USERS_FILE).write_text(json.dumps(users, ensure_ascii=False))
    (out_dir / contract.MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, default=str))
    return out_dir
