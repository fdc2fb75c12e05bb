"""The server side of the ASGI zero-copy extension: a response body sent by the kernel from a file (``sendfile``).

Our protocol (``protocol.py``) advertises ``scope["extensions"]["http.response.zerocopy"]`` on plain-HTTP
connections (TLS encrypts in user space, so there the app streams) and gives each request a ``ZeroCopyCycle``,
whose ``send`` also takes ``{"type": "http.response.zerocopy", "file": fd, "offset": ..., "count": ...,
"more_body": ...}``. Everything else of the response (the head, Content-Length accounting, keep-alive, the end of
the response) is uvicorn's, unchanged.

asyncio's ``loop.sendfile`` is not implemented by uvloop, so ``send_file`` calls ``os.sendfile`` on the
connection's non-blocking socket itself, and keeps the transport's flow control in charge of waiting:

- while it runs, the transport's high-water mark is 0, so any byte in the transport's buffer (the response head,
  a probe, see below) pauses writing until the kernel took it: sendfile never overtakes buffered bytes;
- when the socket is full (``EAGAIN``) the next few KiB of the file go through ``transport.write`` instead: the
  transport buffers them, pauses writing (which arms the protocol's send timeout, so a client that stops reading
  is closed as on the streaming path) and resumes once the socket drained. That probe is the only copy of the body
  in user space, ``PROBE`` bytes per connection at a time.

The file is not trusted to stay as it was opened: a sendfile that reaches the end of the file before ``count``
(truncated underneath) stops the response and closes the connection, so the client sees a truncated body, never
wrong bytes; the app compared the opened file's size with the record before answering.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from updown_app.http.wire.streaming import ZEROCOPY, BodyBrokeOff
from updown_app.metrics import ZEROCOPY_BYTES

log = logging.getLogger("updown.download")

# Bytes written through the transport when the socket is full, to be told when it drained. Small: it is held per
# waiting connection (4 KiB was 4 MB of 1,000 slow downloads), and its size does not change how often it is needed.
PROBE = 512
# What a plain-HTTP request's ``scope["extensions"]`` offers: one dict for all requests (two new dicts each were
# 0.5 MB over 1,000 connections); nothing in the app adds to it.
EXTENSIONS: dict[str, dict[object, object]] = {ZEROCOPY: {}}


class FileShorter(Exception):
    """The file ended before the bytes the response promised."""


async def send_file(transport: asyncio.Transport, flow: FlowControl, fd: int, offset: int, count: int) -> int:
    """Send ``count`` bytes of ``fd`` from ``offset`` on the transport's socket; returns the bytes sent, fewer only
    when the connection closed meanwhile. Raises ``FileShorter`` when the file ends early."""
    sock = transport.get_extra_info("socket").fileno()
    low, high = transport.get_write_buffer_limits()
    transport.set_write_buffer_limits(high=0)
    sent = 0
    try:
        while sent < count:
            if transport.is_closing():
                break
            if transport.get_write_buffer_size():  # the head or a probe not on the wire yet
                if flow.write_paused:
                    await flow.drain()
                else:  # not expected with a high-water mark of 0; never spin without yielding
                    await asyncio.sleep(0)
                continue
            try:
                n = os.sendfile(sock, fd, offset + sent, count - sent)
            except BlockingIOError:
                probe = os.pread(fd, min(PROBE, count - sent), offset + sent)
                if not probe:
                    raise FileShorter from None
                transport.write(probe)
                sent += len(probe)
                del probe  # not held while the socket drains
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            if n == 0:
                raise FileShorter
            sent += n
            if sent < count:
                await asyncio.sleep(0)  # a client that keeps up must not keep the loop from the other connections
    finally:
        ZEROCOPY_BYTES.inc(sent)
        if not transport.is_closing():
            transport.set_write_buffer_limits(high=high, low=low)
    return sent


class ZeroCopyCycle(RequestResponseCycle):
    """uvicorn's request/response cycle, which also sends ``http.response.zerocopy`` messages."""

    async def send(self, message: Any) -> None:
        if message["type"] != ZEROCOPY:
            await super().send(message)
            return
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return  # as uvicorn does with a body sent after the client went
        if not self.response_started or self.response_complete:
            raise RuntimeError(f"unexpected ASGI message {ZEROCOPY!r} outside a response body")
        if self.chunked_encoding:
            raise RuntimeError(f"{ZEROCOPY!r} needs a Content-Length response")
        file = message["file"]
        fd = file if isinstance(file, int) else file.fileno()
        offset = message.get("offset", 0)
        count = message["count"]
        if self.scope["method"] != "HEAD":
            if count > self.expected_content_length:
                raise RuntimeError("Response content longer than Content-Length")
            try:
                sent = await send_file(self.transport, self.flow, fd, offset, count)
            except FileShorter:
                log.warning("download broke off: the file is shorter than its record", extra={"offset": offset})
                self.transport.abort()
                raise BodyBrokeOff from None
            if sent < count:  # the client went (or was closed by the send timeout)
                self.disconnected = True
                return
            self.expected_content_length -= count
        # The end of the response (or of this part of it) as uvicorn ends a body.
        await super().send({"type": "http.response.body", "body": b"", "more_body": message.get("more_body", False)})
