"""Tokenization: item text through the pretrained language model, offline, cached by fingerprint."""

from components.tokenization.encode import TextEncoderConfig, embed_items, item_tokens, resolve_model_path, tokenize_items

__all__ = ["TextEncoderConfig", "embed_items", "item_tokens", "resolve_model_path", "tokenize_items"]
