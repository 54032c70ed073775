"""How fast could *any* engine run the inference graph on this CPU? A roofline for the top-K graph.

The serving benchmark measures ONNX Runtime against torch eager on the same graph (`serving.py`). This
one asks what bounds both: it counts the arithmetic the graph cannot avoid at each batch size and
history length, measures the fp32 matrix-multiply rate this machine actually sustains (the best case
for any kernel), and reports

    floor_ms      = necessary FLOPs / measured peak FLOP/s      (no engine can answer faster)
    max_speedup   = torch eager ms / floor_ms                   (no engine can beat torch by more)

alongside the measured torch and ONNX Runtime times and the share of the peak each reaches.

"Necessary" is counted generously to the faster engine (so `max_speedup` is an upper bound): matrix
products only — no layer norms, activations, masks or top-K — attention counted causally (half of the
T×T scores, as a causal kernel could skip the rest), and in the last block only the key and value
projections for all steps and the query, MLP and output projection for the last step (what
`TopKGraph` computes through `encode(last_only=True)`). `FlopCounterMode`'s count of what torch
multiplies outside attention (`torch_linear_mflop`: it does not count the CPU flash-attention kernel)
is recorded next to it as a check of the linear layers.

The weights are random (no dataset needed): neither the FLOPs nor the kernels' speed depend on them.
The default shape is the ML-1M benchmark model's (3,416 items, d_model 64, 2 blocks, 2 heads, history
200). Run it alone on an idle machine:

    python benchmarks/roofline.py                      # ~1 min; writes benchmarks/results/roofline.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).resolve().parent / "results" / "roofline.json"


def necessary_flops(batch: int, seq: int, d: int, layers: int, items: int) -> int:
    """Multiply-adds × 2 the graph cannot skip (see the module docstring for what is counted)."""
    full_block = 12 * d * d * seq + seq * (seq + 1) * d  # qkv 3d², proj d², MLP 8d² per step; causal QKᵀ and AV
    last_block = 2 * d * d * seq + 2 * seq * d + 10 * d * d  # keys and values of every step; one query's attention, proj, MLP
    scoring = d * (items + 1)  # the user state against the item table
    return 2 * batch * ((layers - 1) * full_block + last_block + scoring)


def cpu_session(model, threads: int, profile_prefix: str | None = None):
    """An ONNX Runtime CPU session on `threads` intra-op threads (`model`: a path or serialized bytes),
    profiling into files named after `profile_prefix` when given."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), options, providers=["CPUExecutionProvider"])


def matmul_peak(threads: int, size: int, seconds: float) -> dict:
    """The best sustained fp32 GEMM rate of torch (oneDNN/MKL) and of ONNX Runtime (MLAS) on square
    size×size matrices: the best any dense kernel reaches on this CPU. Returns GFLOP/s."""
    import onnx
    import torch
    from onnx import TensorProto, helper

    a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((size, size), dtype=np.float32)
    flops = 2 * size**3

    def best_rate(call) -> float:
        call()
        best, deadline = float("inf"), time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            call()
            best = min(best, time.perf_counter() - started)
        return flops / best / 1e9

    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    torch_rate = best_rate(lambda: torch.mm(ta, tb))
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [size, size]) for n in ("a", "b")],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [size, size])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = cpu_session(model.SerializeToString(), threads)
    ort_rate = best_rate(lambda: session.run(["c"], {"a": a, "b": b}))
    onnx.checker.check_model(model)
    return {"size": size, "torch_gflops": round(torch_rate, 1), "onnxruntime_gflops": round(ort_rate, 1), "peak_gflops": round(max(torch_rate, ort_rate), 1)}


def shape_rates(batch: int, seq: int, d: int, heads: int, threads: int, calls: int = 30) -> dict:
    """torch's best fp32 rate on the graph's own matrix-product shapes at (batch, seq): do small inner
    dimensions (d_model 64, head width d/heads) keep the kernels far from the peak? GFLOP/s."""
    import torch

    def best(a, b, op) -> float:
        op(a, b)
        fastest = float("inf")
        for _ in range(calls):
            started = time.perf_counter()
            op(a, b)
            fastest = min(fastest, time.perf_counter() - started)
        return fastest

    rows, hs = batch * seq, d // heads
    shapes = {"qkv projection": (rows, d, 3 * d), "MLP up": (rows, d, 4 * d), "MLP down": (rows, 4 * d, d)}
    rates = {name: 2 * m * k * n / best(torch.randn(m, k), torch.randn(k, n), torch.mm) / 1e9 for name, (m, k, n) in shapes.items()}
    q, kt = torch.randn(batch * heads, seq, hs), torch.randn(batch * heads, hs, seq)
    rates["attention scores (q·kᵀ)"] = 2 * batch * heads * seq * seq * hs / best(q, kt, torch.bmm) / 1e9
    return {name: round(rate, 1) for name, rate in rates.items()}


def operator_shares(session_path: Path, feeds: dict, threads: int, runs: int = 20) -> dict:
    """ONNX Runtime's own profile of one shape: the share of kernel time per operator type."""
    with tempfile.TemporaryDirectory() as tmp:
        session = cpu_session(session_path, threads, profile_prefix=str(Path(tmp) / "ort"))
        for _ in range(runs):
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    by_op: dict[str, float] = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            by_op[event["args"]["op_name"]] = by_op.get(event["args"]["op_name"], 0.0) + event["dur"]
    total = sum(by_op.values())
    return {op: round(us / total, 3) for op, us in sorted(by_op.items(), key=lambda kv: -kv[1])[:8]} | {"kernel_ms_per_call": round(total / runs / 1e3, 3)}


def counted_flops(graph, history, exclude) -> int:
    """What torch multiplies in one call of the graph, as torch.utils.flop_counter counts it: every
    matrix product but attention (it has no formula for `_scaled_dot_product_flash_attention_for_cpu`)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        graph(torch.from_numpy(history), torch.from_numpy(exclude))
    return int(counter.get_total_flops())


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Writes the result to --out (default benchmarks/results/roofline.json) and prints a table.")
    p.add_argument("--items", type=int, default=3416, help="catalog size (default: ML-1M's 3,416)")
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--max-len", type=int, default=200, help="the model's history length (the ML-1M protocol's 200)")
    p.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 64], help="comma-separated (default 1,64)")
    p.add_argument("--lengths", type=lambda s: [int(x) for x in s.split(",")], default=[50, 200], help="comma-separated (default 50,200)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads = ONNX Runtime intra-op threads")
    p.add_argument("--reps", type=int, default=60, help="timed calls per engine and shape")
    p.add_argument("--block", type=int, default=20, help="calls per engine before the other takes its turn")
    p.add_argument("--gemm-size", type=int, default=1024, help="square matrix size of the peak-rate measurement")
    p.add_argument("--gemm-seconds", type=float, default=3.0, help="seconds per engine of the peak-rate measurement")
    p.add_argument("--out", type=Path, default=RESULTS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import onnxruntime as ort
    import torch

    from components.export.onnx_export import export_onnx
    from components.models.text_sasrec import TextSASRec, TextSASRecConfig, TopKGraph
    from components.timing import timed_in_turns
    from serving import contract

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    # Inference only: the item table is a constant of the graph, so token embeddings change nothing here.
    cfg = TextSASRecConfig(n_items=args.items, d_model=args.d_model, n_layers=args.layers, n_heads=args.heads, max_len=args.max_len, token_embeddings=False)
    model = TextSASRec(cfg, torch.nn.functional.normalize(torch.randn(args.items, cfg.text_dim), dim=1)).eval()
    graph = TopKGraph(model, contract.MAX_K)
    work = tempfile.TemporaryDirectory()
    path = export_onnx(model, Path(work.name) / "model.onnx")
    session = cpu_session(path, args.threads)

    peak = matmul_peak(args.threads, args.gemm_size, args.gemm_seconds)
    print(f"fp32 matmul {args.gemm_size}²: torch {peak['torch_gflops']} GFLOP/s, ONNX Runtime {peak['onnxruntime_gflops']} GFLOP/s "
          f"on {args.threads} threads", flush=True)
    rng = np.random.default_rng(0)
    outputs = [contract.OUTPUT_ITEMS, contract.OUTPUT_SCORES, contract.OUTPUT_USER]
    rows = []
    for batch in args.batches:
        for seq in sorted({min(n, cfg.max_len) for n in args.lengths}):
            history = rng.integers(1, args.items + 1, size=(batch, seq), dtype=np.int64)
            exclude = np.ones(batch, dtype=bool)
            feeds = {contract.INPUT_HISTORY: history, contract.INPUT_EXCLUDE_SEEN: exclude}
            with torch.inference_mode():
                engines = [lambda i: graph(torch.from_numpy(history), torch.from_numpy(exclude)), lambda i: session.run(outputs, feeds)]
                for run in engines:
                    for _ in range(5):
                        run(0)
                torch_s, ort_s = (float(np.median(t)) for t in timed_in_turns(engines, calls=args.reps, block=args.block))
            need = necessary_flops(batch, seq, cfg.d_model, cfg.n_layers, args.items)
            floor_s = need / (peak["peak_gflops"] * 1e9)
            row = {
                "batch": batch, "seq": seq,
                "necessary_mflop": round(need / 1e6, 2),
                "torch_linear_mflop": round(counted_flops(graph, history, exclude) / 1e6, 2),
                "torch_ms": round(torch_s * 1e3, 4), "onnx_fp32_ms": round(ort_s * 1e3, 4),
                "floor_ms": round(floor_s * 1e3, 4),
                "torch_share_of_peak": round(need / torch_s / 1e9 / peak["peak_gflops"], 3),
                "onnx_share_of_peak": round(need / ort_s / 1e9 / peak["peak_gflops"], 3),
                "onnx_vs_torch": round(torch_s / ort_s, 2),
                "max_speedup_vs_torch": round(torch_s / floor_s, 2),
                "torch_gflops_at_these_shapes": shape_rates(batch, seq, cfg.d_model, cfg.n_heads, args.threads),
                "onnx_operator_shares": operator_shares(path, feeds, args.threads),
            }
            rows.append(row)
            print(f"batch {batch:>3} history {seq:>3}: torch {row['torch_ms']:.3f} ms, ONNX {row['onnx_fp32_ms']:.3f} ms, "
                  f"floor {row['floor_ms']:.3f} ms -> ONNX/torch {row['onnx_vs_torch']}x, no engine above {row['max_speedup_vs_torch']}x", flush=True)
            print(f"    torch GFLOP/s at the graph's matrix shapes: {row['torch_gflops_at_these_shapes']}", flush=True)
            print(f"    ONNX Runtime kernel time by operator: {row['onnx_operator_shares']}", flush=True)
    work.cleanup()

    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip())
    result = {
        "command": "python benchmarks/roofline.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "git_commit": commit, "git_dirty": dirty,
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "threads": args.threads, "load_average_at_start": list(os.getloadavg()),
                    "torch": torch.__version__, "onnxruntime": ort.__version__},
        "model": {"n_items": args.items, "d_model": cfg.d_model, "n_layers": cfg.n_layers, "n_heads": cfg.n_heads, "max_len": cfg.max_len, "k": contract.MAX_K},
        "matmul_peak": peak,
        "shapes": rows,
        "note": "floor_ms = necessary FLOPs (matrix products only, causal attention, last block for the last step) / the best "
                "measured fp32 GEMM rate; max_speedup_vs_torch = torch_ms / floor_ms bounds what any engine could reach",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print("\n| batch | history | torch ms | ONNX ms | ONNX/torch | floor ms | torch at % of peak | most any engine could gain over torch |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['batch']} | {r['seq']} | {r['torch_ms']:.3f} | {r['onnx_fp32_ms']:.3f} | {r['onnx_vs_torch']}× | {r['floor_ms']:.3f} | "
              f"{100 * r['torch_share_of_peak']:.0f} % | {r['max_speedup_vs_torch']}× |")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
