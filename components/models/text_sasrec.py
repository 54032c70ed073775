"""A text-aware causal transformer for next-item prediction (SASRec, made to read item text).

References: SASRec (Kang & McAuley, ICDM 2018) for the causal self-attention over the history;
SASRec with full cross-entropy ("SASRec+", Klenitskiy & Vasilev, RecSys 2023) for the loss; item
representations from a frozen pretrained language model, projected and added to a learned id
embedding (as in UniSRec / Recformer-style text-based recommenders).

An item is represented as   e_i = W · lm(text_i)  +  mean_t∈text_i tok_t  +  id_i
where tok_t is a learned embedding of each token of the item's text (`token_embeddings`; zero at first;
a new item's mean leaves out the tokens no trained item has: `token_trained_only`), and id_i is a
learned embedding for an item seen in training, and for an item that never occurred in training
("cold") an imputed id: by default a small network from the LM embedding to id space
(`cold_imputation="mlp"`), or the similarity-weighted mean of the id embeddings of its nearest trained
items in language-model space (`"neighbors"`). Training hides a
random share of id embeddings (`id_dropout`, as in DropoutNet) and substitutes the imputation, so the
imputer is trained on exactly its job and the model learns to rank imputed items as it ranks trained
ones. A brand-new item is represented by its text and by what the model learned about items that read
like it, and can be recommended. The same item table scores the next item (tied input/output embeddings):
    score(i | history) = h_T · e_i,   h_T = transformer(history)[-1]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class TextSASRecConfig:
    n_items: int = 0  # catalog size (set from the data); item index 0 is padding
    text_dim: int = 384  # width of the language-model embedding (all-MiniLM-L6-v2: 384)
    d_model: int = 64  # width of the sequence transformer
    n_layers: int = 2  # transformer blocks
    n_heads: int = 2  # attention heads; d_model must be divisible by it
    max_len: int | str = 50  # history steps the model reads (older steps are cut); "auto" = from the data
    #   (auto_max_len: the 90th percentile of training history lengths, at least 50 and at most 200). 50 by
    #   default: on ML-1M in 15 CPU minutes, 50 reached test NDCG@10 0.18 and 200 only 0.16 (more epochs fit)
    dropout: float = 0.2  # on embeddings, attention and MLP: small data overfits quickly
    use_text: bool = True  # False = the id-only baseline (plain SASRec)
    use_id: bool = True  # False = text only (every item is "cold")
    id_dropout: float = 0.2  # in training, each step replaces this share of item ids by the imputation
    #   (cold_imputation), as if the items were new (with token_trained_only they also lose the words only they
    #   have): trains the imputer and scores new items on the scale of trained ones; without it the model learns
    #   that only trained ids win. 0.5 hurt warm items (benchmarks/results/ml1m_cold_selection.json)
    cold_neighbors: int = 10  # cold_imputation "neighbors" only: a cold item's imputed id is the similarity-weighted
    #   ids of this many trained items nearest to it by LM text; 0 = no imputed id (text only). Unused with "mlp"
    neighbor_temperature: float = 0.05  # cold_imputation "neighbors" only: softmax temperature over the neighbours'
    #   cosine similarities (lower: the nearest weigh more). Unused with "mlp"
    token_embeddings: bool = True  # also a learned embedding per text token: an item's text part adds the mean of
    #   its tokens' embeddings (zero at first, so a token no trained item has adds nothing). Words shared between
    #   items (a year, a brand, a series name, a category) carry what the model learned about them to rare and
    #   new items. On ML-1M: validation NDCG@10 0.1726 reached sooner (7.0 against 12.9 CPU minutes) and a better
    #   long tail (docs/benchmarks.md). The flow tokenizes the catalog with the text model's tokenizer; ignored without text
    token_trained_only: bool = True  # a never-trained item's mean leaves out the tokens no trained item has (their
    #   embeddings were never learned: counted as zeros, they only shrink what the item's known words say); and a
    #   trained item standing in for a new one (id_dropout, the imputed-item loss) also loses the tokens only it has,
    #   so training shows the model new items as they will look: shared words, LM text and the imputed id. ML-1M,
    #   three comparisons: more new-item hits (selection slice 18 -> 33 and 19 -> 24 of 612, test 19 -> 22 of 314)
    #   at the same or better warm HR@10 (docs/benchmarks.md). False: every token counts, and stand-ins keep them
    token_vocab: int = 0  # the LM tokenizer's vocabulary size (set from the tokenizer, as text_dim from the embeddings)
    cold_imputation: str = "mlp"  # what stands in for a missing id: "mlp" (a small network from LM text to id
    #   space, learned through id_dropout: trained on exactly the job of standing in for an id) or "neighbors"
    #   (the weighted ids of the cold_neighbors nearest trained items by text)

    def __post_init__(self):
        unknown_word = isinstance(self.max_len, str) and self.max_len != "auto"
        not_a_count = not isinstance(self.max_len, (int, str)) or isinstance(self.max_len, bool) or (isinstance(self.max_len, int) and self.max_len < 1)
        if unknown_word or not_a_count:
            raise ValueError(f"max_len ({self.max_len!r}) must be a positive number of history steps, e.g. 50, or \"auto\"")
        for name in ("d_model", "n_layers", "n_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} ({getattr(self, name)}) must be at least 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout ({self.dropout}) must be in [0, 1), e.g. 0.2")
        if not 0.0 <= self.id_dropout <= 1.0:
            raise ValueError(f"id_dropout ({self.id_dropout}) must be in [0, 1], e.g. 0.2")
        if self.cold_neighbors < 0 or self.neighbor_temperature <= 0:
            raise ValueError(f"cold_neighbors ({self.cold_neighbors}) must be >= 0 and neighbor_temperature ({self.neighbor_temperature}) > 0")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) is not a multiple of n_heads ({self.n_heads})")
        if not (self.use_text or self.use_id):
            raise ValueError("the model needs text, ids or both: use_text and use_id are both False")
        if self.cold_imputation not in COLD_IMPUTATIONS:
            raise ValueError(f"cold_imputation {self.cold_imputation!r} is not one of {', '.join(COLD_IMPUTATIONS)}")


COLD_IMPUTATIONS = ("neighbors", "mlp")
AUTO_MAX_LEN = (50, 200, 90)  # max_len "auto": at least 50, at most 200, else this percentile of history lengths


def auto_max_len(lengths) -> int:
    """max_len "auto": the 90th percentile of the training histories' lengths (so 9 in 10 users are read
    whole), rounded up to a multiple of 10, kept within [50, 200]. Short-history data (shopping
    sessions, reviews) keep the usual 50; long histories get up to 200, the setting of the published
    MovieLens-1M results. The model reads, and trains on, at most max_len + 1 steps of each user, so on
    long histories 50 leaves most steps unused (on ML-1M 72 % of them; 34 % at 200) — but each epoch
    costs about 4.5 times less, and within a CPU budget the extra epochs won (ML-1M, 15 minutes:
    test NDCG@10 0.1815 at 50 against 0.1553 at 200). So "auto" is opt-in, for long budgets or a GPU."""
    low, high, percentile = AUTO_MAX_LEN
    lengths = [int(n) for n in lengths]
    if not lengths:
        return low
    typical = int(math.ceil(float(np.percentile(lengths, percentile)) / 10.0) * 10)
    return max(low, min(high, typical))


def resolve_max_len(config: TextSASRecConfig, lengths) -> TextSASRecConfig:
    """The config with max_len "auto" replaced by auto_max_len(lengths); a number is kept."""
    return config if not isinstance(config.max_len, str) else replace(config, max_len=auto_max_len(lengths))


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: TextSASRecConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.dropout = cfg.dropout
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """last_only: return only the last step's output (its query alone; keys and values of all steps)."""
        B, T, D = x.shape
        hs = D // self.n_heads
        q, k, v = self.qkv(x).split(D, dim=2)
        if last_only:
            q, allowed = q[:, -1:], allowed[:, -1:]
        q = q.reshape(B, q.shape[1], self.n_heads, hs).transpose(1, 2)  # (B, nh, Tq, hs)
        k, v = (t.view(B, T, self.n_heads, hs).transpose(1, 2) for t in (k, v))  # (B, nh, T, hs)
        # Fused attention (softmax(q·kᵀ/√hs + mask)·v): on CPU about twice as fast as the explicit form.
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed.unsqueeze(1), dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(B, q.shape[2], D)  # (B, Tq, D)
        return self.resid_drop(self.proj(y))


class Block(nn.Module):
    """Pre-LayerNorm transformer block (GPT-2 style): more stable than SASRec's post-norm."""

    def __init__(self, cfg: TextSASRecConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.d_model, 4 * cfg.d_model), nn.GELU(), nn.Linear(4 * cfg.d_model, cfg.d_model), nn.Dropout(cfg.dropout)
        )

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        y = self.attn(self.ln1(x), allowed, last_only)
        x = (x[:, -1:] if last_only else x) + y
        return x + self.mlp(self.ln2(x))


class TextSASRec(nn.Module):
    def __init__(self, cfg: TextSASRecConfig, text_embeddings: torch.Tensor | None = None, has_id: torch.Tensor | None = None,
                 item_tokens: torch.Tensor | None = None):
        """text_embeddings: [n_items, text_dim] frozen LM embeddings (row i-1 = item index i).
        has_id: bool [n_items + 1], True for items seen in training (only those get an id embedding).
        item_tokens: [n_items, L] the LM tokenizer's ids of each item's text, 0 = padding (token_embeddings)."""
        super().__init__()
        if isinstance(cfg.max_len, str):
            raise ValueError('max_len "auto" must be resolved from the training histories first: resolve_max_len(config, lengths)')
        self.cfg = cfg
        n = cfg.n_items + 1
        text = None
        if cfg.use_text:
            text = torch.zeros(n, cfg.text_dim)
            if text_embeddings is None or tuple(text_embeddings.shape) != (cfg.n_items, cfg.text_dim):
                got = None if text_embeddings is None else tuple(text_embeddings.shape)
                raise ValueError(f"text_embeddings must have shape ({cfg.n_items}, {cfg.text_dim}), got {got}")
            text[1:] = text_embeddings
        # The id-only variant reads no text: no table of zeros (n_items × text_dim floats, 154 MB at 100,000
        # items) to keep, save, and copy at every best epoch.
        self.register_buffer("text_table", text if cfg.use_text else None)
        ids = torch.ones(n, dtype=torch.bool) if has_id is None else has_id.clone().bool()
        ids[0] = False
        self.token_emb = None
        if cfg.use_text and cfg.token_embeddings:
            if item_tokens is None or item_tokens.dim() != 2 or item_tokens.shape[0] != cfg.n_items:
                got = None if item_tokens is None else tuple(item_tokens.shape)
                raise ValueError(f"token_embeddings: item_tokens (each item's token ids) must have shape ({cfg.n_items}, tokens), got {got}")
            if cfg.token_vocab < 1:
                raise ValueError("token_embeddings: token_vocab (the tokenizer's vocabulary size) must be set, e.g. from components.tokenization.item_tokens")
            tokens = torch.zeros(n, item_tokens.shape[1], dtype=torch.long)
            tokens[1:] = item_tokens
            if int(tokens.max()) >= cfg.token_vocab:
                raise ValueError(f"item_tokens hold token id {int(tokens.max())}, outside token_vocab {cfg.token_vocab}")
            if cfg.token_trained_only:
                holders = trained_token_counts(tokens, ids, cfg.token_vocab)  # trained items holding each token
                tokens = tokens_kept(tokens, ~ids, holders >= 1)  # new items: only the tokens training reached
            used = (tokens != 0).any(0)  # columns that hold a token somewhere (padding may be on either side)
            tokens = tokens[:, used] if bool(used.any()) else tokens[:, :1]
            if cfg.token_trained_only:
                # What a trained item looks like when it stands in for a new one: only the words it shares.
                self.register_buffer("shared_tokens", tokens_kept(tokens, ids, holders >= 2), persistent=False)
            self.register_buffer("item_tokens", tokens)
            self.token_emb = nn.EmbeddingBag(cfg.token_vocab, cfg.d_model, mode="mean", padding_idx=0)
            self._register_token_bags()
        self.register_buffer("has_id", ids)
        # Items the model cannot represent: padding and, without text, items never seen in training (their
        # table row is zero, so a score of 0 would place them among trained items by accident). The
        # ranking paths (evaluation, the ONNX graph) never return them.
        unscorable = torch.zeros(n, dtype=torch.bool) if cfg.use_text else ~ids
        unscorable[0] = True
        self.register_buffer("unscorable", unscorable, persistent=False)
        impute = cfg.use_text and cfg.use_id
        k = cfg.cold_neighbors if (impute and cfg.cold_imputation == "neighbors") else 0
        neighbors, weights = content_neighbors(text, ids, k, cfg.neighbor_temperature) if k else (torch.zeros(n, 0, dtype=torch.long), torch.zeros(n, 0))
        self.register_buffer("neighbors", neighbors)  # (n, k) trained items nearest by text (never the item itself)
        self.register_buffer("neighbor_weights", weights)  # (n, k), rows sum to 1 (zero rows when k = 0)
        # A plain linear map: with unit-norm LM embeddings and the std-0.02 init below, text and id parts
        # start at the same small scale, so initial scores are near uniform (loss ≈ log n_items).
        self.text_proj = nn.Linear(cfg.text_dim, cfg.d_model) if cfg.use_text else None
        self.id_emb = nn.Embedding(n, cfg.d_model) if cfg.use_id else None
        self.imputer = None
        if impute and cfg.cold_imputation == "mlp":
            self.imputer = nn.Sequential(nn.Linear(cfg.text_dim, 2 * cfg.d_model), nn.GELU(), nn.Linear(2 * cfg.d_model, cfg.d_model))
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.apply(self._init)
        if self.token_emb is not None:  # a token never seen in training adds nothing (rather than noise)
            nn.init.zeros_(self.token_emb.weight)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def _register_token_bags(self) -> None:
        """item_tokens (and shared_tokens) as token_means reads them (non-persistent buffers, rebuilt when
        item_tokens is loaded): every row's real tokens, each weighted 1 / the row's token count, and the same
        pairs grouped by token for the backward pass."""
        shared = self.shared_tokens if self.cfg.token_trained_only else None
        for name, value in token_bags(self.item_tokens, self.cfg.token_vocab, shared).items():
            self.register_buffer(name, value, persistent=False)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        if self.text_table is None:  # an id-only checkpoint from before it had no text table: that table was zeros
            state_dict.pop(prefix + "text_table", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
        if self.token_emb is not None and prefix + "item_tokens" in state_dict:
            self._register_token_bags()

    def item_table(self) -> torch.Tensor:
        """Representations of every item [n_items + 1, d_model]; row 0 (padding) is zero."""
        table = None
        keep, stand_in = self.has_id.unsqueeze(1).float(), None
        # In training a random id_dropout share of the items stands in for new ones: without their id (the
        # imputation replaces it) and, with token_trained_only, without the words only they have. Without
        # text nothing can stand in.
        stands_in = self.text_proj is not None and (self.id_emb is not None or (self.token_emb is not None and self.cfg.token_trained_only))
        if stands_in and self.training and self.cfg.id_dropout > 0:
            keep = keep * (torch.rand_like(keep) >= self.cfg.id_dropout).float()
            stand_in = (keep.squeeze(1) == 0) & self.has_id
        if self.text_proj is not None:
            table = self._text_part(stand_in)
        if self.id_emb is not None:
            ids = self.id_emb.weight * keep
            table = ids if table is None else table + ids
            if self.imputer is not None or self.neighbors.shape[1]:  # something stands in for a missing id
                # Only the rows without their id need it: untrained items, and in training the id_dropout
                # share (a fifth of the catalog by default), not every row of the table.
                missing = torch.nonzero(keep.squeeze(1) == 0).squeeze(1)
                # In place (table is this call's own); index_put_ rather than index_add_, which took ~0.2 s for 20,000
                # rows of a 100,000-item table on 2 threads (its scatter_add path), against ~0.03 s.
                table = table.index_put_((missing,), self._imputed_ids(missing), accumulate=True)
        return self._without_padding(table)

    def imputed_table(self, imputer_only: bool = False) -> torch.Tensor:
        """Every item as if it had never been trained: text plus the imputed id [n_items + 1, d_model]
        (row 0 zero). What a brand-new item looks like to the model; used by the imputed-item loss.
        imputer_only: gradients reach the imputer alone (the text projection is taken as fixed)."""
        if self.text_proj is None:
            raise ValueError("imputed_table needs text (use_text=True)")
        table = self._text_part(stand_in=self.has_id)
        if imputer_only:
            table = table.detach()
        imputed = self._imputed_ids()
        if imputed is not None:
            table = table + imputed
        return self._without_padding(table)

    def _text_part(self, stand_in: torch.Tensor | None = None) -> torch.Tensor:
        """The text's share of every item's representation [n_items + 1, d_model]: the projected LM
        embedding, plus the mean of its tokens' learned embeddings (token_embeddings).
        stand_in: bool [n_items + 1], trained items shown as new ones: with token_trained_only, their mean
        then leaves out the tokens that no other trained item has."""
        part = self.text_proj(self.text_table)
        if self.token_emb is not None:
            # The mean over each row's tokens, padding left out: token_emb(tokens) to float rounding, in a
            # fraction of the time (token_means).
            weights, by_token = self.bag_weights, self.bag_weights_by_token
            if stand_in is not None and self.cfg.token_trained_only:
                weights = torch.where(stand_in[self.bag_rows], self.bag_shared_weights, weights)
                by_token = weights[self.bag_order]
            part = part + token_means(self.token_emb.weight, self.bag_tokens, self.bag_offsets, weights,
                                      self.bag_rows_by_token, self.bag_token_offsets, by_token)
        return part

    def _imputed_ids(self, rows: torch.Tensor | None = None) -> torch.Tensor | None:
        """What stands in for a missing id embedding, for every item [n_items + 1, d_model] or for the item
        indices `rows` [len(rows), d_model]: the imputer's map of the LM text, or the weighted ids of the
        text neighbours; None when nothing is imputed."""
        if self.imputer is not None:
            return self.imputer(self.text_table if rows is None else self.text_table[rows])
        if self.id_emb is not None and self.neighbors.shape[1]:
            neighbors, weights = (self.neighbors, self.neighbor_weights) if rows is None else (self.neighbors[rows], self.neighbor_weights[rows])
            return (self.id_emb.weight[neighbors] * weights.unsqueeze(-1)).sum(1)  # (rows, d)
        return None

    @staticmethod
    def _without_padding(table: torch.Tensor) -> torch.Tensor:
        """`table` (a tensor this call made) with row 0 (padding) set to zero in place, and no gradient through
        it: a masked copy of the whole table cost a pass over it forward and backward."""
        table[0] = 0.0
        return table

    def encode(self, history: torch.Tensor, table: torch.Tensor | None = None, last_only: bool = False) -> torch.Tensor:
        """history: [B, T] left-padded item indices -> hidden states [B, T, d_model].

        last_only: only the state after the whole history, [B, 1, d_model] — the inference path. The last
        block then computes its query, MLP and norms for the last step alone (the earlier blocks still
        need every step): the same numbers as encode(...)[:, -1:] at a fraction of the cost."""
        table = self.item_table() if table is None else table
        B, T = history.shape
        real = history != 0  # (B, T)
        # Right-aligned positions: the most recent step always has position max_len - 1.
        pos = torch.arange(self.cfg.max_len - T, self.cfg.max_len, device=history.device)
        x = F.embedding(history, table) * math.sqrt(self.cfg.d_model) + self.pos_emb(pos)
        x = self.drop(x) * real.unsqueeze(-1)
        causal = torch.ones(T, T, dtype=torch.bool, device=history.device).tril()
        # Attend to real earlier steps; every step may attend to itself so padded rows never see only -inf.
        allowed = causal & (real.unsqueeze(1) | torch.eye(T, dtype=torch.bool, device=history.device))  # (B, T, T)
        for i, block in enumerate(self.blocks):
            x = block(x, allowed, last_only and i == len(self.blocks) - 1)
        return self.ln_f(x)

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        """Scores of every item as the next step after each position: [B, T, n_items + 1]."""
        table = self.item_table()
        return self.encode(history, table) @ table.T

    def score_last(self, history: torch.Tensor) -> torch.Tensor:
        """Scores of every item after the whole history: [B, n_items + 1] (column 0 = padding)."""
        table = self.item_table()
        return self.encode(history, table, last_only=True)[:, -1] @ table.T


@torch.no_grad()
def trained_token_counts(tokens: torch.Tensor, has_id: torch.Tensor, vocab: int) -> torch.Tensor:
    """For every token id [vocab]: how many trained items' rows (has_id) hold it, each row once; padding
    (0) counts none. 0: training never reached its embedding; 1: only one item taught it."""
    rows = tokens[has_id]
    row_index = torch.arange(len(rows)).unsqueeze(1).expand_as(rows)
    pairs = torch.unique(row_index.flatten() * vocab + rows.flatten())  # each (row, token) once
    counts = torch.bincount(pairs % vocab, minlength=vocab)
    counts[0] = 0
    return counts


def tokens_kept(tokens: torch.Tensor, rows: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """tokens [n_items + 1, L] (0 = padding) with, in the rows marked by `rows`, every token id that
    `allowed` [vocab] does not allow replaced by padding; other rows unchanged."""
    out = tokens.clone()
    out[rows] = torch.where(allowed[tokens[rows]], tokens[rows], torch.zeros_like(tokens[rows]))
    return out


@torch.no_grad()
def token_bags(tokens: torch.Tensor, vocab: int, shared: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The (row, token) pairs of `tokens` [rows, L] (0 = padding) for token_means: bag_tokens [P] the real tokens,
    row by row (bag_offsets [rows]: where each row's pairs start; bag_rows [P]: the row of each pair); bag_weights [P]: 1 / the
    row's count of real tokens (a row's mean); the pairs grouped by token (bag_order, bag_rows_by_token,
    bag_token_offsets [vocab], bag_weights_by_token). With `shared` (the same rows with some tokens replaced
    by padding): bag_shared_weights [P], the weights of that mean (0 for a token it drops)."""
    real = tokens != 0
    counts = real.sum(1)
    flat = tokens[real]  # row-major: each row's tokens in order
    rows = torch.arange(len(tokens), device=tokens.device).repeat_interleave(counts)
    offsets = torch.zeros_like(counts)
    offsets[1:] = counts.cumsum(0)[:-1]
    weights = (1.0 / counts.clamp(min=1).float())[rows]
    order = torch.argsort(flat, stable=True)
    bags = {"bag_tokens": flat, "bag_offsets": offsets, "bag_rows": rows, "bag_weights": weights, "bag_order": order,
            "bag_rows_by_token": rows[order], "bag_weights_by_token": weights[order],
            "bag_token_offsets": torch.searchsorted(flat[order], torch.arange(vocab, device=tokens.device))}
    if shared is not None:
        kept = shared[real] != 0
        bags["bag_shared_weights"] = kept.float() / (shared != 0).sum(1).clamp(min=1).float()[rows]
    return bags


class _TokenMeans(torch.autograd.Function):
    """Σ over a row's (token, weight) pairs of weight × embedding[token], for every row: a weighted embedding
    bag, whose gradient for the embeddings is the same bag read the other way round (for every token, Σ over
    its rows of weight × the row's gradient). torch's own embedding-bag backward sorts every pair at every
    step: at 100,000 items × 16 tokens on 2 threads of a loaded box, nn.EmbeddingBag took 1.86 s forward and
    3.14 s backward, this 0.23 s and 0.12 s (one micro-benchmark, alternating, on 2026-12-02)."""

    @staticmethod
    def forward(ctx, weight, tokens, offsets, weights, rows_by_token, token_offsets, weights_by_token):
        ctx.save_for_backward(rows_by_token, token_offsets, weights_by_token)
        return F.embedding_bag(tokens, weight, offsets, mode="sum", per_sample_weights=weights)

    @staticmethod
    def backward(ctx, grad):
        rows_by_token, token_offsets, weights_by_token = ctx.saved_tensors
        grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_weight = F.embedding_bag(rows_by_token, grad.contiguous(), token_offsets, mode="sum", per_sample_weights=weights_by_token)
        return grad_weight, None, None, None, None, None, None


def token_means(weight: torch.Tensor, tokens: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor,
                rows_by_token: torch.Tensor, token_offsets: torch.Tensor, weights_by_token: torch.Tensor) -> torch.Tensor:
    """Every row's weighted sum of its tokens' embeddings [rows, d] (token_bags' pairs; with its weights, the
    mean that nn.EmbeddingBag(mode="mean", padding_idx=0) gives, to float rounding, with the same gradient)."""
    return _TokenMeans.apply(weight, tokens, offsets, weights, rows_by_token, token_offsets, weights_by_token)


@torch.no_grad()
def content_neighbors(text: torch.Tensor, has_id: torch.Tensor, k: int, temperature: float, chunk: int = 4096):
    """For every item row: the k trained items most similar by LM text (cosine; never the item itself)
    and softmax(similarity / temperature) weights. Rows are computed in chunks, so memory stays
    O(chunk × trained items)."""
    n = text.shape[0]
    trained = torch.nonzero(has_id, as_tuple=False).squeeze(1)
    k = min(k, max(0, len(trained) - 1))
    if k == 0:
        return torch.zeros(n, 0, dtype=torch.long), torch.zeros(n, 0)
    unit = F.normalize(text, dim=1)
    candidates = unit[trained].T  # (D, n_trained)
    neighbors, weights = torch.zeros(n, k, dtype=torch.long), torch.zeros(n, k)
    for start in range(0, n, chunk):
        rows = torch.arange(start, min(n, start + chunk))
        sim = unit[rows] @ candidates  # (c, n_trained)
        sim[rows.unsqueeze(1) == trained.unsqueeze(0)] = float("-inf")  # an item is not its own neighbour
        top, idx = sim.topk(k, dim=1)
        neighbors[rows], weights[rows] = trained[idx], torch.softmax(top / temperature, dim=1)
    return neighbors, weights


class TopKGraph(nn.Module):
    """The inference path that is exported to ONNX (see serving/contract.py for the contract).

    The item table is computed once and frozen into the graph as a constant, so serving does no
    language-model work at all.
    """

    def __init__(self, model: TextSASRec, k: int):
        super().__init__()
        self.model = model.eval()
        self.k = min(k, model.cfg.n_items)
        with torch.no_grad():
            self.register_buffer("table", model.item_table().detach().clone())
        self.register_buffer("padding", model.unscorable.unsqueeze(0).clone())  # padding + unrepresentable items

    def forward(self, history: torch.Tensor, exclude_seen: torch.Tensor):
        user = self.model.encode(history, self.table, last_only=True)[:, -1]  # (B, d)
        scores = user @ self.table.T  # (B, n_items + 1)
        seen = torch.zeros_like(scores).scatter(1, history, 1.0) > 0  # (B, n_items + 1); column 0 = padding
        drop = (seen & exclude_seen.unsqueeze(1)) | self.padding
        scores = scores.masked_fill(drop, float("-inf"))
        top_scores, top_items = torch.topk(scores, self.k, dim=1)
        return top_items, top_scores, user
