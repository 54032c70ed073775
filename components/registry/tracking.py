"""What each retraining run records in MLflow: params, metrics, the validation result, the data
fingerprint, charts, the ONNX model, the model bundle and the Bento archive."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path


def log_json(name: str, payload: dict) -> None:
    import mlflow

    mlflow.log_dict(json.loads(json.dumps(payload, default=str)), name)


def log_metrics(prefix: str, metrics: dict[str, float], step: int | None = None) -> None:
    """MLflow metric names cannot hold '@': HR@10 is logged as `{prefix}HR_at_10`."""
    import mlflow

    mlflow.log_metrics({f"{prefix}{k.replace('@', '_at_')}": float(v) for k, v in metrics.items()}, step=step)


def log_curve(curve: list[dict], prefix: str = "") -> None:
    """Per-epoch training loss, validation metrics and resident memory as MLflow metric histories (step =
    epoch); prefix names another model's curve (e.g. "id_only_")."""
    import mlflow

    for row in curve:
        values = {"train_loss": row["loss"], "val_NDCG_at_10": row["val_NDCG@10"], "val_HR_at_10": row["val_HR@10"], "train_rss_mb": row["rss_mb"]}
        mlflow.log_metrics({prefix + key: value for key, value in values.items()}, step=row["epoch"])


def log_figure_files(paths: list[Path]) -> None:
    import mlflow

    for path in paths:
        mlflow.log_artifact(str(path), artifact_path="charts")


def log_onnx_model(onnx_path: Path, metadata: dict) -> str:
    """Log the ONNX model as an MLflow LoggedModel and return its URI (models:/m-…)."""
    import mlflow
    import onnx

    model = onnx.load(str(onnx_path))
    info = mlflow.onnx.log_model(
        model,
        name="model",
        onnx_execution_providers=["CPUExecutionProvider"],  # the default lists CUDA first
        save_as_external_data=False,
        metadata=metadata,
    )
    return info.model_uri


def log_folder(path: Path, artifact_path: str) -> None:
    import mlflow

    mlflow.log_artifacts(str(path), artifact_path=artifact_path)


def scratch_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
