"""Training speed of the text-aware SASRec, CPU vs CUDA side by side in one run, on generated data
shaped like ML-1M (6,040 users, 3,416 items, histories cut to 200, LM text width 384).

Each device runs the training loop's own step (`optimizer_step`: forward, full-catalog cross-entropy,
backward, gradient clipping, Adam) on the same batches; the first steps are warm-up and not timed. It
reports ms per step, sequences per second, the implied epoch time and the CUDA / CPU ratio, and writes
them as JSON.

    python benchmarks/train_speed.py                      # every device torch sees; CPU limited to 2 threads
    python benchmarks/train_speed.py --devices cuda --batch-sizes 128,1024 --out speed.json

Generated data only: it needs no dataset, so it runs wherever the code runs (a GPU machine included).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from components.models.text_sasrec import TextSASRec, TextSASRecConfig  # noqa: E402
from components.training.train import TrainConfig, optimizer_step, training_pairs  # noqa: E402
from serving.contract import pad_histories  # noqa: E402
from provenance import git_state  # noqa: E402 (benchmarks/ is on sys.path: scripts run from there)


def ml1m_shaped(users: int, items: int, max_len: int, seed: int = 0) -> list[np.ndarray]:
    """Sequences with ML-1M's length spread (median ~100, long tail to thousands) and Zipf-like item popularity."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(mean=4.6, sigma=1.0, size=users).astype(int), 20, 2300)
    popularity = 1.0 / np.arange(1, items + 1) ** 0.8
    popularity /= popularity.sum()
    return training_pairs([rng.choice(items, size=n, p=popularity) + 1 for n in lengths], max_len)


def time_steps(device: str, sequences, model_cfg, text, batch_size: int, steps: int, warmup: int, threads: int) -> dict:
    if device == "cpu":
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = TextSASRec(model_cfg, text, torch.ones(model_cfg.n_items + 1, dtype=torch.bool)).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    config = TrainConfig()
    order = np.random.default_rng(1).permutation(len(sequences))
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    timed = []
    for step in range(warmup + steps):
        rows = order[(step * batch_size) % len(order) :][:batch_size]
        padded = torch.from_numpy(pad_histories([sequences[i] for i in rows], model_cfg.max_len + 1)).to(device)
        sync()
        start = time.perf_counter()
        optimizer_step(model, optimizer, padded, config).item()
        sync()
        if step >= warmup:
            timed.append(time.perf_counter() - start)
    ms = float(np.median(timed)) * 1000
    steps_per_epoch = -(-len(sequences) // batch_size)
    row = {"device": device, "batch_size": batch_size, "steps": steps, "median_ms_per_step": round(ms, 2),
           "sequences_per_s": round(batch_size / ms * 1000, 1), "epoch_s": round(steps_per_epoch * ms / 1000, 2)}
    if device == "cpu":
        row["threads"] = threads
    else:
        row["name"] = torch.cuda.get_device_name(device)
        row["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
    return row


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", default="auto", help="comma-separated: cpu, cuda; auto = cpu plus cuda when present")
    parser.add_argument("--batch-sizes", default="128", help="comma-separated sequences per step (training default: 128)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per device and batch size")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--cpu-threads", type=int, default=2, help="torch threads on the CPU (our reference machine has 2 cores)")
    parser.add_argument("--users", type=int, default=6040)
    parser.add_argument("--items", type=int, default=3416)
    parser.add_argument("--out", type=Path, default=None, help="write the result JSON here")
    args = parser.parse_args(argv)

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) if args.devices == "auto" else args.devices.split(",")
    model_cfg = TextSASRecConfig(n_items=args.items, max_len=200)
    sequences = ml1m_shaped(args.users, args.items, model_cfg.max_len)
    text = torch.nn.functional.normalize(torch.randn(args.items, model_cfg.text_dim), dim=-1)
    rows = []
    for batch_size in map(int, args.batch_sizes.split(",")):
        for device in devices:
            rows.append(time_steps(device, sequences, model_cfg, text, batch_size, args.steps, args.warmup, args.cpu_threads))
            print(json.dumps(rows[-1]), flush=True)
    ratios = {}
    for batch_size in map(int, args.batch_sizes.split(",")):
        by = {r["device"]: r for r in rows if r["batch_size"] == batch_size}
        if "cpu" in by and "cuda" in by:
            ratios[f"batch{batch_size}"] = round(by["cpu"]["median_ms_per_step"] / by["cuda"]["median_ms_per_step"], 1)
    commit, dirty = git_state()
    result = {"rows": rows, "cuda_vs_cpu_speedup": ratios, "sequences": len(sequences), "model": asdict(model_cfg),
              "torch": torch.__version__, "python": platform.python_version(), "git_commit": commit or None,
              "git_dirty": dirty}
    print(f"{'device':<8}{'batch':>7}{'ms/step':>10}{'seq/s':>10}{'epoch s':>10}")
    for r in rows:
        print(f"{r['device']:<8}{r['batch_size']:>7}{r['median_ms_per_step']:>10}{r['sequences_per_s']:>10}{r['epoch_s']:>10}")
    for key, ratio in ratios.items():
        print(f"CUDA vs CPU ({args.cpu_threads} threads), {key}: {ratio}x")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
