"""Fit a next-item model: every position of every training sequence predicts its next item, scored
against the whole catalog with cross-entropy (no negative sampling: it is what makes SASRec strong —
Klenitskiy & Vasilev 2023). Early stopping watches full-ranking NDCG@10 on the validation targets;
the best weights are checkpointed and returned. CUDA is used automatically when present.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from components.errors import BehaviorflowError
from components.evaluation import metrics_from_ranks, model_topk, ranks_from_topk
from components.memory import peak_rss_mb, rss_mb
from components.models.text_sasrec import TextSASRec
from components.progress import progress
from components.settings import check_device, resolve_device
from components.training.chunked_loss import banned_scores, chunked_cross_entropy
from components.training.malloc import KEEP_TRIM_THRESHOLD, release_freed_memory, reuse_freed_memory
from serving.contract import pad_histories

log = logging.getLogger(__name__)
_clock = time.perf_counter  # seconds; the time budget and the cosine schedule read it (tests move it by hand)


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 128  # sequences per step
    lr: float = 1e-3  # Adam; higher rates diverge on small catalogs
    weight_decay: float = 0.0  # dropout regularises; decay on id embeddings hurts rare items
    warmup_steps: int = 100  # linear learning-rate warm-up (stabilises early attention)
    lr_schedule: str = "constant"  # after warm-up: "constant", or "cosine" = decay to 0 over the budget
    #   (max_epochs or max_minutes, whichever runs out first; for fixed-budget runs, where patience is off)
    max_epochs: int = 200  # upper bound; early stopping normally ends training first
    max_minutes: float = 60.0  # wall-clock budget for each fit (the id-only baseline gets its own): an epoch longer than the budget
    #   is ended by it, after the step that reaches it (then validated and kept if best); no epoch starts that would, at the pace of
    #   the last one (training and validation), end after it
    patience: int = 5  # validations without a new best NDCG@10 before stopping; epochs that end inside the
    #   learning-rate warm-up do not count (on small data the warm-up spans epochs, and validation dips in it)
    val_users: int = 2048  # validation cases evaluated each epoch (a fixed random subset when larger)
    seed: int = 0  # weights, dropout and batch order
    device: str = "auto"  # "auto" = cuda when available, else cpu
    progress: bool = True  # progress within each epoch: a bar on a terminal, else a log line every 30 s
    all_steps: bool = True  # train on every step of histories longer than max_len + 1, in windows of max_len + 1
    #   steps (one step of overlap, so each step after a user's first is a target exactly once); False: only
    #   each user's last max_len + 1 steps, as SASRec does. ML-1M, max_len 50, 15 CPU minutes: test NDCG@10
    #   0.1966 with it, 0.1815 without (histories that fit in max_len + 1 steps are not affected)
    reuse_memory: bool = True  # on the CPU with glibc (Linux): keep freed large blocks for the next step instead of
    #   returning them to the OS at every step (components/training/malloc.py): steps 1.26x (3,416 items) to
    #   1.34x (20,000 items) faster on 2 cores, peak memory 1.78 -> 2.35 GB at ML-1M's size
    sampled_negatives: int = 0  # 0 = full softmax over the catalog; > 0 = sampled softmax (logQ-corrected)
    #   with this many shared negatives per batch, for catalogs too large to score whole at every step
    score_block_rows: int = 0  # full softmax: score the catalog for this many steps at a time (the same loss and
    #   gradients; components/training/chunked_loss.py), so a step's score memory no longer grows with the batch.
    #   0 = the whole batch at once where its scores fit in the memory available, else the largest block that fits;
    #   on the CPU with reuse_memory, blocks once an average batch's scores outgrow the freed heap kept for reuse
    #   (plan_score_memory). Blocks of 1,024 at max_len 200: a step's memory 4.3x (3,416 items) to 12x (20,000) smaller;
    #   steps 0.81-0.88x as fast up to 12,000 items, 1.55x faster at 16,000 and 1.34x at 20,000; on shop-like
    #   histories at 200,000 items 0.91-0.97x as fast in 4.8x less memory (benchmarks/train_speed.py --compare-blocks)
    length_groups: int = 4  # encode each batch's sequences in up to this many groups of similar length, each
    #   padded only to its own longest, where that removes at least a quarter of the batch's steps (the loss is the
    #   same: every real step is scored once, against the same table). Random batches of short histories are
    #   mostly padding: on generated shop-like histories (median 7 steps, 12,000 items) steps were 1.26x faster
    #   than with 1, and on ML-1M-like ones 1.32x at max_len 200, where histories vary in length; at 50 nearly
    #   all are cut to 50 and no batch is split (benchmarks/train_speed.py --compare-groups). 1 = the whole
    #   batch padded to its longest sequence
    imputed_loss_weight: float = 0.0  # > 0: add this times the same cross-entropy with every item represented as
    #   if never trained (text + imputed id): trains the cold-item path on every step and every item, not only
    #   on the id_dropout share (text models with ids only; full softmax only)
    imputed_loss_share: float = 0.25  # share of a batch's steps that the imputed-item loss scores (it costs a
    #   second steps × catalog score matrix, in blocks of score_block_rows steps like the main loss's)
    imputed_loss_trains: str = "all"  # what the imputed-item loss updates: "all" (every weight it touches: the
    #   transformer, the text projection, the imputer), or "imputer" (the imputer alone: user states and text
    #   projections are held fixed for it, so it cannot bend the warm items' scores towards the cold path)

    def __post_init__(self):
        for name in ("batch_size", "max_epochs", "patience", "val_users"):
            if getattr(self, name) < 1:
                hint = " (a large number, e.g. 1000, trains for the whole budget)" if name == "patience" else ""
                raise ValueError(f"{name} ({getattr(self, name)}) must be at least 1{hint}")
        if self.lr <= 0 or self.max_minutes <= 0:
            raise ValueError(f"lr ({self.lr}) and max_minutes ({self.max_minutes}) must be positive")
        if self.warmup_steps < 0 or self.weight_decay < 0 or self.sampled_negatives < 0:
            raise ValueError(f"warmup_steps ({self.warmup_steps}), weight_decay ({self.weight_decay}) and sampled_negatives "
                             f"({self.sampled_negatives}) must not be negative")
        check_device(self.device)
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule {self.lr_schedule!r} is not one of {', '.join(LR_SCHEDULES)}")
        if self.imputed_loss_weight < 0 or not 0 < self.imputed_loss_share <= 1:
            raise ValueError(f"imputed_loss_weight must be >= 0 (got {self.imputed_loss_weight}) and imputed_loss_share in (0, 1] (got {self.imputed_loss_share})")
        if self.imputed_loss_trains not in IMPUTED_LOSS_TRAINS:
            raise ValueError(f"imputed_loss_trains {self.imputed_loss_trains!r} is not one of {', '.join(IMPUTED_LOSS_TRAINS)}")
        if self.score_block_rows < 0:
            raise ValueError(f"score_block_rows ({self.score_block_rows}) must be 0 (the whole batch where it fits) or a number of steps")
        if self.length_groups < 1:
            raise ValueError(f"length_groups must be at least 1 (got {self.length_groups})")
        if self.imputed_loss_weight > 0 and self.sampled_negatives > 0:
            raise ValueError("imputed_loss_weight > 0 needs the full softmax (sampled_negatives = 0)")


LR_SCHEDULES = ("constant", "cosine")
IMPUTED_LOSS_TRAINS = ("all", "imputer")


@dataclass
class TrainResult:
    model: TextSASRec
    curve: list[dict] = field(default_factory=list)  # one row per epoch: epoch, minutes, loss, val NDCG@10, val HR@10,
    #   rss_mb (the process's resident memory at the epoch's end)
    best_epoch: int = 0
    best_val: dict = field(default_factory=dict)
    wall_s: float = 0.0
    device: str = "cpu"
    checkpoint: Path | None = None
    stopped_because: str = ""
    cut_short: bool = False  # the time budget ended the fit right after its best epoch: more time may give a better model
    peak_rss_mb: float = 0.0  # the process's highest resident memory when the fit ended (components/memory.py)


def new_model(config, text_embeddings: np.ndarray | None, has_id: np.ndarray, seed: int, item_tokens: np.ndarray | None = None) -> TextSASRec:
    """A freshly initialised model, seeded: the same data and config give the same weights on every run
    (so a retrain of unchanged data reproduces the champion instead of failing the gate by chance).
    text_embeddings may be None for a model without text (`use_text=False`); item_tokens are the items'
    token ids for `token_embeddings`."""
    torch.manual_seed(seed)
    text = None if text_embeddings is None else torch.from_numpy(text_embeddings)
    tokens = None if item_tokens is None else torch.from_numpy(item_tokens)
    return TextSASRec(config, text, torch.from_numpy(has_id), tokens)


def train_id_only_baseline(model_config, train: list[np.ndarray], valid, has_id: np.ndarray, config: TrainConfig,
                           exclude_seen: bool = True) -> TrainResult:
    """The id-only variant of the model (`use_text=False`: plain SASRec over item ids, the same size and
    history length), trained with the same settings: the baseline that shows whether the item text pays
    off on this data. It cannot rank items that had no training interactions (their HR is 0)."""
    model = new_model(replace(model_config, use_text=False), None, has_id, config.seed)
    return train_model(model, train, valid, config, label="id-only baseline: ", exclude_seen=exclude_seen)


def training_pairs(train: list[np.ndarray], max_len: int, all_steps: bool = False) -> list[np.ndarray]:
    """The last max_len + 1 steps of each training sequence with at least two steps; with all_steps, its
    earlier steps too, as windows of max_len + 1 that overlap by one step, so that every step after the
    first is a target exactly once (an early window's first targets see only that window's steps)."""
    pairs = []
    for s in train:
        ends = range(len(s), 1, -max_len)  # window ends, newest first; consecutive windows share one step
        pairs += [s[max(0, end - max_len - 1) : end] for end in (ends if all_steps else ends[:1])]
    return pairs


def next_item_loss(model: TextSASRec, inputs: torch.Tensor, targets: torch.Tensor, config: TrainConfig,
                   untrained: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of each real next step against the whole catalog (or a sampled part of it).

    Scores are computed only where a target exists: left padding is often most of a batch, and the
    (steps × catalog) score matrix is the dominant cost. `untrained` (`untrained_items(model)`, computed
    here when not given) are the columns that are never negatives; a fit passes it once for every step.
    """
    table = model.item_table()  # (N + 1, d)
    hidden, targets = real_step_states(model, inputs, targets, table, config.length_groups)  # (M, d), (M,): M real steps
    if config.sampled_negatives <= 0:
        untrained = untrained_items(model) if untrained is None else untrained
        loss = full_cross_entropy(hidden, table, targets, untrained, config.score_block_rows)
        if config.imputed_loss_weight > 0 and model.text_proj is not None and model.id_emb is not None:
            # The same user states against a catalog of items as new: each target must win on its text
            # and imputed id alone, so the cold path learns from every step (not only the dropped ids).
            rows = torch.rand(len(targets), device=hidden.device) < config.imputed_loss_share
            if rows.any():
                imputer_only = config.imputed_loss_trains == "imputer"
                states = hidden[rows].detach() if imputer_only else hidden[rows]
                cold = full_cross_entropy(states, model.imputed_table(imputer_only=imputer_only), targets[rows], untrained, config.score_block_rows)
                loss = loss + config.imputed_loss_weight * cold
        return loss
    # Sampled softmax with logQ correction (Bengio & Senécal 2008; Yi et al. 2019): negatives are drawn
    # in proportion to training frequency q(i); subtracting log q(i) keeps the estimate unbiased.
    negatives = torch.multinomial(model.sampling_probs, config.sampled_negatives, replacement=True)  # (S,)
    log_q = torch.log(model.sampling_probs * config.sampled_negatives)
    positive = (hidden * table[targets]).sum(-1, keepdim=True) - log_q[targets].unsqueeze(1)  # (M, 1)
    negative = hidden @ table[negatives].T - log_q[negatives]  # (M, S)
    negative = negative.masked_fill(negatives.unsqueeze(0) == targets.unsqueeze(1), float("-inf"))  # accidental hits
    logits = torch.cat([positive, negative], dim=1)
    return F.cross_entropy(logits, torch.zeros(len(targets), dtype=torch.long, device=logits.device))


def untrained_items(model: TextSASRec) -> torch.Tensor:
    """Item indices that are never negatives in the full softmax: padding (0), which is never a valid next
    item, and items that never occur in training: nothing is known about them, and pushing them down
    would teach the model to bury new items."""
    return torch.nonzero(~model.has_id).squeeze(1)


def full_cross_entropy(hidden: torch.Tensor, table: torch.Tensor, targets: torch.Tensor, untrained: torch.Tensor, block_rows: int) -> torch.Tensor:
    """Mean cross-entropy of `targets` [M] against every item of `table` but `untrained`: the whole
    (M × catalog) score matrix at once, or `block_rows` rows at a time where that is fewer than M
    (`chunked_cross_entropy`: the same loss and gradients)."""
    if 0 < block_rows < len(hidden):
        return chunked_cross_entropy(hidden, table, targets, untrained, block_rows)
    return F.cross_entropy(banned_scores(hidden, table, untrained), targets)  # (M, N + 1), filled in place: the largest tensor of a step


def real_step_states(model: TextSASRec, inputs: torch.Tensor, targets: torch.Tensor, table: torch.Tensor, groups: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The hidden state and the target of every real step of a left-padded batch: [M, d], [M].

    With groups > 1 the sequences may be sorted by length and encoded in up to that many groups (see
    `length_split`), each cut to its own longest sequence: left padding is dropped from the left, and
    positions are right-aligned, so a real step's state is what the whole-batch encoding gives it. Rows
    come out grouped, not in batch order; a mean loss over them does not depend on the order."""
    # A step is real where its input is: a window shorter than the batch's longest is left-padded, and its
    # first item, the target at its last padded input, has no history to be predicted from (SASRec scores
    # only positions with a real input). Scoring it made that item a target only when a longer window
    # shared the batch, and trained the all-padding state on users' first items.
    real = (inputs != 0) & (targets != 0)  # (B, T)
    lengths = real.sum(1)
    split = length_split(lengths, groups)
    if len(split) == 1:
        return model.encode(inputs, table)[real], targets[real]
    states, goals = [], []
    for rows in split:
        width = max(1, int(lengths[rows].max()))
        group_real = real[rows, -width:]
        states.append(model.encode(inputs[rows, -width:], table)[group_real])
        goals.append(targets[rows, -width:][group_real])
    return torch.cat(states), torch.cat(goals)


GROUPING_MIN_SAVING = 0.25  # split a batch only where it removes at least this share of its padded steps


def length_split(lengths: torch.Tensor, groups: int) -> list[torch.Tensor]:
    """Row indices of a batch in groups of similar length: the most groups (a power of two, at most
    `groups`) whose padded area, Σ rows × longest, is at most 3/4 of the whole batch's — or one group
    holding every row. Each extra group costs a pass of small kernels: on long histories, where 4
    groups remove about 3 % of the padding, they made steps up to 7 % slower."""
    everything = [torch.arange(len(lengths), device=lengths.device)]
    if groups < 2 or len(lengths) < 2:
        return everything
    order = torch.argsort(lengths)
    whole = len(lengths) * int(lengths.max())
    count = 1 << (min(groups, len(lengths)).bit_length() - 1)  # the largest power of two within both
    while count > 1:
        parts = order.tensor_split(count)
        if sum(len(p) * int(lengths[p].max()) for p in parts) <= (1 - GROUPING_MIN_SAVING) * whole:
            return list(parts)
        count //= 2
    return everything


def optimizer_step(model: TextSASRec, optimizer: torch.optim.Optimizer, padded: torch.Tensor, config: TrainConfig,
                   untrained: torch.Tensor | None = None) -> torch.Tensor:
    """One training step on a batch of left-padded sequences [B, max_len + 1]: the next-item loss, its
    gradients (norm clipped to 1) and the optimizer's update. Returns the loss. `untrained`: see
    `next_item_loss`."""
    inputs, targets = padded[:, :-1], padded[:, 1:]  # (B, T): predict step t+1 from steps ≤ t
    loss = next_item_loss(model, inputs, targets, config, untrained)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return loss


def available_memory_bytes(device: torch.device) -> int | None:
    """Memory free for this process on `device`: MemAvailable on a Linux CPU, free memory on CUDA;
    None where it cannot be read (then nothing is checked)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


# One step's scores cost about this many (steps × catalog) float32 matrices at their peak: the scores,
# the softmax kept for backward and the gradient (measured 3.2-3.4 with and without the imputed-item loss).
SCORE_MATRICES_AT_PEAK = 3


# Blocks chosen for speed (plan_score_memory, kept_heap) have at most this many steps: 1,024 and 4,096 ran
# alike, and the smaller holds less memory.
SPEED_BLOCK_ROWS = 1024


def plan_score_memory(sequences: list[np.ndarray], n_columns: int, config: TrainConfig, device: torch.device,
                      kept_heap: int = 0) -> int:
    """The score_block_rows to train with, decided before training starts: the configured value, or, with
    the default 0 and the full softmax, 0 where the largest batch's score matrix fits in the memory
    available, else the largest block of steps that fits in half of it (the same loss, in blocks).

    `kept_heap` (bytes): the freed heap the process keeps for reuse (train.reuse_memory on the CPU: glibc's
    2 GiB limit; 0 = none). Where an average batch's score matrices outgrow it, every step hands them back
    to the OS and faults them in again, and blocks whose matrices fit in half of it (at most
    SPEED_BLOCK_ROWS steps) are chosen instead: `benchmarks/train_speed.py --compare-blocks` measured them
    0.91-0.97x as fast (shop-like histories, 200,000 items) to 1.55x faster (ML-1M-like, 16,000 items) there,
    in a fifth to a ninth of the memory, and 0.75-0.88x as fast below the limit, where the whole batch stays.

    Refuses a fit whose scores cannot fit even so (sampled negatives, or blocks set by hand): killed for
    memory mid-run, a fit loses everything and says nothing; this names the numbers and the settings that
    would fit. Only a certain failure is refused: the estimate counts the smallest peak.
    """
    steps = np.sort([len(s) - 1 for s in sequences])[::-1]
    rows = int(steps[: config.batch_size].sum())  # the batch with the most next-item targets
    full_softmax = config.sampled_negatives <= 0
    block = config.score_block_rows if full_softmax and 0 < config.score_block_rows < rows else rows
    per_score = SCORE_MATRICES_AT_PEAK * 4  # bytes
    need = per_score * block * n_columns
    free = available_memory_bytes(device)
    log.info("scores per step: up to %d steps × %d items%s, ~%.2f GiB at the peak%s", rows, n_columns,
             f" in blocks of {block}" if block < rows else "", need / 2**30, "" if free is None else f" ({free / 2**30:.1f} GiB available on {device})")
    chooses = full_softmax and config.score_block_rows == 0
    mean_rows = float(steps.mean()) * min(config.batch_size, len(steps))  # an average batch's targets
    if chooses and kept_heap and per_score * mean_rows * n_columns > kept_heap:
        speed_block = int(max(1, min(SPEED_BLOCK_ROWS, kept_heap // 2 // (per_score * n_columns))))
        if free is None or per_score * speed_block * n_columns <= free // 2:
            log.info("an average batch's scores (~%.2f GiB) outgrow the %.0f GiB of freed memory kept for reuse (train.reuse_memory): "
                     "scoring %d steps at a time (train.score_block_rows): the same loss and gradients in a fraction of the memory, and "
                     "0.91-1.55x as fast in benchmarks/train_speed.py --compare-blocks",
                     per_score * mean_rows * n_columns / 2**30, kept_heap / 2**30, speed_block)
            return speed_block
    if free is None or need <= free:
        return config.score_block_rows
    fitting_block = free // 2 // (per_score * n_columns)
    if chooses and fitting_block >= 1:
        log.info("the whole batch's scores (~%.2f GiB) do not fit: scoring %d steps at a time (train.score_block_rows), "
                 "the same loss and gradients", per_score * rows * n_columns / 2**30, fitting_block)
        return int(fitting_block)
    fits = []
    if full_softmax and fitting_block >= 1:
        fits.append(f"train.score_block_rows up to {fitting_block:,} (now {config.score_block_rows:,}; 0 chooses by itself)")
    negatives = free // (per_score * rows) - 1  # sampled items per step that would fit at this batch size
    if config.sampled_negatives == 0 and negatives >= 1:
        fits.append(f"train.sampled_negatives up to {negatives:,} (each step then scores that many sampled items, not the whole catalog)")
    batch = int(np.searchsorted(np.cumsum(steps), free // (per_score * n_columns), side="right"))  # largest batch that fits
    if batch >= 1 and not (full_softmax and block < rows):
        fits.append(f"train.batch_size up to {batch:,} (now {config.batch_size:,})")
    what = f"{block:,} next-item targets at a time" if block < rows else f"up to {rows:,} next-item targets in a batch"
    raise BehaviorflowError(
        f"one training step would need about {need / 2**30:.1f} GiB for its scores ({what} "
        f"× {n_columns:,} items, float32, with softmax and gradient), more than the {free / 2**30:.1f} GiB available "
        f"on {device}; " + (" or ".join(fits) + " would fit" if fits else "even one sequence does not fit: lower model.max_len")
    )


def lr_factor(step: int, elapsed_s: float, steps_per_epoch: int, config: TrainConfig) -> float:
    """Learning-rate multiplier at an optimizer step: linear warm-up, then constant or cosine decay.
    Cosine follows the share of the budget used, by steps or by wall-clock time, whichever is larger,
    so a time-limited run ends its decay when its time runs out."""
    warmup = min(1.0, (step + 1) / max(1, config.warmup_steps))
    if config.lr_schedule == "constant":
        return warmup
    used = max(step / max(1, config.max_epochs * steps_per_epoch), elapsed_s / 60 / config.max_minutes)
    return warmup * 0.5 * (1 + math.cos(math.pi * min(1.0, used)))


def best_state_of(model: torch.nn.Module, buffers_at_start: dict[str, int]) -> dict[str, torch.Tensor]:
    """A copy of `model.state_dict()` to go back to. The weights are cloned; a buffer no step has written since
    the fit began (`buffers_at_start`: each buffer's version counter then) is the model's own tensor, not a
    copy: the text table, the items' tokens and the neighbours never change in training, and the text table
    alone is 154 MB at 100,000 items, cloned again at every best epoch."""
    unchanged = {name for name, tensor in model.named_buffers() if buffers_at_start.get(name) == tensor._version}
    return {k: v if k in unchanged else v.detach().clone() for k, v in model.state_dict().items()}


def _epoch_length(minutes: float) -> str:
    """An epoch's length for the stop reason: '~2.5 min', or seconds under 0.1 min ('~3 s', not '~0.0 min')."""
    return f"{minutes:.1f} min" if minutes >= 0.1 else f"{minutes * 60:.0f} s"


def train_model(
    model: TextSASRec,
    train: list[np.ndarray],
    valid: tuple[list[np.ndarray], np.ndarray],
    config: TrainConfig = TrainConfig(),
    checkpoint_dir: Path | None = None,
    label: str = "",
    epoch_metrics: Callable[[TextSASRec], dict] | None = None,
    exclude_seen: bool = True,
) -> TrainResult:
    """Fit `model` on `train` (item-index sequences, oldest first), early-stopped on `valid` (inputs,
    targets) NDCG@10 within the time budget; returns it with its best weights. label prefixes the log
    lines and progress bars (e.g. "id-only baseline: "). epoch_metrics(model), called after each
    epoch's validation with the model in eval mode, adds its numbers to that epoch's row of the curve
    (e.g. a benchmark's own slice); they do not steer training, and their time counts toward the
    budget. exclude_seen: validation ranks no item of a case's input, as the evaluation does with
    evaluate.exclude_seen (the flow passes it), so that the epoch kept is chosen by the protocol reported."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    device = resolve_device(config.device)
    model.to(device)
    kept_heap = 0
    if device.type == "cpu" and config.reuse_memory and reuse_freed_memory():
        log.info("%smalloc: freed large blocks are kept for reuse (train.reuse_memory)", label)
        kept_heap = KEEP_TRIM_THRESHOLD
    sequences = training_pairs(train, model.cfg.max_len, config.all_steps)
    if not sequences:
        raise ValueError("no training sequence has two or more steps: nothing to learn from")
    steps = np.concatenate(sequences)
    seen = np.unique(steps)
    unmarked = seen[~model.has_id.cpu().numpy()[seen]]
    if len(unmarked):
        raise ValueError(
            f"{len(unmarked)} item(s) occur in the training sequences but are marked as never trained in the model "
            f"(has_id False), e.g. item indices {unmarked[:5].tolist()}: build has_id from the same training data"
        )
    columns = config.sampled_negatives + 1 if config.sampled_negatives > 0 else model.cfg.n_items + 1
    config = replace(config, score_block_rows=plan_score_memory(sequences, columns, config, device, kept_heap))
    if config.sampled_negatives > 0:
        # Negatives follow training frequency, smoothed so every trained item can be drawn.
        weights = torch.bincount(torch.from_numpy(steps), minlength=model.cfg.n_items + 1).float() + 1e-3
        weights[~model.has_id.cpu()] = 0.0  # padding and never-trained items are not negatives
        model.sampling_probs = (weights / weights.sum()).to(device)
    val_inputs, val_targets = valid
    if len(val_targets) > config.val_users:
        pick = np.sort(rng.choice(len(val_targets), config.val_users, replace=False))
        val_inputs, val_targets = [val_inputs[i] for i in pick], val_targets[pick]

    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    untrained = untrained_items(model)  # the same for every step; torch.nonzero waits for the device
    steps_per_epoch = math.ceil(len(sequences) / config.batch_size)
    start = _clock()
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, _clock() - start, steps_per_epoch, config))
    result = TrainResult(model=model, device=str(device))
    best_state, best_ndcg, stale, previous_minutes = None, -1.0, 0, 0.0
    buffers_at_start = {name: tensor._version for name, tensor in model.named_buffers()}
    log.info("%straining on %s: %d sequences, %d steps/epoch", label, device, len(sequences), steps_per_epoch)

    for epoch in range(1, config.max_epochs + 1):
        model.train()
        order = rng.permutation(len(sequences))
        losses = []
        bar = progress(range(steps_per_epoch), total=steps_per_epoch, desc=f"{label}epoch {epoch}", unit="step", logger=log, enabled=config.progress)
        for step in bar:
            batch = [sequences[i] for i in order[step * config.batch_size : (step + 1) * config.batch_size]]
            padded = torch.from_numpy(pad_histories(batch, model.cfg.max_len + 1)).to(device)
            loss = optimizer_step(model, optimizer, padded, config, untrained)
            schedule.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
            if step + 1 < steps_per_epoch and _clock() - start >= config.max_minutes * 60:
                break  # an epoch longer than the whole budget (a large catalog, a loaded machine): the budget ends it
        partial = len(losses) < steps_per_epoch
        if partial:
            bar.close()

        ranks = ranks_from_topk(model_topk(model, val_inputs, 10, exclude_seen), val_targets)
        val = metrics_from_ranks(ranks, 10, ks=(10,))
        minutes = (_clock() - start) / 60
        row = {"epoch": epoch, "minutes": round(minutes, 3), "loss": float(np.mean(losses)), "val_NDCG@10": val["NDCG@10"], "val_HR@10": val["HR@10"],
               "rss_mb": round(rss_mb(), 1), "steps": len(losses)}
        if epoch_metrics is not None:
            model.eval()
            with torch.no_grad():  # a measurement: no autograd graph (the callback need not know)
                extra = epoch_metrics(model)
            row |= extra
            log.info("%sepoch %d  %s", label, epoch, "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in extra.items()))
        result.curve.append(row)
        improved = val["NDCG@10"] > best_ndcg
        if improved:
            best_ndcg, stale, result.best_epoch, result.best_val = val["NDCG@10"], 0, epoch, val
            best_state = best_state_of(model, buffers_at_start)
            if checkpoint_dir is not None:
                checkpoint_dir.mkdir(parents=True, exist_ok=True)
                result.checkpoint = checkpoint_dir / "best.pt"
                torch.save({"config": model.cfg.__dict__, "state_dict": best_state, "epoch": epoch, "val": val}, result.checkpoint)
        elif epoch * steps_per_epoch >= config.warmup_steps:  # a dip while the rate still rises is no plateau
            stale += 1
        log.info(  # with how far the fit is from its two stopping rules: patience and the time budget
            "%sepoch %d  loss %.4f  val NDCG@10 %.4f  HR@10 %.4f  %s  (%.1f of %g min)",
            label, epoch, row["loss"], val["NDCG@10"], val["HR@10"], "*best*" if improved else f"no gain {stale}/{config.patience}" if stale else "no gain (warm-up: not counted)",
            minutes, config.max_minutes,
        )
        if partial:
            result.stopped_because = (f"time budget of {config.max_minutes} min reached inside epoch {epoch}, after {len(losses)} "
                                      f"of its {steps_per_epoch} steps")
            break
        if stale >= config.patience:
            result.stopped_because = f"no validation gain for {config.patience} epochs"
            break
        epoch_minutes, previous_minutes = minutes - previous_minutes, minutes
        if minutes >= config.max_minutes:
            result.stopped_because = f"time budget of {config.max_minutes} min reached"
            break
        if epoch < config.max_epochs and minutes + epoch_minutes > config.max_minutes:
            result.stopped_because = (
                f"time budget of {config.max_minutes} min: another epoch (~{_epoch_length(epoch_minutes)}) would end after it"
            )
            break
    else:
        result.stopped_because = f"max_epochs={config.max_epochs} reached"

    result.cut_short = result.stopped_because.startswith("time budget") and result.best_epoch == len(result.curve) > 0
    if result.cut_short:
        log.warning("%sthe time budget (train.max_minutes = %s) ended the fit while validation was still improving "
                    "(best epoch %d is the last): a larger budget may give a better model", label, config.max_minutes, result.best_epoch)
    model.load_state_dict(best_state)
    model.eval()
    result.wall_s = _clock() - start
    result.peak_rss_mb = round(peak_rss_mb(), 1)
    if kept_heap:  # the freed steps' memory was kept for the next step: there is none now (20,000 generated shop items: ~1.3 GB)
        reuse_freed_memory(False)
        release_freed_memory()
    log.info("%sbest epoch %d (val NDCG@10 %.4f); stopped: %s", label, result.best_epoch, best_ndcg, result.stopped_because)
    return result
