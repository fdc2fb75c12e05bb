"""Object storage behind one small async interface (see ``base.Storage``)."""

from __future__ import annotations

from updown_app.settings import Settings
from updown_app.storage.base import (
    ObjectInfo,
    Storage,
    StorageError,
    StorageIntegrityError,
    StorageUnavailableError,
)


def create_storage(settings: Settings) -> Storage:
    """The backend the settings name."""
    if settings.storage.backend == "local":
        from updown_app.storage.local import LocalStorage

        return LocalStorage(settings.objects_path, chunk_size=settings.chunk_size)
    raise ValueError(f"unknown storage backend {settings.storage.backend!r}")


__all__ = [
    "ObjectInfo",
    "Storage",
    "StorageError",
    "StorageIntegrityError",
    "StorageUnavailableError",
    "create_storage",
]
