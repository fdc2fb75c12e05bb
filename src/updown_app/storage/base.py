"""The storage contract every backend (local directory, Swift, S3) implements.

- ``put`` consumes a stream whose size and MD5 are declared up front and makes the object visible atomically, only
  once the whole body arrived and matched: object stores check the MD5 themselves (Swift ``ETag``, S3
  ``Content-MD5``), the local backend checks it before its rename. If the stream raises, nothing is left behind.
- ``get`` streams a byte range; backends fetch the range, they never slice a whole object in memory.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass


class StorageError(Exception):
    """Any failure of the object store."""


class StorageIntegrityError(StorageError):
    """The store received a body that does not match the declared size or MD5; nothing was stored."""


class StorageUnavailableError(StorageError):
    """The store cannot be reached or answers with a server error; the operation may be retried later."""


class StorageAuthError(StorageUnavailableError):
    """The store refused our credentials (wrong, expired, or not allowed): an operator must act."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    md5: str | None = None


class Storage(abc.ABC):
    """Async object storage. Keys are ``/``-separated relative names made of safe characters."""

    name: str = "storage"

    @abc.abstractmethod
    async def put(self, key: str, body: AsyncIterator[bytes], *, size: int, md5: str) -> None:
        """Store ``body`` under ``key``; raise ``StorageIntegrityError`` on size/MD5 mismatch."""

    @abc.abstractmethod
    def get(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """Stream ``length`` bytes (to the end when None) from ``offset``; raise ``KeyError`` when missing.

        Implemented as an async generator; a consumer may ``asend`` the size it wants next (a hint that backends
        whose chunking is set by the network ignore)."""

    @abc.abstractmethod
    async def head(self, key: str) -> ObjectInfo | None:
        """Size (and MD5 where the store keeps it) of an object, or None when it does not exist."""

    @abc.abstractmethod
    async def delete(self, key: str) -> bool:
        """Remove an object; False when there was none."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Every object whose key starts with ``prefix`` (for purge jobs and tests)."""

    @abc.abstractmethod
    async def check(self) -> None:
        """Raise ``StorageError`` unless the store is reachable and usable (readiness)."""

    async def presigned_url(self, key: str, expires_in: int = 3600) -> str | None:
        """A URL that fetches ``key`` (GET/HEAD, Range allowed) without credentials until it expires: a Swift
        TempURL or an S3 presigned GET. None where the backend has no such thing (local)."""
        return None

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
