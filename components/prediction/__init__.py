"""Batch prediction: top-K next items for a file of user histories, with a registered model."""

from components.prediction.predict import PredictConfig, PredictionSummary, predict_file, predict_with_registered_model, read_histories

__all__ = ["PredictConfig", "PredictionSummary", "predict_file", "predict_with_registered_model", "read_histories"]
