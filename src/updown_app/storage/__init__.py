"""Object storage behind one small async interface (see ``base.Storage``)."""

from __future__ import annotations

from updown_app.settings import Settings
from updown_app.storage.base import (
    ObjectInfo,
    PartInfo,
    Storage,
    StorageAuthError,
    StorageError,
    StorageIntegrityError,
    StorageUnavailableError,
)


def create_storage(settings: Settings) -> Storage:
    """The backend the settings name; with ``caches.backends`` set, its object reads go through those backend
    cache units (``read_cache``)."""
    if not settings.caches.backends:
        return _backend(settings)
    from updown_app.storage.read_cache import ReadCacheStorage, check_presignable

    check_presignable(settings)
    return ReadCacheStorage(_backend(settings), settings.caches.backends, chunk_size=settings.chunk_size)


def _backend(settings: Settings) -> Storage:
    if settings.storage.backend == "local":
        from updown_app.storage.local import LocalStorage

        return LocalStorage(settings.objects_path, chunk_size=settings.chunk_size)
    if settings.storage.backend == "swift" and settings.storage.swift is not None:
        from updown_app.storage.swift import SwiftStorage

        return SwiftStorage(settings.storage.swift, chunk_size=settings.chunk_size)
    if settings.storage.backend == "s3" and settings.storage.s3 is not None:
        from updown_app.storage.s3 import S3Storage

        return S3Storage(settings.storage.s3, chunk_size=settings.chunk_size)
    raise ValueError(f"unknown storage backend {settings.storage.backend!r}")


__all__ = [
    "ObjectInfo",
    "PartInfo",
    "Storage",
    "StorageAuthError",
    "StorageError",
    "StorageIntegrityError",
    "StorageUnavailableError",
    "create_storage",
]
