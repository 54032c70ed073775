"""Packaging: a model bundle folder → a Bento model in the store → a slim Bento of `serving.service`;
and back out: pull a registered version's Bento by alias, or write its container build context."""

from components.packaging.package import (
    bento_requirements,
    build_bento,
    docker_available,
    export_bento,
    import_bento,
    save_bundle_to_store,
    write_container_context,
)
from components.packaging.pull import PulledBento, pull_bento

__all__ = [
    "PulledBento",
    "bento_requirements",
    "build_bento",
    "docker_available",
    "export_bento",
    "import_bento",
    "pull_bento",
    "save_bundle_to_store",
    "write_container_context",
]
