"""The MLflow side: experiment set-up, the current champion, and all-or-nothing registration."""

from components.registry.registry import (
    ANY_CHAMPION,
    BUNDLE_ARTIFACT,
    ChampionInfo,
    ModelRef,
    check_reachable,
    configure,
    download_bundle,
    download_checkpoint,
    finalize_version,
    find_champion,
    list_versions,
    pending_version,
    resolve_version,
    version_by_alias,
)

__all__ = [
    "ANY_CHAMPION",
    "BUNDLE_ARTIFACT",
    "ChampionInfo",
    "ModelRef",
    "check_reachable",
    "configure",
    "download_bundle",
    "download_checkpoint",
    "finalize_version",
    "find_champion",
    "list_versions",
    "pending_version",
    "resolve_version",
    "version_by_alias",
]
