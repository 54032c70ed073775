"""The MLflow side: experiment set-up, the current champion, and all-or-nothing registration."""

from components.registry.registry import ChampionInfo, configure, finalize_version, find_champion, pending_version, version_by_alias

__all__ = ["ChampionInfo", "configure", "finalize_version", "find_champion", "pending_version", "version_by_alias"]
