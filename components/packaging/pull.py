"""Pull a registered model's Bento by alias or version: registry → version → its run's `.bento` archive →
the local Bento store. What a serving team runs to get the promoted model without the training data."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from components.errors import BehaviorflowError
from components.packaging.package import import_bento

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class PulledBento:
    model: str  # the reference as given, e.g. behaviorflow-recommender@champion
    version: str  # the registry version it resolved to
    bento_tag: str  # now in the local Bento store
    bento_model_tag: str  # the Bento model the service must load (BEHAVIORFLOW_MODEL_TAG)
    already_local: bool


def pull_bento(reference: str, command: str = "bento pull") -> PulledBento:
    """Resolve NAME@ALIAS or NAME/VERSION and make its Bento available locally (downloading only if needed).
    `command` names the command that pulls it, in the refusal of a version whose registration did not complete."""
    import bentoml
    import mlflow
    from bentoml.exceptions import NotFound

    from components import registry, settings

    registry.configure()
    version = registry.resolve_version(registry.ModelRef.parse(reference))
    registry.check_usable(version, command)  # a version a killed registration left has no Bento
    where = f"{reference} (version {version.version}, MLflow run {version.run_id})"
    bento_tag, model_tag = version.tags.get("bento_tag"), version.tags.get("bento_model_tag", "")
    if not bento_tag:
        raise BehaviorflowError(f"{where} has no 'bento_tag' tag: it was not packaged by 'behaviorflow retrain'")
    try:
        bentoml.bentos.get(bento_tag)
        return PulledBento(reference, str(version.version), bento_tag, model_tag, already_local=True)
    except NotFound:
        pass
    client = mlflow.MlflowClient(settings.tracking_uri())
    archives = registry.bento_archives(client, version)
    if len(archives) != 1:
        raise BehaviorflowError(f"{where}: expected one .bento archive under the run's '{registry.BENTO_ARTIFACT}/' artifacts, found {archives}")
    with tempfile.TemporaryDirectory(prefix="bento-pull-") as tmp:
        local = mlflow.artifacts.download_artifacts(run_id=version.run_id, artifact_path=archives[0], dst_path=tmp, tracking_uri=settings.tracking_uri())
        imported = import_bento(Path(local))
    if imported != bento_tag:
        raise BehaviorflowError(f"{where}: the archive holds Bento {imported}, but the version is tagged {bento_tag}")
    log.info("pulled %s → Bento %s", where, bento_tag)
    return PulledBento(reference, str(version.version), bento_tag, model_tag, already_local=False)
