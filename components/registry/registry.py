"""MLflow registry operations for behaviorflow.

Every registered version carries the alias `challenger` when it is registered and `champion` once the
gate has passed (promotion = moving an alias; MLflow keeps no history of where an alias pointed, so
each version is tagged with what happened to it). Registration is all-or-nothing: if tagging or
aliasing fails, the new version is deleted and the aliases are put back where they were.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from components import settings

log = logging.getLogger(__name__)


@dataclass
class ChampionInfo:
    version: str
    run_id: str
    bundle_dir: Path  # the champion's model bundle, downloaded (serving/contract.py layout)
    tags: dict


def configure(experiment: str = settings.EXPERIMENT_NAME) -> str:
    """Point MLflow at the tracking URI and make sure the experiment exists; return its id."""
    import mlflow

    mlflow.set_tracking_uri(settings.tracking_uri())
    found = mlflow.get_experiment_by_name(experiment)
    if found is not None:
        experiment_id = found.experiment_id
    elif settings.tracking_uri().startswith("sqlite:"):
        # A local SQLite store keeps artifacts in the state folder; a server uses its own artifact root.
        experiment_id = mlflow.create_experiment(experiment, artifact_location=settings.artifact_root())
    else:
        experiment_id = mlflow.create_experiment(experiment)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def _client():
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=settings.tracking_uri())


def _alias_version(client, alias: str, name: str = settings.REGISTERED_MODEL_NAME) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def find_champion(download_to: Path, name: str = settings.REGISTERED_MODEL_NAME) -> ChampionInfo | None:
    """The current champion and its bundle, or None on the first run."""
    import mlflow

    client = _client()
    version = _alias_version(client, settings.CHAMPION_ALIAS, name)
    if version is None:
        return None
    mv = client.get_model_version(name, version)
    local = mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path="bundle", dst_path=str(download_to), tracking_uri=settings.tracking_uri())
    return ChampionInfo(version=str(version), run_id=mv.run_id, bundle_dir=Path(local), tags=dict(mv.tags))


@contextmanager
def pending_version(model_uri: str, run_id: str, name: str = settings.REGISTERED_MODEL_NAME) -> Iterator[str]:
    """Register `model_uri` as a new version for the duration of the block; if the block raises, the
    version is deleted and the aliases are put back, so a failed packaging step leaves no trace."""
    import mlflow

    client = _client()
    previous = {alias: _alias_version(client, alias, name) for alias in (settings.CHALLENGER_ALIAS, settings.CHAMPION_ALIAS)}
    version = str(mlflow.register_model(model_uri, name, tags={"run_id": run_id}).version)
    try:
        yield version
    except BaseException:
        log.error("registration of version %s did not complete; removing it and restoring the aliases", version)
        client.delete_model_version(name, version)
        for alias, old in previous.items():
            if old is not None:
                client.set_registered_model_alias(name, alias, old)
            elif _alias_version(client, alias, name) is not None:
                client.delete_registered_model_alias(name, alias)
        raise


def finalize_version(version: str, tags: dict[str, str], promote: bool, name: str = settings.REGISTERED_MODEL_NAME) -> list[str]:
    """Tag the version, give it `challenger`, and `champion` if `promote`. Returns the aliases set."""
    client = _client()
    previous_champion = _alias_version(client, settings.CHAMPION_ALIAS, name)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value))
    client.set_registered_model_alias(name, settings.CHALLENGER_ALIAS, version)
    aliases = [settings.CHALLENGER_ALIAS]
    if promote:
        client.set_registered_model_alias(name, settings.CHAMPION_ALIAS, version)
        client.set_model_version_tag(name, version, "promoted", "true")
        if previous_champion and previous_champion != version:
            client.set_model_version_tag(name, previous_champion, "replaced_by", version)
        aliases.append(settings.CHAMPION_ALIAS)
    return aliases


def version_by_alias(alias: str, name: str = settings.REGISTERED_MODEL_NAME):
    """The ModelVersion that `alias` points to, or None."""
    client = _client()
    version = _alias_version(client, alias, name)
    return None if version is None else client.get_model_version(name, version)
