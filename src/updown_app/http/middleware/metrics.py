"""The ASGI middleware that counts requests and bytes by route and writes the access log; the ``/metrics``
endpoint."""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Sequence
from ipaddress import IPv4Network, IPv6Network
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from updown_app.auth.links import redacted_path  # link tokens never reach the logs
from updown_app.http.errors import error_response
from updown_app.http.middleware.host import hostname
from updown_app.http.state import ctx
from updown_app.http.wire.streaming import ZEROCOPY
from updown_app.metrics import BYTES_IN, BYTES_OUT, DOWNLOADS, DURATION, REQUESTS

access_log = logging.getLogger("updown.access")
# The routes that serve files (counted by hostname in updown_downloads_total).
DOWNLOAD_ROUTES = frozenset(
    {
        "/{package}/{revision}/{filename}",
        "/-/link/{token}/{package}/{revision}/{filename}",
        "/{package}/{channel}/latest/{pattern}",
    }
)


_CHILDREN: dict[tuple[object, ...], Any] = {}


def _child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, kept: the library's lookup takes a lock and builds a key on every call."""
    key = (metric, *labels)
    child = _CHILDREN.get(key)
    if child is None:
        child = _CHILDREN[key] = metric.labels(*labels)
    return child


def route_of(scope: Scope) -> str:
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, access_log: bool = True, public_host: str = "", private_host: str = "") -> None:
        self.app = app
        self.access_log = access_log
        self.hosts = {public_host: "public", private_host: "private"}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        sent = 0
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            return message

        async def counting_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            elif message["type"] == ZEROCOPY:  # the server sends the file's bytes (http/zerocopy.py)
                sent += message["count"]
            await send(message)

        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            route = route_of(scope)
            _child(REQUESTS, route, scope["method"], str(status)).inc()
            _child(DURATION, route).observe(time.perf_counter() - start)
            if route in DOWNLOAD_ROUTES:
                _child(DOWNLOADS, self._host_kind(scope), str(status)).inc()
            if received:
                _child(BYTES_IN, route).inc(received)
            if sent:
                _child(BYTES_OUT, route).inc(sent)
            if self.access_log:
                client = scope.get("client")
                # The path is logged without its query string: signed GETs carry fields there.
                access_log.info(
                    "request",
                    extra={
                        "method": scope["method"],
                        "path": redacted_path(scope["path"]),
                        "route": route,
                        "status": status,
                        "sent": sent,
                        "received": received,
                        "duration_ms": round((time.perf_counter() - start) * 1000, 2),
                        "client": client[0] if client else None,
                    },
                )

    def _host_kind(self, scope: Scope) -> str:
        """public, private or other: a bounded label, whatever Host a client sends."""
        host = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"host"), "")
        return self.hosts.get(hostname(host), "other") if host else "other"


def _allowed(client: str | None, networks: Sequence[IPv4Network | IPv6Network]) -> bool:
    try:
        address = ipaddress.ip_address(client or "")
    except ValueError:  # a Unix socket, or no client at all
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


async def metrics_endpoint(request: Request) -> Response:
    """Only to ``metrics_allowed`` (it names internal addresses): the client's address, which uvicorn's proxy
    middleware has already taken from ``X-Forwarded-For`` when a trusted proxy sent it."""
    client = request.client.host if request.client else None
    if not _allowed(client, ctx(request).settings.metrics_allowed):
        return error_response(403, "forbidden", "metrics are served to the allowed addresses only")
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
