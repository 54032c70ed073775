"""Where behaviorflow keeps its state, and the embedded defaults that make `make run` work offline.

Everything lives under one project-local folder (`BEHAVIORFLOW_HOME`, default `./.behaviorflow`):
MLflow's SQLite store and artifacts, Prefect's ephemeral API database, the Bento store, the
Great Expectations project (Data Docs) and caches. Pointing at real servers is configuration only:
set `MLFLOW_TRACKING_URI` and/or `PREFECT_API_URL` and they are used instead.

`apply_environment()` must run before prefect, bentoml or mlflow are imported: they read these
variables at import time.
"""

from __future__ import annotations

import os
from pathlib import Path

# One place owns these names: the registry, the serving side and the tests read them from here.
from serving.contract import BENTO_MODEL_NAME, BENTO_SERVICE_NAME, MODEL_TAG_ENV  # noqa: F401 (re-exported)

REGISTERED_MODEL_NAME = "behaviorflow-recommender"
CHALLENGER_ALIAS = "challenger"
CHAMPION_ALIAS = "champion"
EXPERIMENT_NAME = "behaviorflow"

# Run offline and quietly (see docs/stack notes: ORT_DISABLE_TELEMETRY is the non-obvious one).
OFFLINE_ENV = {
    "DO_NOT_TRACK": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "BENTOML_DO_NOT_TRACK": "True",
    "ORT_DISABLE_TELEMETRY": "1",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
    # A fresh Prefect database migrates in ~20 s, exactly the default start-up timeout.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "GIT_PYTHON_REFRESH": "quiet",
    # MLflow draws a bar for every artifact download (a champion's bundle, `predict`), terminal or not.
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


def check_device(name: str) -> None:
    """Refuse a `device` setting torch would not take ("auto", "cpu", "cuda", "cuda:N"), before anything runs:
    torch itself only says so when the model is moved, after validation and preparation."""
    import re

    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(name)):
        raise ValueError(f"device {name!r} is not one of auto, cpu, cuda, cuda:N (e.g. cuda:1)")


def resolve_device(name: str):
    """The torch device a `device` setting names: "auto" = cuda when torch sees a GPU, else cpu; any other
    name as torch spells it (cpu, cuda, cuda:1). Training and the text encoder both read it."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def home() -> Path:
    """The state folder (created on demand)."""
    # Empty counts as unset: a work pool's empty job variable means "the worker's own", not the working directory.
    path = Path(os.environ.get("BEHAVIORFLOW_HOME") or ".behaviorflow").resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home() / 'mlflow.db'}"


def artifact_root() -> str:
    return (home() / "mlartifacts").as_uri()


def gx_root() -> Path:
    return home() / "gx"


def cache_dir() -> Path:
    path = home() / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def runs_dir() -> Path:
    path = home() / "runs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def apply_environment() -> Path:
    """Set the embedded defaults (never overriding what the user set) and return the state folder."""
    root = home()
    defaults = OFFLINE_ENV | {"PREFECT_HOME": str(root / "prefect"), "BENTOML_HOME": str(root / "bentoml")}
    for key, value in defaults.items():
        if not os.environ.get(key):  # unset or empty (an empty BENTOML_HOME would be the working directory)
            os.environ[key] = value
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri()
    return root


def count_from_env(name: str, default: int, what: str) -> int:
    """A whole number from the environment variable `name` (unset or empty: `default`); anything else is refused,
    naming the variable and `what` it counts (e.g. "validation runs to keep (0 = keep all)")."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit():
        from components.errors import BehaviorflowError

        raise BehaviorflowError(f"{name}={value!r}: expected a whole number of {what}")
    return int(value)

