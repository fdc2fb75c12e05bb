"""HTTPS only: plain-HTTP requests are answered ``308`` to the same URL on HTTPS.

The target's hostname is one of the configured ones (``public_host``, ``private_host``): the request's when it
names one of them, else the public host. A client's ``Host`` is never echoed (it would make the service an open
redirector and let a forged ``Host`` poison a cached redirect). ``Host`` itself is checked before (host.py).

The scheme comes from the connection, or from ``X-Forwarded-Proto`` when uvicorn's ProxyHeadersMiddleware (set
up with ``trusted_proxies`` only) accepted it. Health and metrics endpoints stay reachable over plain HTTP for
load balancers and Prometheus on the internal network.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from updown_app.http.errors import error_response
from updown_app.http.middleware.host import hostname

EXEMPT = frozenset({"/healthz", "/readyz", "/metrics"})
HSTS = (b"strict-transport-security", b"max-age=31536000")


class HttpsOnlyMiddleware:
    def __init__(self, app: ASGIApp, redirect_port: int, hsts: bool, hostnames: Sequence[str]) -> None:
        self.app = app
        self.hostnames = [h.lower() for h in hostnames]  # the first is where any other Host is sent
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
        asked = hostname(dict(scope["headers"]).get(b"host", b"").decode("latin-1"))
        name = asked if asked in self.hostnames else self.hostnames[0]
        target = f"https://{name}{self.port_suffix}{scope['raw_path'].decode('latin-1')}"
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        response = error_response(308, "https_required", "use HTTPS", {"location": target})
        await response(scope, receive, send)
