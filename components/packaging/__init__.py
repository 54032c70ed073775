"""Packaging: a model bundle folder → a Bento model in the store → a slim Bento of `serving.service`."""

from components.packaging.package import bento_requirements, build_bento, export_bento, save_bundle_to_store

__all__ = ["save_bundle_to_store", "build_bento", "export_bento", "bento_requirements"]
