"""Package a model bundle and register it, as one all-or-nothing step: the ONNX model is logged to the
active MLflow run, a registry version is opened, the bundle goes into the Bento model store, the Bento is
built and its `.bento` archive logged with the run, and only then is the version tagged and aliased. If
any of it fails, the version is deleted and the aliases are put back (`registry.pending_version`).
Used by the retraining flow and by the add-items flow."""

from __future__ import annotations

import json
from pathlib import Path

from components import settings
from serving import contract


def package_and_register(
    bundle: Path, run_dir: Path, data_fingerprint: str, tags: dict[str, str], promote: bool, name: str = settings.REGISTERED_MODEL_NAME
) -> dict:
    """Returns {version, aliases, bento_tag, bento_archive, model_uri}. `tags` go on the model version,
    next to bento_tag, bento_model_tag and data_fingerprint; `promote` also moves `champion`."""
    import mlflow

    from components import registry
    from components.packaging.package import build_bento, export_bento, save_bundle_to_store
    from components.registry.tracking import log_onnx_model

    run_id = mlflow.active_run().info.run_id
    model_uri = log_onnx_model(bundle / contract.MODEL_FILE, {"data_fingerprint": data_fingerprint})
    with registry.pending_version(model_uri, run_id, name=name) as version:
        manifest_path = bundle / contract.MANIFEST_FILE
        manifest = json.loads(manifest_path.read_text()) | {"registry_version": version, "run_id": run_id}
        manifest_path.write_text(json.dumps(manifest, indent=2))
        labels = {"registry_version": version, "run_id": run_id, "data_fingerprint": data_fingerprint}
        model_tag = save_bundle_to_store(bundle, labels=labels, metadata=manifest)
        bento_tag = build_bento(model_tag, labels=labels, version=f"v{version}-{run_id[:8]}")
        archive = export_bento(bento_tag, run_dir / f"{bento_tag.replace(':', '-')}.bento")
        mlflow.log_artifact(str(archive), artifact_path="bento")
        aliases = registry.finalize_version(
            version,
            {"bento_tag": bento_tag, "bento_model_tag": model_tag, "data_fingerprint": data_fingerprint, **tags},
            promote=promote,
            name=name,
        )
    return {"version": version, "aliases": aliases, "bento_tag": bento_tag, "bento_archive": str(archive), "model_uri": model_uri}
