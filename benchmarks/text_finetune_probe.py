"""Would fine-tuning the language model's top layers tell never-trained items apart better than a head
on its frozen sentence embeddings? A probe for the cold-start gap (ML-1M, CPU).

A two-tower next-item model: the context is the previous item's learned id embedding; every item,
trained or not, is scored from its text alone, f(text). 10 % of the items (seed 1, as in
ml1m_cold_selection.py) are removed from training. Two text towers are trained on the same pairs with
the same objective (in-batch softmax with logQ correction). Stage 1 trains the context embeddings and a
head on the frozen embeddings; stage 2 continues from that state for the same steps in each tower:

  frozen     f = MLP(mean-pooled all-MiniLM-L6-v2 embedding), the encoder frozen (what the model uses)
  finetuned  f = Linear(mean-pool(MiniLM with its top `--layers` layers trained)), the lower layers frozen

Cold HR@10: for pairs (previous item -> removed item), the removed item ranked among all items;
warm HR@10: held-out pairs of trained items, ranked the same way. Both towers see the same items.

    .venv/bin/python benchmarks/text_finetune_probe.py
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ml1m import ROOT, cold_items, load  # noqa: E402

from components import settings  # noqa: E402
from components.tokenization import TextEncoderConfig, embed_items  # noqa: E402
from components.tokenization.encode import _load, tokenize_items  # noqa: E402
from provenance import git_state  # noqa: E402


def pairs_of(seqs: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.stack([s[:-1], s[1:]], 1) for s in seqs if len(s) > 1])


class FrozenTower(torch.nn.Module):
    def __init__(self, emb: np.ndarray, d: int):
        super().__init__()
        self.emb = torch.from_numpy(emb)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(emb.shape[1], 256), torch.nn.GELU(), torch.nn.Linear(256, d))

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.emb[items])


def extended_mask(mask: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """[B, 1, 1, T] additive: 0 for tokens, the dtype's minimum for padding (what BERT's layers add)."""
    return (1.0 - mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(hidden.dtype).min


def run_layer(layer, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    out = layer(hidden, attention_mask=mask)
    return out[0] if isinstance(out, tuple) else out


class FinetunedTower(torch.nn.Module):
    """The LM's lower layers run once (cached hidden states); the top `layers` layers are trained."""

    def __init__(self, lm, ids: np.ndarray, mask: np.ndarray, layers: int, d: int):
        super().__init__()
        keep = int(mask.sum(1).max())
        self.mask = torch.from_numpy(mask[:, :keep])
        n_frozen = len(lm.encoder.layer) - layers
        with torch.inference_mode():
            hidden = lm.embeddings(input_ids=torch.from_numpy(ids[:, :keep]))
            ext = extended_mask(self.mask, hidden)
            for layer in lm.encoder.layer[:n_frozen]:
                hidden = run_layer(layer, hidden, ext)
        self.cached = hidden.clone()
        self.top = torch.nn.ModuleList(lm.encoder.layer[n_frozen:])
        self.head = torch.nn.Sequential(torch.nn.Linear(lm.config.hidden_size, 256), torch.nn.GELU(), torch.nn.Linear(256, d))

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        mask = self.mask[items]
        cut = int(mask.sum(1).max())
        mask = mask[:, :cut]
        hidden = self.cached[items, :cut]
        ext = extended_mask(mask, hidden)
        for layer in self.top:
            hidden = run_layer(layer, hidden, ext)
        pooled = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return self.head(F.normalize(pooled, dim=-1))


def train_probe(tower, ctx: torch.nn.Embedding, train_pairs: np.ndarray, log_q: torch.Tensor, steps: int, batch_size: int, args,
                lm_params=None, seed: int = 0) -> dict:
    head = [p for n, p in tower.named_parameters() if not n.startswith("top") and p.requires_grad]
    groups = [{"params": list(ctx.parameters()) + head, "lr": args.lr}]
    if lm_params:
        groups.append({"params": lm_params, "lr": args.lm_lr})
    opt = torch.optim.AdamW(groups, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    started, losses = time.perf_counter(), []
    for step in range(steps):
        batch = train_pairs[rng.integers(0, len(train_pairs), batch_size)]
        uniq, inverse = np.unique(batch[:, 1], return_inverse=True)
        u = torch.from_numpy(uniq)
        logits = ctx(torch.from_numpy(batch[:, 0])) @ tower(u).T / args.temperature - log_q[u][None, :]
        loss = F.cross_entropy(logits, torch.from_numpy(inverse))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % 100 == 0 or step == steps - 1:
            print(f"  step {step} loss {np.mean(losses[-100:]):.3f} ({time.perf_counter() - started:.0f} s)", flush=True)
    return {"train_s": time.perf_counter() - started, "final_loss": float(np.mean(losses[-100:]))}


@torch.no_grad()
def hr10(tower, ctx, pairs: np.ndarray, n_items: int, cold: np.ndarray) -> dict:
    table = torch.cat([tower(torch.arange(s, min(s + 512, n_items + 1))) for s in range(1, n_items + 1, 512)])
    scores = ctx(torch.from_numpy(pairs[:, 0])) @ table.T  # items 1..n
    scores[torch.arange(len(pairs)), torch.from_numpy(pairs[:, 0] - 1)] = -torch.inf  # not the context itself
    target = scores[torch.arange(len(pairs)), torch.from_numpy(pairs[:, 1] - 1)][:, None]
    above = scores > target
    removed = torch.from_numpy(cold[1:])[None, :]
    return {"HR@10": float(((above.sum(1)) < 10).float().mean()), "HR@10_among_removed": float(((above & removed).sum(1) < 10).float().mean()),
            "cases": int(len(pairs))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "ml-1m")
    parser.add_argument("--steps", type=int, default=500, help="stage 1: frozen encoder (context embeddings and head)")
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--ft-steps", type=int, default=200, help="stage 2: steps for each tower from stage 1's state")
    parser.add_argument("--ft-batch", type=int, default=256)
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2, help="top LM layers trained in the finetuned tower")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--lm-lr", type=float, default=1e-4)
    parser.add_argument("--lm-dropout", action="store_true", help="keep the LM's dropout on while fine-tuning")
    parser.add_argument("--temperature", type=float, default=0.1)
    parser.add_argument("--towers", default="frozen,finetuned")
    parser.add_argument("--eval-pairs", type=int, default=3000)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "text_finetune_probe.json")
    args = parser.parse_args()

    data = load(args.data)
    n = data["n_items"]
    cold, train = cold_items(data["train"], n, seed=1)
    all_pairs = pairs_of(data["train"])
    all_pairs = all_pairs[all_pairs[:, 0] != all_pairs[:, 1]]
    rng = np.random.default_rng(0)
    cold_pairs = all_pairs[~cold[all_pairs[:, 0]] & cold[all_pairs[:, 1]]]
    cold_pairs = cold_pairs[rng.choice(len(cold_pairs), min(args.eval_pairs, len(cold_pairs)), replace=False)]
    warm = all_pairs[~cold[all_pairs[:, 0]] & ~cold[all_pairs[:, 1]]]
    held = np.zeros(len(warm), dtype=bool)
    held[rng.choice(len(warm), min(args.eval_pairs, len(warm)), replace=False)] = True
    warm_pairs, train_pairs = warm[held], warm[~held]
    counts = np.bincount(train_pairs[:, 1], minlength=n + 1).astype(np.float64)
    log_q = torch.from_numpy(np.log(np.maximum(counts, 1) / counts.sum()).astype(np.float32))
    print(f"{len(train_pairs)} training pairs, {len(cold_pairs)} cold and {len(warm_pairs)} warm evaluation pairs, {int(cold.sum())} removed items")

    texts = ["[PAD]"] + data["texts"]  # row 0 = padding item, never scored
    config = TextEncoderConfig()
    emb = embed_items(texts, config, settings.cache_dir(), progress=False)
    tokens = tokenize_items(texts, config, settings.cache_dir())
    results = {"args": {k: str(v) for k, v in vars(args).items()}, "git": git_state(), "towers": {}}

    def report(name: str, tower, ctx, fitted: dict) -> None:
        tower.eval()
        row = {"cold": hr10(tower, ctx, cold_pairs, n, cold), "warm": hr10(tower, ctx, warm_pairs, n, cold),
               "train_s": round(fitted["train_s"], 1), "final_loss": round(fitted["final_loss"], 4)}
        row["ratio"] = round(row["cold"]["HR@10"] / max(row["warm"]["HR@10"], 1e-9), 3)
        results["towers"][name] = row
        print(f"  {name}: cold HR@10 {row['cold']['HR@10']:.4f} (among removed {row['cold']['HR@10_among_removed']:.4f}), "
              f"warm {row['warm']['HR@10']:.4f}, ratio {row['ratio']:.3f}, {row['train_s']:.0f} s", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))

    # Stage 1: the context embeddings and a head on the frozen embeddings, trained to convergence.
    torch.manual_seed(0)
    ctx = torch.nn.Embedding(n + 1, args.d)
    torch.nn.init.normal_(ctx.weight, std=0.05)
    frozen = FrozenTower(emb, args.d)
    print(f"stage 1: frozen encoder, {args.steps} steps of {args.batch} pairs", flush=True)
    report("frozen_stage1", frozen, ctx, train_probe(frozen, ctx, train_pairs, log_q, args.steps, args.batch, args))
    start_ctx, start_head = copy.deepcopy(ctx.state_dict()), copy.deepcopy(frozen.mlp.state_dict())
    # Stage 2: the same number of further steps from the same start, with and without the LM's top layers.
    for name in args.towers.split(","):
        print(f"stage 2, {name}: {args.ft_steps} steps of {args.ft_batch} pairs", flush=True)
        ctx.load_state_dict(start_ctx)
        if name == "frozen":
            tower, lm_params = frozen, None
            tower.mlp.load_state_dict(start_head)
        else:
            lm = _load("model", config).train()
            for p in lm.parameters():
                p.requires_grad_(False)
            tower = FinetunedTower(lm, tokens["input_ids"], tokens["attention_mask"], args.layers, args.d)
            tower.head.load_state_dict(start_head)  # the same function as the frozen tower at the start
            lm_params = [p for p in tower.top.parameters()]
            for p in lm_params:
                p.requires_grad_(True)
        tower.train()
        if name != "frozen" and not args.lm_dropout:
            tower.top.eval()  # gradients still flow; only the LM's dropout is off
        report(name, tower, ctx, train_probe(tower, ctx, train_pairs, log_q, args.ft_steps, args.ft_batch, args, lm_params, seed=1))


if __name__ == "__main__":
    main()
