"""Helpers shared by the object-store backends: upload bodies, resumable ranged reads, rate-limited error lines."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from updown_app.storage.base import StorageIntegrityError, StorageUnavailableError

INLINE_HASH_MAX = 64 * 1024


class ExactBody:
    """An upload body cut into parts of exact sizes; it knows whether any of it was consumed (a PUT whose body
    was consumed can't be retried) and raises StorageIntegrityError when the body is shorter or longer than
    declared, so a store never receives a short part under a declared Content-Length."""

    def __init__(self, source: AsyncIterator[bytes]) -> None:
        self.source = source
        # hashing.VerifiedBody raises before its last chunk unless the whole body's MD5 matched.
        self.verifies_md5 = bool(getattr(source, "verifies_md5", False))
        self.started = False
        self._pending = b""

    async def take(self, n: int) -> AsyncIterator[bytes]:
        """The next ``n`` bytes, piece by piece as they arrive."""
        remaining = n
        while remaining > 0:
            if self._pending:
                piece, self._pending = self._pending, b""
            else:
                self.started = True
                try:
                    piece = await anext(self.source)
                except StopAsyncIteration:
                    raise StorageIntegrityError("the body is shorter than the declared size") from None
            if len(piece) > remaining:
                piece, self._pending = piece[:remaining], piece[remaining:]
            remaining -= len(piece)
            if piece:
                yield piece

    async def read(self, n: int) -> bytes:
        """The next ``n`` bytes in one buffer (S3 parts need their MD5 before they are sent)."""
        buf = bytearray()
        async for piece in self.take(n):
            buf += piece
        return bytes(buf)

    async def expect_end(self) -> None:
        """Consume the rest, which must be empty."""
        if self._pending:
            raise StorageIntegrityError("the body is longer than the declared size")
        async for piece in self.source:
            if piece:
                raise StorageIntegrityError("the body is longer than the declared size")


async def md5_update(digest: Any, data: bytes) -> None:
    """Feed a hash, off the event loop for large buffers (hashlib releases the GIL)."""
    if len(data) > INLINE_HASH_MAX:
        await asyncio.get_running_loop().run_in_executor(None, digest.update, data)
    else:
        digest.update(data)


class ErrorLog:
    """Logs an error line at once, and the same line again at most every ``interval`` seconds (readiness probes
    would otherwise repeat a credentials error every few seconds)."""

    def __init__(self, logger: logging.Logger, interval: float = 60.0) -> None:
        self.logger = logger
        self.interval = interval
        self._last: dict[str, float] = {}

    def error(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last.get(message, -self.interval) >= self.interval:
            self._last = {message: now}
            self.logger.error(message)


@dataclass
class OpenedRange:
    """One ranged GET in flight: the object's ETag, its body in chunks, and how to release the connection."""

    etag: str | None
    chunks: AsyncIterator[bytes]
    close: Callable[[], Awaitable[None]]


class ShortBodyError(Exception):
    """The store ended a body before the length it promised."""


async def resumable_read(
    open_range: Callable[[int, int | None, str | None], Awaitable[OpenedRange]],
    *,
    offset: int,
    length: int | None,
    retries: int,
    backoff: Callable[[int], float],
    retryable: Callable[[BaseException], StorageUnavailableError | None],
    log: logging.Logger,
    what: str,
) -> AsyncIterator[bytes]:
    """Stream ``length`` bytes (to the end when None) from ``offset``, resuming where a broken body stopped.

    ``open_range(start, end, etag)`` starts one ranged GET (``end`` inclusive or None), sending ``etag`` as a
    precondition once known so a resumed read can't splice two versions of an object; it raises the backend's
    own errors (missing object, unsatisfiable range, changed object). ``retryable`` turns a failure while the body
    streams into the StorageUnavailableError to resume after (up to ``retries`` times), or None to re-raise it.
    """
    end = None if length is None else offset + length - 1
    delivered = 0
    etag: str | None = None
    attempt = 0
    while True:
        start = offset + delivered
        opened = await open_range(start, end, etag)
        etag = etag or opened.etag
        try:
            async for chunk in opened.chunks:
                delivered += len(chunk)
                yield chunk
            if length is not None and delivered < length:
                raise ShortBodyError(f"stream ended after {delivered} of {length} bytes")
            return
        except Exception as exc:
            failure = StorageUnavailableError(f"{what}: {exc}") if isinstance(exc, ShortBodyError) else retryable(exc)
            if failure is None:
                raise
            if attempt >= retries:
                raise failure from exc
            log.warning("download broke off, resuming", extra={"what": what, "offset": start})
            await asyncio.sleep(backoff(attempt))
            attempt += 1
        finally:
            await opened.close()
