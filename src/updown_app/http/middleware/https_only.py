"""HTTPS only: plain-HTTP requests are answered ``308`` to the same URL on HTTPS.

The scheme comes from the connection, or from ``X-Forwarded-Proto`` when uvicorn's ProxyHeadersMiddleware (set
up with ``trusted_proxies`` only) accepted it. Health and metrics endpoints stay reachable over plain HTTP for
load balancers and Prometheus on the internal network.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from updown_app.http.errors import error_response

EXEMPT = frozenset({"/healthz", "/readyz", "/metrics"})
_HOST_RE = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$")
HSTS = (b"strict-transport-security", b"max-age=31536000")


class HttpsOnlyMiddleware:
    def __init__(self, app: ASGIApp, redirect_port: int, hsts: bool) -> None:
        self.app = app
        self.port_suffix = "" if redirect_port == 443 else f":{redirect_port}"
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["scheme"] == "https":
            if not self.hsts:
                await self.app(scope, receive, send)
                return

            async def send_with_hsts(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message["headers"] = [*message.get("headers", []), HSTS]
                await send(message)

            await self.app(scope, receive, send_with_hsts)
            return
        if scope["path"] in EXEMPT:
            await self.app(scope, receive, send)
            return
        host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
        if not _HOST_RE.match(host):
            response = error_response(400, "invalid_host", "missing or malformed Host header")
        else:
            hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            target = f"https://{hostname}{self.port_suffix}{scope['raw_path'].decode('latin-1')}"
            if scope.get("query_string"):
                target += "?" + scope["query_string"].decode("latin-1")
            response = error_response(308, "https_required", "use HTTPS", {"location": target})
        await response(scope, receive, send)
