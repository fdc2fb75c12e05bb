"""Streaming MD5/SHA-1/SHA-256/SHA-512 of an upload, verified against the declared values.

``verified_stream`` re-chunks the incoming body into ``chunk_size`` buffers, hashes each one in the thread pool
(hashlib releases the GIL, so hashing overlaps with receiving the next buffer) and holds the last buffer back
until size, MD5 and SHA-256 all matched. A store therefore never receives a complete body that failed a check:
the stream raises instead, and the store discards the partial object.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from updown_app.core.errors import InvalidInput


@dataclass(frozen=True)
class Digests:
    size: int
    md5: str
    sha1: str
    sha256: str
    sha512: str

    def b64(self, name: str) -> str:
        return base64.b64encode(bytes.fromhex(getattr(self, name))).decode()


@dataclass(frozen=True)
class Declared:
    size: int
    md5: str
    sha256: str


class DigestMismatchError(InvalidInput):
    """The body does not match what was declared; ``field`` names what differs (code ``<field>_mismatch``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}_mismatch", message)
        self.field = field


def _update_all(hashes: tuple[Any, ...], data: bytes) -> None:
    for h in hashes:
        h.update(data)


class MultiHasher:
    def __init__(self) -> None:
        self.size = 0
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._sha1 = hashlib.sha1(usedforsecurity=False)
        self._sha256 = hashlib.sha256()
        self._sha512 = hashlib.sha512()

    def update(self, data: bytes) -> None:
        self.size += len(data)
        for h in (self._md5, self._sha1, self._sha256, self._sha512):
            h.update(data)

    def update_in_threads(self, loop: asyncio.AbstractEventLoop, data: bytes) -> asyncio.Future[tuple[None, None]]:
        """Hash ``data`` in two pool threads at once (hashlib releases the GIL): on a multi-core server the four
        digests, the whole CPU cost of an upload, then take about half the wall time. Groups are balanced:
        MD5 + SHA-1 and SHA-256 + SHA-512 cost about the same."""
        self.size += len(data)
        return asyncio.gather(
            loop.run_in_executor(None, _update_all, (self._md5, self._sha1), data),
            loop.run_in_executor(None, _update_all, (self._sha256, self._sha512), data),
        )

    def digests(self) -> Digests:
        return Digests(
            size=self.size,
            md5=self._md5.hexdigest(),
            sha1=self._sha1.hexdigest(),
            sha256=self._sha256.hexdigest(),
            sha512=self._sha512.hexdigest(),
        )


def check(digests: Digests, declared: Declared) -> None:
    if digests.size != declared.size:
        raise DigestMismatchError("size", f"body has {digests.size} bytes, {declared.size} declared")
    if digests.md5 != declared.md5.lower():
        raise DigestMismatchError("md5", "MD5 of the body does not match the declared md5")
    if digests.sha256 != declared.sha256.lower():
        raise DigestMismatchError("sha256", "SHA-256 of the body does not match the declared sha256")


class VerifiedBody:
    """An upload body that raises before its last chunk unless size, MD5 and SHA-256 matched.

    ``verifies_md5`` tells a store that computing the MD5 again would only repeat this check (object stores
    verify it on receipt anyway; the local backend skips its own pass, the most expensive digest after SHA-512).
    """

    verifies_md5 = True

    def __init__(self, source: AsyncIterator[bytes], declared: Declared, hasher: MultiHasher, chunk_size: int) -> None:
        self._stream = _verified(source, declared, hasher, chunk_size)

    def __aiter__(self) -> VerifiedBody:
        return self

    async def __anext__(self) -> bytes:
        return await anext(self._stream)


def verified_stream(
    source: AsyncIterator[bytes], declared: Declared, hasher: MultiHasher, chunk_size: int
) -> VerifiedBody:
    return VerifiedBody(source, declared, hasher, chunk_size)


async def _verified(
    source: AsyncIterator[bytes], declared: Declared, hasher: MultiHasher, chunk_size: int
) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    pieces: list[bytes] = []  # joined once per chunk: one copy of every byte, not two
    buffered = 0
    received = 0
    pending: asyncio.Future[tuple[None, None]] | None = None
    held: bytes | None = None
    async for piece in source:
        received += len(piece)
        if received > declared.size:
            raise DigestMismatchError("size", f"body is longer than the declared {declared.size} bytes")
        pieces.append(piece)
        buffered += len(piece)
        if buffered >= chunk_size:
            data = b"".join(pieces)
            pieces.clear()
            buffered = 0
            if pending is not None:
                await pending
            pending = hasher.update_in_threads(loop, data)
            if held is not None:
                yield held
            held = data
    if pending is not None:
        await pending
    tail = b"".join(pieces)
    if tail:
        await hasher.update_in_threads(loop, tail) if len(tail) > 65536 else hasher.update(tail)
    check(hasher.digests(), declared)
    if held is not None:
        yield held
    if tail:
        yield tail
