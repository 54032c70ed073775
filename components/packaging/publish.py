"""Package a model bundle and register it, as one all-or-nothing step: the ONNX model is logged to the
active MLflow run, a registry version is opened, the bundle goes into the Bento model store, the Bento is
built and its `.bento` archive logged with the run, and only then is the version tagged and aliased. If
any of it fails, the version is deleted and the aliases are put back (`registry.pending_version`), and
what it put into the local Bento store is removed.
Used by the retraining flow and by the add-items flow."""

from __future__ import annotations

import json
from pathlib import Path

from components import settings
from components.registry import ANY_CHAMPION
from serving import contract


def package_and_register(
    bundle: Path, run_dir: Path, data_fingerprint: str, tags: dict[str, str], promote: bool, name: str = settings.REGISTERED_MODEL_NAME,
    gated_against: object = ANY_CHAMPION,
) -> dict:
    """Returns {version, aliases, bento_tag, bento_archive, model_uri, not_promoted}. `tags` go on the model
    version, next to bento_tag, bento_model_tag and data_fingerprint; `promote` also moves `champion`, if the
    champion is still `gated_against` (a version, or None for none; registry.finalize_version; left out: no
    such check).
    If registration fails, the Bento and Bento model it put into the local store are removed too."""
    import mlflow

    from components import registry
    from components.packaging.package import build_bento, export_bento, save_bundle_to_store
    from components.registry.tracking import log_onnx_model

    run_id = mlflow.active_run().info.run_id
    model_uri = log_onnx_model(bundle / contract.MODEL_FILE, {"data_fingerprint": data_fingerprint})
    stored: list[str] = []  # what this registration put into the local Bento store, removed if it fails
    try:
        with registry.pending_version(model_uri, run_id, name=name) as version:
            manifest_path = bundle / contract.MANIFEST_FILE
            manifest = json.loads(manifest_path.read_text()) | {"registry_version": version, "run_id": run_id}
            manifest_path.write_text(json.dumps(manifest, indent=2))
            labels = {"registry_version": version, "run_id": run_id, "data_fingerprint": data_fingerprint}
            model_tag = save_bundle_to_store(bundle, labels=labels, metadata=manifest)
            stored.append(model_tag)
            bento_tag = build_bento(model_tag, labels=labels, version=f"v{version}-{run_id[:8]}")
            stored.append(bento_tag)
            archive = export_bento(bento_tag, run_dir / f"{bento_tag.replace(':', '-')}.bento")
            mlflow.log_artifact(str(archive), artifact_path=registry.BENTO_ARTIFACT)
            aliases, held = registry.finalize_version(
                version,
                {"bento_tag": bento_tag, "bento_model_tag": model_tag, "data_fingerprint": data_fingerprint, **tags},
                promote=promote,
                name=name,
                gated_against=gated_against,
            )
    except BaseException:
        from components.interrupts import held_signals

        with held_signals("the registration's rollback"):
            _remove_from_store(stored)
        raise
    return {"version": version, "aliases": aliases, "bento_tag": bento_tag, "bento_archive": str(archive), "model_uri": model_uri,
            "not_promoted": held}


def _remove_from_store(tags: list[str]) -> None:
    """Delete the Bento (last) and Bento model a failed registration stored: left behind, an unregistered
    model would be the store's newest, which `bentoml serve` without a model tag loads."""
    import logging

    import bentoml

    for tag in reversed(tags):
        try:
            (bentoml.bentos if tag.startswith(settings.BENTO_SERVICE_NAME + ":") else bentoml.models).delete(tag)
        except Exception as exc:  # best effort: the registry rollback matters more
            logging.getLogger(__name__).warning("could not remove %s from the local Bento store: %s", tag, exc)
