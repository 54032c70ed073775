"""Input data: readers for events and items (CSV and JSON Lines, plain or compressed; parquet; MovieLens-1M) and the
bundled synthetic sample."""

from components.data.config import DataConfig
from components.data.readers import (
    Dataset,
    epoch_seconds,
    load_dataset,
    load_events,
    load_items,
    load_movielens,
)
from components.data.sample import SampleConfig, generate_sample, write_sample

__all__ = [
    "DataConfig",
    "Dataset",
    "SampleConfig",
    "epoch_seconds",
    "generate_sample",
    "load_dataset",
    "load_events",
    "load_items",
    "load_movielens",
    "write_sample",
]
