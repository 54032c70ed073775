"""A registration for tests/test_registry.py to kill: run as a child process, it opens an MLflow run the way the
flows do (tagged with its process), logs a bundle and registers it with the real publish.package_and_register
against the real MLflow store and Bento store of its environment, and stops at one stage — inside the Bento build
(where the audit's kill -9 landed: the Bento model is stored, no Bento yet) or inside the archive export (the
Bento is built too) — writing what it has done to a JSON file, then waiting for the SIGKILL.

    python tests/killed_registration.py NAME EXPERIMENT BUNDLE_DIR REPORT_FILE build|export
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(name: str, experiment: str, bundle: str, report: str, stage: str) -> None:
    from components import settings

    settings.apply_environment()  # the parent's BEHAVIORFLOW_HOME, BENTOML_HOME and MLFLOW_TRACKING_URI
    import mlflow

    from components import registry
    from components.packaging import package, publish
    from components.registry.tracking import log_folder

    registry.configure(experiment=experiment)
    done: dict = {"pid": os.getpid()}

    def stop_here():
        done.update(stage=stage, run_id=mlflow.active_run().info.run_id)
        Path(report + ".tmp").write_text(json.dumps(done))
        os.replace(report + ".tmp", report)
        time.sleep(600)  # the parent kills this process here
        raise SystemExit("not killed")

    save, build = package.save_bundle_to_store, package.build_bento

    def save_bundle_to_store(bundle_dir, **kwargs) -> str:
        done["bento_model_tag"], done["version"] = save(bundle_dir, **kwargs), kwargs["labels"]["registry_version"]
        return done["bento_model_tag"]

    def build_bento(model_tag: str, **kwargs) -> str:
        if stage == "build":
            stop_here()
        done["bento_tag"] = build(model_tag, **kwargs)
        return done["bento_tag"]

    def export_bento(bento_tag: str, out_path: Path) -> Path:
        stop_here()

    package.save_bundle_to_store, package.build_bento, package.export_bento = save_bundle_to_store, build_bento, export_bento
    with mlflow.start_run(tags={registry.PROCESS_TAG: registry.this_process()}) as run:
        log_folder(Path(bundle), registry.BUNDLE_ARTIFACT)
        publish.package_and_register(Path(bundle), settings.runs_dir() / run.info.run_id, "fp-killed", {"gate": "PASSED: killed test"},
                                     promote=True, name=name)


if __name__ == "__main__":
    main(*sys.argv[1:])
