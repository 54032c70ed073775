"""Test set-up: every test session gets its own throw-away state folder (MLflow SQLite store, Bento
store, Prefect home, Great Expectations project), set before prefect/bentoml/mlflow are imported."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ["BEHAVIORFLOW_HOME"] = tempfile.mkdtemp(prefix="behaviorflow-test-")
for _var in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "PREFECT_HOME", "BENTOML_HOME"):
    os.environ.pop(_var, None)

from components import settings  # noqa: E402

settings.apply_environment()
