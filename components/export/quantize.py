"""An int8 variant of the exported graph (ONNX Runtime dynamic quantization), served only if it keeps
the quality and pays for it: NDCG@10 may drop by at most `max_ndcg_drop` (relative), the top-10 lists
must overlap the fp32 ones by at least `min_top10_overlap` on the same evaluation cases, and int8 must
answer a single history at least `min_speedup` times faster than fp32 on this machine. Otherwise fp32 is
served and the reason is recorded.

The speed check exists because dynamic quantization is not always faster: it quantizes activations on
every call, and for a small model that can cost more than the int8 matrix products save (ML-1M model,
history 200, batch 1: int8 0.85 ms against fp32 0.75 ms in benchmarks/results/serving_ff9422c.json; on a slower
machine, int8 was 1.31x faster there and passed: benchmarks/results/serving.json).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from components.timing import timed_in_turns
from serving import contract

log = logging.getLogger(__name__)


@dataclass
class QuantizationReport:
    accepted: bool
    reason: str
    ndcg10_fp32: float
    ndcg10_int8: float
    relative_drop: float
    top10_overlap: float
    bytes_fp32: int
    bytes_int8: int
    cases: int
    seconds: float
    median_ms_fp32: float = 0.0  # per single-history call, on the speed probe (0: speed not checked)
    median_ms_int8: float = 0.0
    speedup: float = 0.0  # median_ms_fp32 / median_ms_int8

    def to_dict(self) -> dict:
        return asdict(self)


def _topk(path: Path, histories: Sequence[np.ndarray], max_len: int, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """The graph's whole answer for each history, seen items excluded: item indices and scores [N, K]."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    items, scores = [], []
    for start in range(0, len(histories), batch_size):
        chunk = histories[start : start + batch_size]
        feeds = {contract.INPUT_HISTORY: contract.pad_histories(chunk, max_len), contract.INPUT_EXCLUDE_SEEN: np.ones(len(chunk), dtype=bool)}
        top_items, top_scores = session.run([contract.OUTPUT_ITEMS, contract.OUTPUT_SCORES], feeds)
        items.append(top_items)
        scores.append(top_scores)
    return np.concatenate(items), np.concatenate(scores)


def _top10(path: Path, histories: Sequence[np.ndarray], max_len: int, batch_size: int = 256) -> list[np.ndarray]:
    """Each history's top 10, without the places scored -inf (seen or unscorable items: the graph fills a row
    with them when fewer items than its K can be ranked, and a catalog may have fewer than 10)."""
    items, scores = _topk(path, histories, max_len, batch_size)
    return [row[np.isfinite(row_scores)] for row, row_scores in zip(items[:, :10], scores[:, :10])]


def quantize_graph(fp32_path: Path, int8_path: Path) -> Path:
    """The int8 variant of an exported graph: ONNX Runtime dynamic quantization of its MatMul weights
    (each weight tensor symmetric, with one scale: the item table's follows its largest value)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Only MatMul weights: the quantizer would take the standard ONNX Attention operator (opset 23) for
    # com.microsoft.Attention and emit a QAttention node that ONNX Runtime rejects.
    # ORT logs "Please consider to run pre-processing before quantization" at WARNING on every call: advice
    # for its static-shape tooling that a user of this flow cannot act on.
    quiet = logging.getLogger()
    level = quiet.level
    quiet.setLevel(max(level, logging.ERROR))
    try:
        quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
    finally:
        quiet.setLevel(level)
    return int8_path


def single_history_latency(paths: Sequence[Path], histories: Sequence[np.ndarray], max_len: int, rounds: int = 4) -> list[float]:
    """Median milliseconds per call of each graph, one history per call (how the service calls it): every
    graph runs through all `histories` once per round, the graphs taking turns (components.timing)."""
    import onnxruntime as ort

    sessions = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in paths]
    feeds = [
        {contract.INPUT_HISTORY: contract.pad_histories([h], max_len), contract.INPUT_EXCLUDE_SEEN: np.ones(1, dtype=bool)}
        for h in histories
    ]
    runs = [lambda i, s=s: s.run([contract.OUTPUT_ITEMS], feeds[i % len(feeds)]) for s in sessions]
    return [float(np.median(t)) * 1000 for t in timed_in_turns(runs, calls=rounds * len(feeds), block=len(feeds))]


def _ndcg10(top10: list[np.ndarray], targets: np.ndarray) -> float:
    gains = [float(np.sum((row == target) / np.log2(np.arange(2, len(row) + 2)))) for row, target in zip(top10, targets)]
    return float(np.mean(gains)) if gains else 0.0


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Shared items of two top-10 lists, as a share of the longer (1.0 for two empty lists)."""
    return len(set(a.tolist()) & set(b.tolist())) / max(len(a), len(b)) if len(a) or len(b) else 1.0


def times(ratio: float, threshold: float) -> str:
    """`ratio` with 2 decimals, or as many more as it takes not to show a ratio below `threshold` as reaching it
    (1.0967 against 1.1 reads 1.097, not 1.10: "1.10x as fast, below the 1.1x" contradicted itself)."""
    digits = 2
    while digits < 6 and ratio < threshold <= round(ratio, digits):
        digits += 1
    return f"{ratio:.{digits}f}"


def quantize_int8(
    fp32_path: Path,
    int8_path: Path,
    histories: Sequence[np.ndarray],
    targets: np.ndarray,
    max_len: int,
    max_ndcg_drop: float = 0.01,
    min_top10_overlap: float = 0.9,
    min_speedup: float = 1.1,
    speed_probe: int = 200,
) -> QuantizationReport:
    """min_speedup: int8 must be this many times faster per single-history call (0 = no speed check),
    timed on the first `speed_probe` histories."""
    started = time.perf_counter()
    quantize_graph(fp32_path, int8_path)
    # int8 one history per call, as it is served (Bundle.rows_per_call): its activations are scaled per call.
    top_fp32, top_int8 = _top10(fp32_path, histories, max_len), _top10(int8_path, histories, max_len, batch_size=1)
    ndcg_fp32, ndcg_int8 = _ndcg10(top_fp32, targets), _ndcg10(top_int8, targets)
    drop = (ndcg_fp32 - ndcg_int8) / ndcg_fp32 if ndcg_fp32 > 0 else 0.0
    overlap = float(np.mean([_overlap(a, b) for a, b in zip(top_fp32, top_int8)]))
    problems = []
    if drop > max_ndcg_drop:
        problems.append(f"NDCG@10 drops {drop:.1%} ({ndcg_fp32:.4f} → {ndcg_int8:.4f}; allowed {max_ndcg_drop:.0%})")
    if overlap < min_top10_overlap:
        problems.append(f"top-10 overlap with fp32 is {overlap:.3f} (needs ≥ {min_top10_overlap})")
    ms_fp32 = ms_int8 = speedup = 0.0
    speed = ""
    if min_speedup > 0:
        ms_fp32, ms_int8 = single_history_latency([fp32_path, int8_path], histories[:speed_probe], max_len)
        speedup = ms_fp32 / ms_int8
        speed = f"{times(speedup, min_speedup)}x as fast per history ({ms_int8:.3f} vs {ms_fp32:.3f} ms)"
        if speedup < min_speedup:
            problems.append(f"int8 is {speed}, below the {min_speedup}x that would justify serving an approximation")
    accepted = not problems
    reason = (
        f"int8 served: NDCG@10 {ndcg_int8:.4f} vs fp32 {ndcg_fp32:.4f} (change {-drop:+.2%}), top-10 overlap {overlap:.3f}"
        + (f", {speed}" if speed else "")
        if accepted
        else "fp32 served: " + "; ".join(problems)
    )
    report = QuantizationReport(
        accepted=accepted,
        reason=reason,
        ndcg10_fp32=ndcg_fp32,
        ndcg10_int8=ndcg_int8,
        relative_drop=drop,
        top10_overlap=overlap,
        bytes_fp32=fp32_path.stat().st_size,
        bytes_int8=int8_path.stat().st_size,
        cases=len(targets),
        seconds=time.perf_counter() - started,
        median_ms_fp32=ms_fp32,
        median_ms_int8=ms_int8,
        speedup=speedup,
    )
    log.info("quantization: %s", reason)
    return report


@dataclass
class KeptPrecision:
    """What an extended catalog (add-items) is served in, against what its source version served."""

    precision: str  # served: "fp32" or "int8"
    reason: str
    source_precision: str
    cases: int = 0  # probe histories answered by both graphs (0: nothing to compare, the source served fp32)
    changed_answers: int = 0  # int8 re-quantized: histories whose answer among the source's items changed
    max_abs_score_change: float = 0.0  # ... and the largest score change of a source item in them
    top10_overlap: float = 1.0  # the served top-10 among the source's items against the source's top-10

    def to_dict(self) -> dict:
        return asdict(self)


def _among(items: np.ndarray, scores: np.ndarray, source_items: int) -> list[list[tuple[int, float]]]:
    """Each answer's (item, score) pairs of items the source catalog has (indices 1..source_items)."""
    return [[(i, s) for i, s in zip(row_items.tolist(), row_scores.tolist()) if 0 < i <= source_items and np.isfinite(s)]
            for row_items, row_scores in zip(items, scores)]


def keep_source_precision(
    source_graph: Path,
    source_precision: str,
    fp32_path: Path,
    int8_path: Path,
    histories: Sequence[np.ndarray],
    max_len: int,
    source_items: int,
    source: str,
    tolerance: float = 1e-4,
) -> KeptPrecision:
    """The precision to serve a source version's model in once items are added to its catalog, so that its
    users' answers among the items it had do not change (the promise of add-items).

    A source served in fp32 stays fp32 (the extended graph's old scores are checked against torch by the
    caller). A source served in int8 is re-quantized (`quantize_graph`, into `int8_path`) and kept in int8
    if, on `histories`, every answer among the source's items is the source's answer: the same items in the
    same order, scores within `tolerance`. That holds when the added items leave the item table's int8
    scale alone; where one of them is larger than every old item, the scale and so every old item's int8
    score change, and fp32 is served instead, with how far its answers are from the source's int8 ones."""
    if source_precision != "int8":
        return KeptPrecision("fp32", f"fp32, as version {source}", source_precision)
    quantize_graph(fp32_path, int8_path)
    before = _among(*_topk(source_graph, histories, max_len, batch_size=1), source_items)  # int8: one history per call, as served
    after = _among(*_topk(int8_path, histories, max_len, batch_size=1), source_items)
    changed, worst = 0, 0.0
    for old, new in zip(before, after):
        common = min(len(old), len(new))
        same_items = [i for i, _ in old[:common]] == [i for i, _ in new[:common]]
        scores = dict(old)
        gap = max((abs(scores[i] - s) for i, s in new[:common] if i in scores), default=0.0)  # the same item's score, before and after
        worst = max(worst, gap)
        changed += not same_items or gap > tolerance
    if not changed:
        return KeptPrecision("int8", f"int8, as version {source}: re-quantized with the added items, the answers among its items are "
                             f"unchanged on {len(histories)} probe histories (max |Δscore| {worst:.1e})", source_precision, len(histories), 0, worst)
    served = _among(*_topk(fp32_path, histories, max_len), source_items)
    overlap = float(np.mean([len({i for i, _ in a[:10]} & {i for i, _ in b[:10]}) / max(1, min(10, len(a))) for a, b in zip(before, served)]))
    return KeptPrecision(
        "fp32",
        f"fp32, where version {source} served int8: re-quantized with the added items, the answers among its items changed "
        f"on {changed} of {len(histories)} probe histories (scores by up to {worst:.1e}; the item table's one int8 scale follows its "
        f"largest value, which added items can raise); fp32's top-10 overlaps version {source}'s by {overlap:.3f}",
        source_precision, len(histories), changed, worst, overlap,
    )
