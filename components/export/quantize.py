"""An int8 variant of the exported graph (ONNX Runtime dynamic quantization), served only if it keeps
the quality and pays for it: NDCG@10 may drop by at most `max_ndcg_drop` (relative), the top-10 lists
must overlap the fp32 ones by at least `min_top10_overlap` on the same evaluation cases, and int8 must
answer a single history at least `min_speedup` times faster than fp32 on this machine. Otherwise fp32 is
served and the reason is recorded.

The speed check exists because dynamic quantization is not always faster: it quantizes activations on
every call, and for a small model that can cost more than the int8 matrix products save (ML-1M model,
history 200, batch 1: int8 0.85 ms against fp32 0.75 ms in benchmarks/results/serving.json).
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


def _top10(path: Path, histories: Sequence[np.ndarray], max_len: int, batch_size: int = 256) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = []
    for start in range(0, len(histories), batch_size):
        chunk = histories[start : start + batch_size]
        feeds = {contract.INPUT_HISTORY: contract.pad_histories(chunk, max_len), contract.INPUT_EXCLUDE_SEEN: np.ones(len(chunk), dtype=bool)}
        out.append(session.run([contract.OUTPUT_ITEMS], feeds)[0][:, :10])
    return np.concatenate(out)


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


def _ndcg10(top10: np.ndarray, targets: np.ndarray) -> float:
    hits = top10 == targets[:, None]
    return float((hits / np.log2(np.arange(2, 12))).sum(1).mean())


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
    from onnxruntime.quantization import QuantType, quantize_dynamic

    started = time.perf_counter()
    # Only MatMul weights: the quantizer would take the standard ONNX Attention operator (opset 23) for
    # com.microsoft.Attention and emit a QAttention node that ONNX Runtime rejects.
    quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
    top_fp32, top_int8 = _top10(fp32_path, histories, max_len), _top10(int8_path, histories, max_len)
    ndcg_fp32, ndcg_int8 = _ndcg10(top_fp32, targets), _ndcg10(top_int8, targets)
    drop = (ndcg_fp32 - ndcg_int8) / ndcg_fp32 if ndcg_fp32 > 0 else 0.0
    overlap = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top_fp32, top_int8)]))
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
        speed = f"{speedup:.2f}x as fast per history ({ms_int8:.3f} vs {ms_fp32:.3f} ms)"
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
