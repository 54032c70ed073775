"""Training: fit the next-item model with full cross-entropy, early-stopped on validation NDCG@10."""

from components.training.train import TrainConfig, TrainResult, new_model, train_id_only_baseline, train_model

__all__ = ["TrainConfig", "TrainResult", "new_model", "train_id_only_baseline", "train_model"]
