"""uvicorn's httptools protocol, made safe to expose: the limits and timeouts nginx has (and uvicorn lacks), and
the server's own answers in the API's JSON error form instead of ``text/plain``.

What it adds, per connection (``ConnectionLimits``, ``[limits]`` in the settings):

- the size of a request's head (request line and headers) and its number of header fields: ``431``. Bytes are
  counted as they arrive, before the parser has a whole header, so a 64 MiB header is refused after the first
  read past the limit instead of being buffered whole;
- a deadline for the whole head, from the connection's start and from a request's first byte: ``408`` and close
  (a slowloris sending a byte every few seconds is closed at the deadline, not kept for ever);
- a stall timeout on a request body, reset by every read (not counted while the app itself has paused reading);
- a send timeout: a client that accepts no byte of a response for that long is closed (a slow reader is fine);
- the idle time between requests (uvicorn's keep-alive timeout);
- a cap on connections per process: ``503`` with ``Retry-After``, in JSON (uvicorn's ``limit_concurrency``
  answers ``text/plain`` and only once a request's headers are in);
- on plain HTTP, the ASGI zero-copy extension: a download's body sent by the kernel from the stored file
  (``zerocopy.py``), under the same flow control and send timeout.

The parser's own ``400`` (a malformed request line or header, a bad chunk size) is JSON too. What no HTTP server
can answer in JSON: a TLS handshake that fails or times out (there is no HTTP yet, see server.py), and a
connection the client or the kernel drops before a whole request arrived; those are closed.

Why a subclass and not another server: the hooks needed are few (each is a parser callback or a transport event),
and neither Granian nor Hypercorn has them all (no send timeout in either, no body-stall timeout in Granian, no
JSON answers) while both were slower on the benchmarks' downloads; the numbers are in benchmarks/README.md ("The
HTTP server").
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from updown_app.http.light import LightEvent, LightPipeline
from updown_app.http.zerocopy import EXTENSIONS, ZeroCopyCycle
from updown_app.settings import ConnectionLimits


class _LimitExceeded(Exception):
    """Raised from a parser callback, so the parser stops where the limit was crossed."""


def json_answer(
    status: int,
    code: str,
    message: str,
    default_headers: list[tuple[bytes, bytes]],
    extra: dict[str, str] | None = None,
) -> bytes:
    """A whole HTTP/1.1 response that closes the connection, in the API's error form."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    content = [STATUS_LINE[status]]
    for name, value in default_headers:
        content.extend([name, b": ", value, b"\r\n"])
    headers = {"content-type": "application/json", "cache-control": "no-store", **(extra or {})}
    headers["content-length"] = str(len(body))
    headers["connection"] = "close"
    for name_s, value_s in headers.items():
        content.extend([name_s.encode(), b": ", value_s.encode("latin-1"), b"\r\n"])
    content.extend([b"\r\n", body])
    return b"".join(content)


class JsonErrorsProtocol(HttpToolsProtocol):
    # Slots: added to uvicorn's ~30 attributes, these made every connection's __dict__ resize (1.5 KB each).
    __slots__ = (
        "_body_timer",
        "_head_bytes",
        "_head_timer",
        "_header_count",
        "_in_head",
        "_last_read",
        "_message_ended",
        "_refused",
        "_send_timer",
        "limits",
    )

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: ConnectionLimits | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.pipeline = LightPipeline()  # type: ignore[assignment]  # per connection: see light.py
        self.limits = limits or ConnectionLimits()
        self._in_head = True  # reading a request's head (or waiting for one)
        self._head_bytes = 0  # raw bytes read while in the head
        self._header_count = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None
        self._message_ended = False  # in the read being parsed
        self._last_read = 0.0  # loop time of the last read
        self._refused = False  # answered by this class, closing: feed the parser nothing more

    # Connection events ---------------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        writable = LightEvent()  # the flow control's, just made (set: nothing written yet); see light.py
        writable.set()
        self.flow._is_writable_event = writable  # type: ignore[assignment]
        if len(self.connections) > self.limits.max_connections:
            self._refuse(
                503,
                "too_many_connections",
                "the server has too many open connections; try again shortly",
                {"retry-after": str(self.limits.retry_after)},
            )
            return
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self._unset_keepalive_if_required()
        if self._in_head and self._head_timer is None:  # a keep-alive connection's next request begins
            self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)
        self._last_read = self.loop.time()
        self._message_ended = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _LimitExceeded):
                self._refuse_head_too_large(str(exc.__context__))
            else:
                self.logger.warning("Invalid HTTP request received.")
                self.send_400_response("")
            return
        if self._refused:
            return
        if self._in_head and not self._message_ended:
            # Inside a head for the whole read: all of it counts. (Of a read that ended a message, the next head's
            # share is not counted: at most one read more, and a head that completes is measured exactly.)
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_header_bytes:
                self._refuse_head_too_large("request headers are too large")
        elif self._body_timer is None and self.cycle is not None and self.cycle.more_body:
            # One timer per body, moved on lazily when it fires (not a new timer for every read of an upload).
            self._body_timer = self.loop.call_later(self.limits.body_timeout, self._body_timed_out)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_timer is None:
            self._send_timer = self.loop.call_later(self.limits.send_timeout, self._send_timed_out)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    # Parser callbacks ----------------------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._header_count = 0
        if self.scheme == "http":  # sendfile writes plaintext: not under TLS
            self.scope["extensions"] = EXTENSIONS

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.limits.max_header_bytes:
            raise _LimitExceeded("request target is too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_header_count:
            raise _LimitExceeded(f"more than {self.limits.max_header_count} header fields")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        # A head that arrived in one read is only seen whole here: its size is the URL's and the fields'.
        size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
        if self._head_bytes > self.limits.max_header_bytes or size > self.limits.max_header_bytes:
            raise _LimitExceeded("request headers are too large")
        self._in_head = False
        self._head_bytes = 0
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is None or cycle.scope is not self.scope:
            return
        # uvicorn builds its cycle inline, with no hook for another class or event; its task has not started yet.
        message = LightEvent()  # see light.py
        if cycle.message_event.is_set():
            message.set()
        cycle.message_event = message  # type: ignore[assignment]
        if "extensions" in self.scope:
            cycle.__class__ = ZeroCopyCycle  # adds only a message type to send() (no state)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._message_ended = True
        self._in_head = True  # what follows on this connection is the next request's head
        self._head_bytes = 0
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    # Answers -------------------------------------------------------------------------------------------------------

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, "bad_request", "malformed HTTP request")

    def _refuse_head_too_large(self, message: str) -> None:
        self._refuse(431, "headers_too_large", message)

    def _refuse(
        self, status: int, code: str, message: str, extra: dict[str, str] | None = None, *, answer: bool = True
    ) -> None:
        """Answer on the wire, out of the app's sight, and close. The request in progress (if any) sees a disconnect,
        so the app stops and undoes what it started (an upload's partial object)."""
        self._refused = True
        self._cancel_timers()
        cycle = self.cycle
        if answer and (cycle is None or cycle.response_complete or not cycle.response_started):
            self.transport.write(json_answer(status, code, message, self.server_state.default_headers, extra))
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()
        # TLS waits for the client's close_notify, which a hostile client never sends: 1 s for it, not more.
        self.loop.call_later(1.0, self.transport.abort)

    # Timers --------------------------------------------------------------------------------------------------------

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._head_bytes == 0:  # nothing of a request arrived: there is no one to answer
            self._refuse(408, "", "", answer=False)
            return
        self._refuse(408, "request_timeout", "the request headers took too long")

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if self.transport.is_closing() or self.cycle is None or self.cycle.response_complete:
            return
        quiet = self.loop.time() - self._last_read
        if quiet < self.limits.body_timeout or self.flow.read_paused:  # read since, or the app is not reading yet
            delay = self.limits.body_timeout - (0.0 if self.flow.read_paused else quiet)
            self._body_timer = self.loop.call_later(delay, self._body_timed_out)
            return
        self._refuse(408, "request_timeout", "the request body stalled")

    def _send_timed_out(self) -> None:
        self._send_timer = None
        if not self.transport.is_closing():
            self.logger.info("closing a connection whose client read nothing for %ss", self.limits.send_timeout)
            self._refuse(408, "send_timeout", "the client stopped reading the response")

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer, self._send_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = self._send_timer = None
