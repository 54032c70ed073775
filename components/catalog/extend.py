"""Add items to a trained model's catalog without retraining.

A brand-new item needs no interactions to be recommended: the model represents an item it never trained
on by its text — the projected language-model embedding, its tokens' learned embeddings
(`token_embeddings`) and the imputed id (`cold_imputation`) — and
that is exactly how it already scores the catalog items that had no training interactions. So a new
item is a new row of the item table, computed from its text with the trained weights; every other row,
and every user's state, stays as it was. What changes is only which items compete for the top K.

    save_checkpoint(model, text config, path)
    log_checkpoint(model, text config, run dir)   saved and logged to the active MLflow run (both flows)
    load_checkpoint(path) -> model, text config
    extend_catalog(model, new text embeddings)    -> the model with the new rows appended
    unchanged_scores(old, new, histories)         -> max |score difference| on the old items (must be ~0)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from components.errors import BehaviorflowError
from components.models.text_sasrec import TextSASRec, TextSASRecConfig
from components.tokenization import TextEncoderConfig
from serving import contract

CHECKPOINT_ARTIFACT = "torch"  # the run artifact folder holding CHECKPOINT_FILE
CHECKPOINT_FILE = "model.pt"
# Rows that are functions of the catalog, rebuilt by the extended model's constructor: the LM text table,
# which items have a trained id, the text neighbours (among trained items only, so old rows keep theirs) and
# the items' token ids (token_embeddings).
_CATALOG_BUFFERS = ("text_table", "has_id", "neighbors", "neighbor_weights", "item_tokens")


def save_checkpoint(model: TextSASRec, text: TextEncoderConfig, path: Path) -> Path:
    """The trained weights, the model config and the text-encoder config that made its item embeddings."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"config": dataclasses.asdict(model.cfg), "state_dict": state, "text": dataclasses.asdict(text)}, path)
    return path


def log_checkpoint(model: TextSASRec, text: TextEncoderConfig, run_dir: Path) -> None:
    """Save the checkpoint in `run_dir` and log it to the active MLflow run as CHECKPOINT_ARTIFACT/CHECKPOINT_FILE,
    where `registry.download_checkpoint` finds it. Not part of the Bento."""
    import mlflow

    mlflow.log_artifact(str(save_checkpoint(model, text, run_dir / CHECKPOINT_FILE)), artifact_path=CHECKPOINT_ARTIFACT)


def load_checkpoint(path: Path) -> tuple[TextSASRec, TextEncoderConfig]:
    saved = torch.load(path, map_location="cpu", weights_only=True)
    # Checkpoints from before token embeddings have none, and those from before token_trained_only counted every token.
    config = TextSASRecConfig(**({"token_embeddings": False, "token_trained_only": False} | saved["config"]))
    state = saved["state_dict"]
    tokens = state["item_tokens"][1:] if "item_tokens" in state else None
    model = TextSASRec(config, state["text_table"][1:] if config.use_text else None, state["has_id"], tokens)
    model.load_state_dict(state)
    return model.eval(), TextEncoderConfig(**saved["text"])


def extend_catalog(model: TextSASRec, text_embeddings: np.ndarray, item_tokens: np.ndarray | None = None) -> TextSASRec:
    """`model` with len(text_embeddings) new items appended (indices n_items + 1 …), each represented by
    its text: they have no trained id, as items without training interactions. Trained weights are shared
    by value; the old items' rows and scores do not change. item_tokens: the new items' token ids (padding
    0), needed when the model has token embeddings (model.token_embeddings)."""
    cfg = model.cfg
    if not (cfg.use_text and cfg.use_id):
        raise BehaviorflowError("only a model with text and ids can take new items: an id-only model cannot represent an item it never trained on")
    new = torch.as_tensor(np.asarray(text_embeddings, dtype=np.float32))
    if new.ndim != 2 or new.shape[1] != cfg.text_dim:
        raise BehaviorflowError(f"new items' text embeddings have shape {tuple(new.shape)}; the model reads {cfg.text_dim}-wide embeddings")
    old_n, added = cfg.n_items, new.shape[0]
    text = torch.cat([model.text_table[1:].detach().cpu(), new])
    has_id = torch.cat([model.has_id.detach().cpu(), torch.zeros(added, dtype=torch.bool)])
    tokens = None
    if model.token_emb is not None:
        if item_tokens is None or np.ndim(item_tokens) != 2 or len(item_tokens) != added:
            raise BehaviorflowError(f"the model reads its items' tokens (token_embeddings): give the {added} new items' token ids, one row each")
        ids = np.asarray(item_tokens, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= cfg.token_vocab):
            raise BehaviorflowError(f"new items' token ids reach {int(ids.max())}; the model's tokenizer has {cfg.token_vocab}: tokenize them with the model's text config")
        new_tokens = torch.from_numpy(ids)
        old_tokens = model.item_tokens[1:].detach().cpu()
        width = max(old_tokens.shape[1], new_tokens.shape[1])  # padding (0) adds nothing to a row's mean
        tokens = torch.cat([F.pad(old_tokens, (0, width - old_tokens.shape[1])), F.pad(new_tokens, (0, width - new_tokens.shape[1]))])
    extended = TextSASRec(dataclasses.replace(cfg, n_items=old_n + added), text, has_id, tokens)
    state = extended.state_dict()
    for key, value in model.state_dict().items():
        if key.split(".")[-1] in _CATALOG_BUFFERS:
            continue
        if key == "id_emb.weight":  # new rows stay unused: has_id is False for them
            state[key][: old_n + 1] = value
        else:
            state[key] = value.detach().cpu().clone()
    extended.load_state_dict(state)
    return extended.eval()


@torch.no_grad()
def unchanged_scores(old: TextSASRec, new: TextSASRec, histories: Sequence[np.ndarray], batch_size: int = 256) -> float:
    """The largest |score difference| between `old` and `new` over `old`'s items, after each history."""
    n = old.cfg.n_items + 1
    old, new = old.eval(), new.eval()
    worst = 0.0
    for start in range(0, len(histories), batch_size):
        padded = torch.from_numpy(contract.pad_histories(histories[start : start + batch_size], old.cfg.max_len))
        a, b = old.score_last(padded)[:, 1:n], new.score_last(padded)[:, 1:n]
        worst = max(worst, float((a - b).abs().max()))
    return worst
