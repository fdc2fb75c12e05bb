"""The ASGI responses of a stored object's body: sent by the server from a local file (zero-copy), or streamed from
storage with bounded memory per connection.

Zero-copy: where the server advertises the ASGI zero-copy extension (``scope["extensions"]["http.response.zerocopy"]``:
our protocol on plain HTTP, ``http/zerocopy.py``) and the store has the object as a local file, the response hands
the server the file descriptor with the range's offset and count, and the kernel sends the bytes (``sendfile``):
nothing of the body passes through Python, a slow client costs no buffer, and no disconnect watcher is needed (the
server stops the send itself). Elsewhere (TLS, another ASGI server, an object store, tests through an in-process
transport) the body is streamed:

Memory: each read is sized to what the client drains, not to a fixed chunk. A response probes with 32 KiB reads
for its first 256 KiB, then doubles the read size per chunk up to the storage chunk size, never beyond ~50 ms
worth of the rate the client drained the previous chunk at. Until it reaches full-size reads, chunks are handed to
the server in 32 KiB slices, so a slow client makes ``send`` wait (uvicorn's flow control) instead of the server
queueing a whole chunk. Together with ``TCP_NOTSENT_LOWAT`` on the listening socket (see ``server.py``), which
stops the kernel from absorbing megabytes for a slow reader, a slow client costs ~100 KiB, not several MiB
(1,000 slow downloads with fixed 1 MiB chunks took 3 GB). Storage generators that understand it get the next read
size through ``asend``; others ignore it.

Starlette's ``StreamingResponse`` starts a task group per response to watch for disconnects; for a one-chunk body
that costs more than the transfer, so a single chunk is sent directly. Longer bodies watch ``receive`` for
``http.disconnect`` (uvicorn silently drops sends after a disconnect) so an abandoned download stops reading.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncGenerator, Mapping

from starlette.types import Receive, Scope, Send

from updown_app.storage.base import LocalFile, StorageError

log = logging.getLogger("updown.download")

MIN_READ = 32 * 1024
SLICE = 32 * 1024
PROBE_BYTES = 256 * 1024
BUFFER_SECONDS = 0.05
ZEROCOPY = "http.response.zerocopy"  # the ASGI extension and its message type


def zerocopy_offered(scope: Scope) -> bool:
    """Whether the server sends a file descriptor's bytes itself (the ASGI zero-copy extension)."""
    return ZEROCOPY in (scope.get("extensions") or ())


def next_read_size(sent: int, last_bytes: int, last_seconds: float, max_read: int) -> int:
    """Small reads while probing, then doubling, capped by the client's recent drain rate."""
    if sent < PROBE_BYTES:
        return MIN_READ
    rate_cap = last_bytes / last_seconds * BUFFER_SECONDS if last_seconds > 0 else float(max_read)
    return int(max(MIN_READ, min(2 * last_bytes, rate_cap, max_read)))


class BodyBrokeOff(Exception):
    """The store failed after the response began. The server closes the connection (the client sees a truncated
    body, never wrong bytes); it was logged once, as a warning, and is no error of the service's."""

    already_logged = True  # read by the app's last-resort handler and by logs.setup_logging's filter


class BodyResponse:
    """A download's status and headers; subclasses send the body."""

    def __init__(self, status: int, headers: Mapping[str, str]) -> None:
        self.status = status
        self.raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


class ZeroCopyResponse(BodyResponse):
    """``count`` bytes of ``file`` from ``offset``, sent by the server; the file is closed when the send is over."""

    def __init__(self, status: int, headers: Mapping[str, str], file: LocalFile, offset: int, count: int) -> None:
        super().__init__(status, headers)
        self.file = file
        self.offset = offset
        self.count = count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The headers are not kept for the whole (maybe hours long) send: ~2 KB of objects per connection.
        start = {"type": "http.response.start", "status": self.status, "headers": self.raw_headers}
        self.raw_headers = []
        try:
            await send(start)
            del start
            await send(
                {"type": ZEROCOPY, "file": self.file.fd, "offset": self.offset, "count": self.count, "more_body": False}
            )
        finally:
            os.close(self.file.fd)


class ObjectResponse(BodyResponse):
    def __init__(
        self,
        status: int,
        headers: Mapping[str, str],
        first: bytes,
        rest: AsyncGenerator[bytes, int | None] | None,
        max_read: int = 1024 * 1024,
    ) -> None:
        super().__init__(status, headers)
        self.first = first
        self.rest = rest
        self.max_read = max_read

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.raw_headers})
        if self.rest is None:
            await send({"type": "http.response.body", "body": self.first, "more_body": False})
            return
        gone = asyncio.Event()

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    gone.set()
                    return

        async def send_chunk(chunk: bytes, sliced: bool) -> None:
            if not sliced or len(chunk) <= SLICE:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                return
            view = memoryview(chunk)
            for i in range(0, len(chunk), SLICE):
                if gone.is_set():
                    return
                await send({"type": "http.response.body", "body": view[i : i + SLICE], "more_body": True})

        watcher = asyncio.ensure_future(watch())
        sent = 0
        try:
            chunk = self.first
            size = 0
            while not gone.is_set():
                t0 = time.monotonic()
                # A client that keeps up (full-size reads) takes whole chunks; others get slices, so backpressure
                # stops the server from queueing a chunk it cannot deliver.
                await send_chunk(chunk, sliced=size < self.max_read)
                sent += len(chunk)
                size = next_read_size(sent, len(chunk), time.monotonic() - t0, self.max_read)
                del chunk  # let the sent chunk go before reading the next
                try:
                    chunk = await self.rest.asend(size)
                except StopAsyncIteration:
                    break
                except StorageError as exc:
                    log.warning("download broke off: the store failed", extra={"sent": sent, "error": str(exc)})
                    raise BodyBrokeOff from exc
            if not gone.is_set():
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()
            await self.rest.aclose()
