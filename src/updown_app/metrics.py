"""Prometheus metrics and the ASGI middleware that counts requests and bytes by route.

Labels use the route template (``/{package}/{revision}/{filename}``), never the concrete path, to keep
cardinality bounded.
"""

from __future__ import annotations

import logging
import time

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from updown_app.auth.links import redacted_path  # link tokens never reach the logs

REQUESTS = Counter("updown_http_requests_total", "HTTP requests", ["route", "method", "status"])
DURATION = Histogram(
    "updown_http_request_duration_seconds",
    "Time to the end of the response",
    ["route"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120, 600),
)
BYTES_IN = Counter("updown_http_received_bytes_total", "Request body bytes received", ["route"])
BYTES_OUT = Counter("updown_http_sent_bytes_total", "Response body bytes sent", ["route"])
UPLOAD_FAILURES = Counter("updown_upload_failures_total", "Uploads refused or abandoned", ["reason"])
UPLOADED_BYTES = Counter("updown_uploaded_bytes_total", "Bytes of successful uploads")
UPLOAD_SESSIONS_CREATED = Counter("updown_upload_sessions_created_total", "Resumable upload sessions created")
UPLOAD_SESSIONS_LIVE = Gauge(
    "updown_upload_sessions_live", "Open resumable upload sessions (all units; refreshed by each purge)"
)
UPLOAD_SESSIONS_PURGED = Counter("updown_upload_sessions_purged_total", "Expired upload sessions purged")
UPLOAD_PURGED_BYTES = Counter("updown_upload_purged_bytes_total", "Bytes of parts removed by purges")
READ_CACHE_READS = Counter(
    "updown_read_cache_reads_total",
    "Object reads served through a backend cache unit, by unit and its cache status (X-Cache: HIT or MISS)",
    ["unit", "cache"],
)
READ_CACHE_FALLBACKS = Counter(
    "updown_read_cache_fallbacks_total",
    "Object reads that went to the store directly because the chosen backend cache unit failed",
    ["unit", "reason"],
)
READ_CACHE_BREAKER_OPENS = Counter(
    "updown_read_cache_breaker_opens_total",
    "Times a backend cache unit was taken out of the read path for a while after failing (circuit breaker)",
    ["unit"],
)
CACHE_PURGES = Counter("updown_cache_purges_total", "Paths purged from a frontend cache unit", ["endpoint"])
CACHE_PURGE_FAILURES = Counter(
    "updown_cache_purge_failures_total", "Failed purge attempts of a frontend cache unit", ["endpoint"]
)
CACHE_PURGE_PENDING = Gauge(
    "updown_cache_purge_pending", "Purges of unreachable frontend units still being retried in the background"
)
INDEX_VERSIONS = Counter("updown_index_versions_total", "Signed index metadata versions written", ["role"])
PULL_THROUGH = Counter(
    "updown_pull_through_total", "Downloads fetched from the upstream (stored, refused, failed)", ["result"]
)


access_log = logging.getLogger("updown.access")


def route_of(scope: Scope) -> str:
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, access_log: bool = True) -> None:
        self.app = app
        self.access_log = access_log

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
            await send(message)

        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            route = route_of(scope)
            REQUESTS.labels(route, scope["method"], str(status)).inc()
            DURATION.labels(route).observe(time.perf_counter() - start)
            if received:
                BYTES_IN.labels(route).inc(received)
            if sent:
                BYTES_OUT.labels(route).inc(sent)
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


async def metrics_endpoint(request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
