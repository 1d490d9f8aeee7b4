"""The model registry: immutable versions and an atomically replaced active pointer.

``base.Registry`` holds what every store shares (sealing a staged version, reading
manifests); ``local.LocalRegistry`` keeps versions in a folder (``CXR_MODELS_DIR``),
``objects.ObjectStoreRegistry`` on S3-compatible object storage (``CXR_MODELS_URI``);
``files`` names the files of a version. Either way, the worker writes a version into a local
staging folder and verifies it by loading it back; the store checksums and seals it, commits
it, and only a committed version can become the active one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.registry.base import ActivePointer, Registry
from shared.registry.local import LocalRegistry

if TYPE_CHECKING:
    from shared.config import Settings

__all__ = ["ActivePointer", "LocalRegistry", "Registry", "open_registry"]


def open_registry(settings: Settings) -> Registry:
    """The registry the settings name: object storage for CXR_MODELS_URI, else the folder."""
    if settings.models_uri:
        # boto3 is imported only by processes that use object storage
        from shared.registry.objects import ObjectStoreRegistry

        return ObjectStoreRegistry(settings.models_uri, settings.effective_model_cache_dir,
                                   endpoint_url=settings.s3_endpoint_url)
    return LocalRegistry(settings.models_dir)
