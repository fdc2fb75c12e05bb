"""Object storage behind one small async interface (see ``base.Storage``)."""

from __future__ import annotations

from updown_app.caches.units import CacheUnits
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


def create_storage(settings: Settings, units: CacheUnits | None = None) -> Storage:
    """The backend the settings name; with ``caches.backends`` (or a ``caches.units_file``) set, its object reads go
    through those backend cache units (``read_cache``). ``units``: the app's one view of the cache units, shared
    with the purger (built from the settings when not given)."""
    caches = settings.caches
    if not caches.backends and caches.units_file is None:
        return _backend(settings)
    from updown_app.storage.read_cache import ReadCacheStorage, check_presignable

    units = units or CacheUnits.from_settings(caches)
    if units.backends:  # a unit that joins later while the store can't presign: its reads fall back, counted
        check_presignable(settings)
    return ReadCacheStorage(_backend(settings), units, chunk_size=settings.chunk_size)


def _backend(settings: Settings) -> Storage:
    """The store itself; a network store behind its breaker (``breaker.GuardedStorage``)."""
    store = _store(settings)
    network = settings.storage.swift if settings.storage.backend == "swift" else settings.storage.s3
    if settings.storage.backend == "local" or network is None or network.breaker_cooldown <= 0:
        return store
    from updown_app.storage.breaker import GuardedStorage

    return GuardedStorage(store, network.breaker_cooldown)


def _store(settings: Settings) -> Storage:
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
