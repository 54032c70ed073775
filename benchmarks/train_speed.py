"""Training speed of the text-aware SASRec, CPU vs CUDA side by side in one run, on generated data
shaped like ML-1M (6,040 users, 3,416 items, histories cut to 200, LM text width 384).

Each device runs the training loop's own step (`optimizer_step`: forward, full-catalog cross-entropy,
backward, gradient clipping, Adam) on the same batches; the first steps are warm-up and not timed. It
reports ms per step, sequences per second, the implied epoch time and the CUDA / CPU ratio, and writes
them as JSON.

    python benchmarks/train_speed.py                      # every device torch sees; CPU limited to 2 threads
    python benchmarks/train_speed.py --devices cuda --batch-sizes 128,1024 --out speed.json
    python benchmarks/train_speed.py --compare-malloc --items 3416,20000   # CPU: glibc's default malloc vs
        # train.reuse_memory (freed blocks kept for reuse), alternating fresh processes, as a ratio
    python benchmarks/train_speed.py --compare-groups --rounds 6    # CPU: train.length_groups 1 vs 4 on short
        # (shop-like) and long (ML-1M-like) generated histories, as a ratio
    python benchmarks/train_speed.py --compare-imputation --rounds 6   # CPU: the cold-item imputer on every
        # item-table row vs only on the rows without their id, as a ratio
    python benchmarks/train_speed.py --compare-blocks --rounds 3 --steps 5   # CPU: full-softmax scores for the
        # whole batch vs in blocks of steps (train.score_block_rows): speed and peak memory, as ratios
    python benchmarks/train_speed.py --compare-text-part --rounds 4 --steps 3   # CPU: the text-aware model's item
        # table as computed until 2026-12-02 vs now, and the id-only variant, at 20,000 and 100,000 items: ratios,
        # forward / backward / optimizer times, busiest operators, state_dict sizes

The CPU rows run with the malloc setting training uses (`train.reuse_memory`, on by default) unless
`--malloc default` says otherwise.

Generated data only: it needs no dataset, so it runs wherever the code runs (a GPU machine included).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from components.memory import peak_rss_mb, rss_mb  # noqa: E402
from components.models.text_sasrec import TextSASRec, TextSASRecConfig  # noqa: E402
from components.timing import timed_in_turns  # noqa: E402
from components.training.malloc import reuse_freed_memory  # noqa: E402
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


def shop_shaped(users: int, items: int, max_len: int, seed: int = 0) -> list[np.ndarray]:
    """Short histories, as in shops and review logs: lognormal lengths with median ~7 steps (3 to 300),
    Zipf-like popularity; windows of max_len + 1 as training cuts them (`train.all_steps`)."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(mean=2.0, sigma=0.7, size=users).astype(int), 3, 300)
    popularity = 1.0 / np.arange(1, items + 1) ** 0.8
    popularity /= popularity.sum()
    return training_pairs([rng.choice(items, size=n, p=popularity) + 1 for n in lengths], max_len, all_steps=True)


def step_shapes(args, names) -> dict:
    """Generated training data by name: (description, training windows, catalog size, max_len)."""
    ml1m_histories = ml1m_shaped(args.users, 3416, 10_000)  # whole histories: training_pairs below cuts them
    shapes = {
        "shop": lambda: ("22,000 users, median 7 steps (3-300), 12,000 items, max_len 50", shop_shaped(22000, 12000, 50), 12000, 50),
        "ml1m": lambda: ("6,040 users, median ~100 steps (20-2,300), 3,416 items, max_len 50", training_pairs(ml1m_histories, 50, all_steps=True), 3416, 50),
        "ml1m_200": lambda: ("the same at max_len 200 (the ML-1M benchmark's)", training_pairs(ml1m_histories, 200, all_steps=True), 3416, 200),
    }
    for name in names:  # "ml1m_200_<n>k": the ML-1M-like histories over n thousand items, max_len 200
        if name.startswith("ml1m_200_") and name.endswith("k"):
            items = int(name[len("ml1m_200_") : -1]) * 1000
            shapes[name] = lambda items=items: (f"the same histories over {items:,} items, max_len 200",
                                                training_pairs(ml1m_shaped(args.users, items, 10_000), 200, all_steps=True), items, 200)
        elif name.startswith("shop_") and name.endswith("k"):  # "shop_<n>k": the shop-like histories over n thousand items
            items = int(name[len("shop_") : -1]) * 1000
            shapes[name] = lambda items=items: (f"22,000 users, median 7 steps (3-300), {items:,} items, max_len 50",
                                                shop_shaped(22000, items, 50), items, 50)
    return {name: shapes[name]() for name in names}


def catalog_shape(items: str) -> str:
    """step_shapes' name of the ML-1M-like histories at max_len 200 over `items` items (a number), or a
    shape's own name ("shop_150k")."""
    if not items.isdigit():
        return items
    return "ml1m_200" if int(items) == 3416 else f"ml1m_200_{int(items) // 1000}k"


def batch_rows(order: np.ndarray, b: int, size: int = 128) -> np.ndarray:
    """The rows of the b-th batch of `size` in `order`, wrapping around: every batch is full, however many
    steps are asked for (a run that needs more batches than one pass holds starts a second pass)."""
    return order[np.arange(b * size, (b + 1) * size) % len(order)]


SYNTHETIC_VOCAB = 30522  # all-MiniLM-L6-v2's tokenizer


def synthetic_tokens(items: int, tokens: int = 16) -> torch.Tensor:
    """Random token ids for `items` items, `tokens` each (the default model's token embeddings read them)."""
    return torch.randint(1, SYNTHETIC_VOCAB, (items, tokens), generator=torch.Generator().manual_seed(1))


def new_trainer(model_class, items: int, max_len: int):
    """A `model_class` model over `items` items (random unit-length text, every item trained), in training
    mode, and its Adam: initialised alike for every variant that asks."""
    cfg = TextSASRecConfig(n_items=items, max_len=max_len, token_vocab=SYNTHETIC_VOCAB)
    text = torch.nn.functional.normalize(torch.randn(items, cfg.text_dim, generator=torch.Generator().manual_seed(0)), dim=-1)
    torch.manual_seed(0)
    model = model_class(cfg, text, torch.ones(items + 1, dtype=torch.bool), synthetic_tokens(items)).train()
    return model, torch.optim.Adam(model.parameters(), lr=1e-3)


def compare_steps(args, variants: dict, shapes: dict) -> tuple[list, dict]:
    """Median ms per training step of each variant (name -> (model class, TrainConfig)) on the same batches
    in one process: each variant trains its own identically initialised model, and the variants take turns
    every `--steps` steps for `--rounds` rounds (components.timing.timed_in_turns). Returns the rows and,
    per shape, the first variant's time over each other's."""
    reuse_freed_memory(True)
    torch.set_num_threads(args.cpu_threads)
    rows, ratios = [], {}
    for name, (description, sequences, items, max_len) in shapes.items():
        order = np.random.default_rng(1).permutation(len(sequences))
        batches = [torch.from_numpy(pad_histories([sequences[i] for i in batch_rows(order, b)], max_len + 1))
                   for b in range(args.warmup + args.steps * args.rounds)]
        engines = []
        for model_class, config in variants.values():
            model, optimizer = new_trainer(model_class, items, max_len)
            for padded in batches[: args.warmup]:
                optimizer_step(model, optimizer, padded, config)
            engines.append(lambda i, m=model, o=optimizer, c=config: optimizer_step(m, o, batches[args.warmup + i], c).item())
        times = dict(zip(variants, timed_in_turns(engines, calls=args.steps * args.rounds, block=args.steps)))
        ms = {variant: float(np.median(t)) * 1000 for variant, t in times.items()}
        widths = [int(p.shape[1]) - 1 for p in batches]
        real = float(np.mean([((p[:, :-1] != 0) & (p[:, 1:] != 0)).sum().item() / len(p) for p in batches]))  # as real_step_states counts them
        for variant in variants:
            rows.append({"shape": name, "variant": variant, "median_ms_per_step": round(ms[variant], 1), "steps": len(times[variant])})
        first, *others = variants
        ratios[name] = {"data": description, "sequences": len(sequences), "mean_batch_width": round(float(np.mean(widths)), 1),
                        "mean_real_steps_per_sequence": round(real, 1), **{f"ms_{v}": round(ms[v], 1) for v in variants},
                        **{f"speedup_{v}": round(ms[first] / ms[v], 2) for v in others}}
        print(f"{name} ({description}): " + ", ".join(f"{v} {ms[v]:.0f} ms/step" for v in variants) + ": "
              + ", ".join(f"{v} {ms[first] / ms[v]:.2f}x" for v in others)
              + f" (batches {np.mean(widths):.0f} steps wide, {real:.1f} real steps per sequence)", flush=True)
    return rows, ratios


def compare_groups(args) -> dict:
    """`train.length_groups` 1 (each batch padded to its longest sequence) against --groups (compare_steps).
    Generated shapes: short shop-like histories and ML-1M-like long ones at the default max_len 50, and
    the long ones at 200."""
    variants = {f"groups_{g}": (TextSASRec, TrainConfig(length_groups=g)) for g in (1, args.groups)}
    rows, ratios = compare_steps(args, variants, step_shapes(args, ("shop", "ml1m", "ml1m_200")))
    return write_result(args, rows, {"groups_vs_one": ratios}, "CPU training step (forward, full-catalog cross-entropy, backward, Adam) "
                        f"with train.length_groups 1 vs {args.groups}, batch 128, {args.cpu_threads} threads; median ms per step over alternating rounds")


class ImputeEveryRow(TextSASRec):
    """The item table as it was computed until 2026-11-30: the imputer maps every item's text at every step
    and the rows that keep their id are masked out afterwards (the same numbers, more work)."""

    def _imputed_ids(self, rows=None):
        every = super()._imputed_ids()
        return every if every is None or rows is None else every[rows]


def compare_imputation(args) -> dict:
    """The imputer run on every row of the item table at every step (before) against only on the rows
    without their id (id_dropout's share and untrained items; compare_steps), shop-like at 12,000 items and
    ML-1M-like at max_len 50."""
    variants = {"every_row": (ImputeEveryRow, TrainConfig()), "missing_rows": (TextSASRec, TrainConfig())}
    rows, ratios = compare_steps(args, variants, step_shapes(args, ("shop", "ml1m")))
    return write_result(args, rows, {"missing_vs_every_row": ratios}, "CPU training step (forward, full-catalog cross-entropy, backward, "
                        f"Adam), item-table imputation on every row vs on the rows without their id, batch 128, {args.cpu_threads} threads; "
                        "median ms per step over alternating rounds")


class TextPartAsBefore(TextSASRec):
    """The item table as it was computed until 2026-12-02: a zero table plus the text part, the token means
    through nn.EmbeddingBag (whose backward sorts every (item, token) pair at every step), the stand-in rows'
    tokens swapped by a torch.where over the whole token table, out-of-place imputation, and the padding row
    zeroed by a masked copy of the whole table. The same numbers (tests/test_model.py compares them)."""

    def item_table(self):
        table = torch.zeros(self.cfg.n_items + 1, self.cfg.d_model, device=self.has_id.device)
        keep, stand_in = self.has_id.unsqueeze(1).float(), None
        if self.training and self.cfg.id_dropout > 0:
            keep = keep * (torch.rand_like(keep) >= self.cfg.id_dropout).float()
            stand_in = (keep.squeeze(1) == 0) & self.has_id
        table = table + self._text_part(stand_in)
        table = table + self.id_emb.weight * keep
        missing = torch.nonzero(keep.squeeze(1) == 0).squeeze(1)
        table = table.index_add(0, missing, self._imputed_ids(missing))
        return self._without_padding(table)

    def _text_part(self, stand_in=None):
        tokens = self.item_tokens
        if stand_in is not None:
            tokens = torch.where(stand_in.unsqueeze(1), self.shared_tokens, tokens)
        return self.text_proj(self.text_table) + self.token_emb(tokens)

    @staticmethod
    def _without_padding(table):
        mask = torch.ones_like(table[:, :1])
        mask[0] = 0.0
        return table * mask


def id_only(cfg, text, has_id, tokens) -> TextSASRec:
    """new_trainer's model_class for the id-only variant (model.use_text=false): no text, no tokens."""
    return TextSASRec(replace(cfg, use_text=False), None, has_id)


def step_phases(model, optimizer, batches, config) -> dict:
    """Where one variant's training step goes, median ms over `batches`: the forward pass (next_item_loss),
    the backward pass, gradient clipping and Adam; and, measured on their own, the item table's forward
    (item_table: the text part, ids, imputation) and its backward (a random gradient on the table)."""
    from components.training.train import next_item_loss

    phases = {"forward": [], "backward": [], "clip_and_adam": [], "item_table_forward": [], "item_table_backward": []}
    for padded in batches:
        started = time.perf_counter()
        loss = next_item_loss(model, padded[:, :-1], padded[:, 1:], config)
        forward = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        backward = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        phases["forward"].append(forward - started)
        phases["backward"].append(backward - forward)
        phases["clip_and_adam"].append(time.perf_counter() - backward)
        started = time.perf_counter()
        table = model.item_table()
        forward = time.perf_counter()
        table.backward(torch.randn_like(table))
        phases["item_table_forward"].append(forward - started)
        phases["item_table_backward"].append(time.perf_counter() - forward)
        optimizer.zero_grad(set_to_none=True)
    return {name: round(float(np.median(t)) * 1000, 1) for name, t in phases.items()}


def top_ops(model, optimizer, batches, config, count: int = 12) -> list:
    """torch.profiler's operators with the most self CPU time over `batches` training steps: ms per step."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for padded in batches:
            optimizer_step(model, optimizer, padded, config)
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:count]
    return [{"op": e.key, "self_ms_per_step": round(e.self_cpu_time_total / 1000 / len(batches), 1), "calls_per_step": e.count / len(batches)} for e in ops]


def compare_text_part(args) -> dict:
    """The text-aware model's training step with the item table as computed before (TextPartAsBefore) and now,
    and the id-only variant for scale (compare_steps: alternating turns in one process), on shop-like histories
    over each --text-items catalog size (default 20,000 and 100,000 items); then each variant's step split
    into forward, backward and optimizer (step_phases) and the busiest operators (top_ops), and the size of
    each variant's state_dict (what early stopping copies at every best epoch and a checkpoint stores)."""
    from provenance import load_average, machine

    load_at_start = load_average()
    variants = {"text_before": (TextPartAsBefore, TrainConfig()), "text_now": (TextSASRec, TrainConfig()), "id_only": (id_only, TrainConfig())}
    names = tuple(f"shop_{int(n) // 1000}k" for n in args.text_items.split(","))
    shapes = step_shapes(args, names)
    rows, ratios = compare_steps(args, variants, shapes)
    for name, (_, sequences, items, max_len) in shapes.items():
        order = np.random.default_rng(2).permutation(len(sequences))
        batches = [torch.from_numpy(pad_histories([sequences[i] for i in batch_rows(order, b)], max_len + 1)) for b in range(args.warmup + args.steps)]
        phases, ops, state_mb = {}, {}, {}
        for variant, (model_class, config) in variants.items():
            model, optimizer = new_trainer(model_class, items, max_len)
            for padded in batches[: args.warmup]:
                optimizer_step(model, optimizer, padded, config)
            phases[variant] = step_phases(model, optimizer, batches[args.warmup :], config)
            ops[variant] = top_ops(model, optimizer, batches[args.warmup : args.warmup + 2], config)
            state_mb[variant] = round(sum(v.numel() * v.element_size() for v in model.state_dict().values()) / 2**20, 1)
            pairs = [b for n, b in model.named_buffers() if n.startswith("bag_")]  # token_means' prepared pairs (now only)
            if pairs and model_class is TextSASRec:  # TextPartAsBefore builds them too, but never reads them
                state_mb[f"{variant}_token_pairs_not_stored"] = round(sum(b.numel() * b.element_size() for b in pairs) / 2**20, 1)
            print(f"{name} {variant}: " + ", ".join(f"{k} {v:.0f} ms" for k, v in phases[variant].items()) + f"; state_dict {state_mb[variant]:.0f} MB", flush=True)
        ms = ratios[name]
        ratios[name] |= {"text_vs_id_only_before": round(ms["ms_text_before"] / ms["ms_id_only"], 2), "text_vs_id_only_now": round(ms["ms_text_now"] / ms["ms_id_only"], 2),
                         "phases_ms": phases, "state_dict_mb": state_mb, "top_ops": ops}
        print(f"{name}: text-aware step / id-only step: {ratios[name]['text_vs_id_only_before']:.2f}x before, {ratios[name]['text_vs_id_only_now']:.2f}x now", flush=True)
    return write_result(args, rows, {"text_part_before_vs_now": ratios, "machine": machine(load_at_start)}, "CPU training step (forward, full-catalog cross-entropy, backward, "
                        f"Adam) of the text-aware model with the item table as computed before (TextPartAsBefore) and now, and of the id-only "
                        f"variant, batch 128, {args.cpu_threads} threads; median ms per step over alternating rounds in one process "
                        "(speedup_text_now: text_before over text_now); phases_ms: medians over --steps further steps of each variant "
                        "alone; top_ops: torch.profiler self CPU time over 2 steps")


def block_variants(args) -> dict:
    rows = [int(r) for r in args.block_rows.split(",")]
    return {"whole": (TextSASRec, TrainConfig(score_block_rows=0)), **{f"blocks_{r}": (TextSASRec, TrainConfig(score_block_rows=r)) for r in rows}}


def compare_blocks(args) -> dict:
    """The full-catalog cross-entropy over the whole batch's (steps × catalog) score matrix against blocks of
    --block-rows steps (train.score_block_rows): ms per step in one process (compare_steps), and each
    variant's peak resident memory alone in a fresh process (peak_of), on ML-1M-like histories at max_len 200
    over each --block-items catalog size (default 3,416, 8,000 and 20,000 items)."""
    import subprocess

    names = tuple(catalog_shape(n.strip()) for n in args.block_items.split(","))
    rows, ratios = compare_steps(args, block_variants(args), step_shapes(args, names))
    peaks = {}
    for name in names:
        for variant in block_variants(args):
            command = [sys.executable, __file__, "--peak-of", variant, "--peak-shape", name, "--block-rows", args.block_rows,
                       "--users", str(args.users), "--steps", "5", "--warmup", str(args.warmup), "--cpu-threads", str(args.cpu_threads)]
            peak = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            peaks.setdefault(name, {})[variant] = peak
            print(f"{name} {variant}: peak RSS {peak['peak_rss_mb']:.0f} MB, {peak['step_mb']:.0f} MB above the process before its first step", flush=True)
        whole = peaks[name]["whole"]["step_mb"]
        ratios[name] |= {f"step_mb_{v}": round(p["step_mb"]) for v, p in peaks[name].items()}
        ratios[name] |= {f"memory_saving_{v}": round(whole / p["step_mb"], 2) for v, p in peaks[name].items() if v != "whole"}
    return write_result(args, rows, {"blocks_vs_whole": ratios}, "CPU training step (forward, full-catalog cross-entropy, backward, Adam), "
                        f"scores for the whole batch at once vs in blocks of {args.block_rows} steps, batch 128, {args.cpu_threads} threads; "
                        "median ms per step over alternating rounds in one process; memory: peak RSS of each variant alone in a fresh "
                        "process over 5 steps, less its RSS before the first step")


def peak_of(args) -> dict:
    """One variant of block_variants alone on one shape: --warmup + --steps training steps, then its peak RSS
    and how far it rose above the RSS before the first step (the data and the model already built)."""
    reuse_freed_memory(True)
    torch.set_num_threads(args.cpu_threads)
    _, sequences, items, max_len = step_shapes(args, (args.peak_shape,))[args.peak_shape]
    model_class, config = block_variants(args)[args.peak_of]
    order = np.random.default_rng(1).permutation(len(sequences))
    model, optimizer = new_trainer(model_class, items, max_len)
    before = rss_mb()
    for b in range(args.warmup + args.steps):
        optimizer_step(model, optimizer, torch.from_numpy(pad_histories([sequences[i] for i in batch_rows(order, b)], max_len + 1)), config)
    peak = peak_rss_mb()
    result = {"peak_rss_mb": round(peak, 1), "step_mb": round(peak - before, 1)}
    print(json.dumps(result))
    return result


def write_result(args, rows: list, ratios: dict, what: str) -> dict:
    commit, dirty = args.code
    result = {"what": what, "rows": rows, **ratios, "torch": torch.__version__, "git_commit": commit or None, "git_dirty": dirty}
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return result


def time_steps(device: str, sequences, model_cfg, text, batch_size: int, steps: int, warmup: int, threads: int) -> dict:
    if device == "cpu":
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = TextSASRec(model_cfg, text, torch.ones(model_cfg.n_items + 1, dtype=torch.bool), synthetic_tokens(model_cfg.n_items)).to(device).train()
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
        row["peak_rss_mb"] = round(peak_rss_mb())  # the whole process so far: with several batch sizes, the largest yet
    else:
        row["name"] = torch.cuda.get_device_name(device)
        row["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
    return row


def compare_malloc(args) -> dict:
    """glibc's default malloc vs freed blocks kept for reuse: each measurement a fresh process (malloc
    settings are per process), alternating default / reuse, `rounds` times per catalog size."""
    import subprocess
    import tempfile

    rows = []
    for items in map(int, str(args.items).split(",")):
        for round_ in range(args.rounds):
            for setting in ("default", "reuse"):
                with tempfile.NamedTemporaryFile(suffix=".json") as out:
                    command = [sys.executable, __file__, "--devices", "cpu", "--items", str(items), "--users", str(args.users),
                               "--batch-sizes", args.batch_sizes, "--steps", str(args.steps), "--warmup", str(args.warmup),
                               "--cpu-threads", str(args.cpu_threads), "--malloc", setting, "--out", out.name]
                    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
                    for row in json.loads(Path(out.name).read_text())["rows"]:
                        rows.append({"items": items, "round": round_ + 1, "malloc": setting, **row})
                        print(json.dumps(rows[-1]), flush=True)
    ratios = {}
    for items in map(int, str(args.items).split(",")):
        for batch_size in map(int, args.batch_sizes.split(",")):
            ms = {setting: float(np.median([r["median_ms_per_step"] for r in rows if (r["items"], r["batch_size"], r["malloc"]) == (items, batch_size, setting)]))
                  for setting in ("default", "reuse")}
            peak = {setting: float(np.median([r["peak_rss_mb"] for r in rows if (r["items"], r["batch_size"], r["malloc"]) == (items, batch_size, setting)]))
                    for setting in ("default", "reuse")}
            ratios[f"items{items}_batch{batch_size}"] = {"default_ms": round(ms["default"], 1), "reuse_ms": round(ms["reuse"], 1), "speedup": round(ms["default"] / ms["reuse"], 2),
                                                         "default_peak_rss_mb": round(peak["default"]), "reuse_peak_rss_mb": round(peak["reuse"])}
            print(f"{items} items, batch {batch_size}: default malloc {ms['default']:.0f} ms/step, reuse {ms['reuse']:.0f} ms/step: {ms['default'] / ms['reuse']:.2f}x; "
                  f"peak RSS {peak['default']:.0f} against {peak['reuse']:.0f} MB")
    return write_result(args, rows, {"reuse_vs_default": ratios, "max_len": 200}, "CPU training step (forward, full-catalog cross-entropy, "
                        "backward, Adam), glibc default malloc vs freed blocks kept for reuse (train.reuse_memory); median ms per step, "
                        "medians over rounds of alternating fresh processes")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", default="auto", help="comma-separated: cpu, cuda; auto = cpu plus cuda when present")
    parser.add_argument("--batch-sizes", default="128", help="comma-separated sequences per step (training default: 128)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per device and batch size")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--cpu-threads", type=int, default=2, help="torch threads on the CPU (our reference machine has 2 cores)")
    parser.add_argument("--users", type=int, default=6040)
    parser.add_argument("--items", default="3416", help="catalog size (with --compare-malloc: comma-separated sizes)")
    parser.add_argument("--out", type=Path, default=None, help="write the result JSON here")
    parser.add_argument("--malloc", choices=("reuse", "default"), default="reuse", help="CPU: keep freed blocks for reuse, as training does (train.reuse_memory), or glibc's default")
    parser.add_argument("--compare-malloc", action="store_true", help="CPU only: time both --malloc settings in alternating fresh processes, per --items size, and report reuse vs default")
    parser.add_argument("--rounds", type=int, default=2, help="with --compare-malloc: processes per setting and size; "
                        "with --compare-groups: turns per setting")
    parser.add_argument("--compare-groups", action="store_true", help="CPU only: train.length_groups 1 against --groups on "
                        "generated short (shop-like) and long (ML-1M-like, max_len 50 and 200) histories, in one process, as a ratio")
    parser.add_argument("--compare-imputation", action="store_true", help="CPU only: the imputer on every item-table row "
                        "(as until 2026-11-30) against only the rows without their id, on generated shop-like and ML-1M-like histories, in one process")
    parser.add_argument("--compare-blocks", action="store_true", help="CPU only: the full-softmax scores for the whole batch at once "
                        "against blocks of --block-rows steps (train.score_block_rows): ms per step in one process, peak memory per variant "
                        "in fresh processes, on generated ML-1M-like histories at max_len 200 over the --block-items catalog sizes")
    parser.add_argument("--compare-text-part", action="store_true", help="CPU only: the text-aware model's item table as computed "
                        "until 2026-12-02 against now, and the id-only variant for scale, on generated shop-like histories over the "
                        "--text-items catalog sizes, in one process; then each variant's forward, backward and optimizer times, busiest "
                        "operators and state_dict size")
    parser.add_argument("--text-items", default="20000,100000", help="with --compare-text-part: comma-separated catalog sizes (whole thousands)")
    parser.add_argument("--block-rows", default="1024,4096", help="with --compare-blocks: comma-separated block sizes")
    parser.add_argument("--block-items", default="3416,8000,20000", help="with --compare-blocks: comma-separated catalog sizes "
                        "for ML-1M-like histories at max_len 200 (3416, or whole thousands), or shop_<n>k: shop-like histories over n "
                        "thousand items at max_len 50")
    parser.add_argument("--peak-of", default=None, help=argparse.SUPPRESS)  # compare_blocks' subprocesses: one variant's peak memory
    parser.add_argument("--peak-shape", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--groups", type=int, default=TrainConfig().length_groups, help="with --compare-groups: the setting "
                        "compared with 1 (default: the training default)")
    args = parser.parse_args(argv)
    args.code = git_state()  # the code the run starts with: commits made while it runs don't change it
    if args.compare_malloc:
        return compare_malloc(args)
    if args.compare_groups:
        return compare_groups(args)
    if args.compare_imputation:
        return compare_imputation(args)
    if args.compare_blocks:
        return compare_blocks(args)
    if args.compare_text_part:
        return compare_text_part(args)
    if args.peak_of:
        return peak_of(args)
    if args.malloc == "reuse":  # "default" calls nothing: any mallopt call turns glibc's dynamic mmap threshold off
        reuse_freed_memory(True)

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) if args.devices == "auto" else args.devices.split(",")
    n_items = int(args.items)
    model_cfg = TextSASRecConfig(n_items=n_items, max_len=200, token_vocab=SYNTHETIC_VOCAB)
    sequences = ml1m_shaped(args.users, n_items, model_cfg.max_len)
    text = torch.nn.functional.normalize(torch.randn(n_items, model_cfg.text_dim), dim=-1)
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
    commit, dirty = args.code
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
