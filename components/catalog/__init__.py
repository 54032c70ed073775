"""Catalog: add brand-new items to a trained model (scored from their text) without retraining."""

from components.catalog.extend import (
    CHECKPOINT_ARTIFACT,
    CHECKPOINT_FILE,
    extend_catalog,
    load_checkpoint,
    log_checkpoint,
    save_checkpoint,
    unchanged_scores,
)

__all__ = ["CHECKPOINT_ARTIFACT", "CHECKPOINT_FILE", "extend_catalog", "load_checkpoint", "log_checkpoint", "save_checkpoint", "unchanged_scores"]
