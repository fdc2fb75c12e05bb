"""The storage contract every backend (local directory, Swift, S3) implements.

- ``put`` consumes a stream whose size and MD5 are declared up front and makes the object visible atomically, only
  once the whole body arrived and matched: object stores check the MD5 themselves (Swift ``ETag``, S3
  ``Content-MD5``), the local backend checks it before its rename. If the stream raises, nothing is left behind.
- ``get`` streams a byte range; backends fetch the range, they never slice a whole object in memory.
- ``open_file`` (local directory only) hands out the object's file descriptor, so a plain-HTTP download can be sent
  by the kernel (``sendfile``) instead of being read into the process.
- Parts (resumable uploads): ``put_part`` stores one bounded buffer under its own key and returns its MD5 (the
  store checks it on receipt); ``assemble`` turns the parts, in order, into one object: the default re-streams
  them through ``put`` (the caller's verifying stream), Swift writes an SLO manifest over them instead.
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from updown_app.core.errors import DependencyUnavailable


class StorageError(Exception):
    """Any failure of the object store."""


class StorageIntegrityError(StorageError):
    """The store received a body that does not match the declared size or MD5; nothing was stored."""


class StorageUnavailableError(StorageError, DependencyUnavailable):
    """The store cannot be reached or answers with a server error; the operation may be retried later."""

    def __init__(self, message: str = "the object store is unavailable; retry later") -> None:
        DependencyUnavailable.__init__(self, "storage", message)


class StorageAuthError(StorageUnavailableError):
    """The store refused our credentials (wrong, expired, or not allowed): an operator must act."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    md5: str | None = None
    modified: float | None = None  # POSIX time of the last write, where the store says (the sweeper's grace)


@dataclass(frozen=True)
class LocalFile:
    """A stored object open as a file of this host, for the kernel to send (``sendfile``) without the bytes passing
    through Python. ``size`` is the file's at opening (fstat); the caller compares it with the record's and closes
    ``fd``."""

    fd: int
    size: int


@dataclass(frozen=True)
class PartInfo:
    key: str
    size: int
    md5: str


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


async def md5_of(data: bytes) -> str:
    """MD5 of a part, off the event loop (hashlib releases the GIL)."""
    return await asyncio.get_running_loop().run_in_executor(None, md5_hex, data)


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

    @property
    def uncached(self) -> Storage:
        """This storage without a read cache in front (``read_cache`` overrides it): for reads that must not fill
        the backend cache units, such as the digest read-back of an unpublished upload."""
        return self

    def open_file(self, key: str) -> LocalFile | None:
        """The object as an open local file (``KeyError`` when missing), or None where objects are not files of
        this host (object stores): the caller then streams it with ``get``."""
        return None

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

    async def sweep_partials(self, older_than: float) -> tuple[int, int]:
        """Remove partial writes last touched before the POSIX time ``older_than`` that a crashed process left
        behind; returns (files, bytes). Object stores keep nothing of an interrupted PUT (their multipart and
        segment leftovers belong to upload sessions, which ``purge-uploads`` removes), so by default: none."""
        return 0, 0

    # Parts of resumable uploads ---------------------------------------------------------------------------------

    async def put_part(self, key: str, data: bytes) -> str:
        """Store one part (a bounded buffer) under ``key``; returns its MD5 hex. Not visible through ``list``
        on backends that keep parts apart (Swift: the segment container)."""
        md5 = await md5_of(data)

        async def body() -> AsyncIterator[bytes]:
            yield data

        await self.put(key, body(), size=len(data), md5=md5)
        return md5

    def get_part(self, key: str) -> AsyncIterator[bytes]:
        """Stream a stored part."""
        return self.get(key)

    async def delete_part(self, key: str) -> bool:
        return await self.delete(key)

    def list_parts(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        """Every stored part whose key starts with ``prefix`` (purges, orphan checks)."""
        return self.list(prefix)

    def assembles_in_place(self, parts: Sequence[PartInfo]) -> bool:
        """True when ``assemble`` makes the object from the stored parts without reading ``body``."""
        return False

    async def assemble(
        self, key: str, parts: Sequence[PartInfo], body: AsyncIterator[bytes], *, size: int, md5: str
    ) -> bool:
        """Make ``key`` the concatenation of ``parts``. ``body`` is that concatenation read back (verified by the
        caller where needed); backends that copy consume it whole, backends that ``assembles_in_place`` leave it
        unread. Returns True when the parts now belong to the object (the caller must not delete them), False when
        the caller should delete them."""
        await self.put(key, body, size=size, md5=md5)
        return False

    async def presigned_url(self, key: str, expires_in: int = 3600) -> str | None:
        """A URL that fetches ``key`` (GET/HEAD, Range allowed) without credentials until it expires: a Swift
        TempURL or an S3 presigned GET. None where the backend has no such thing (local)."""
        return None

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
