"""Strict ``Host`` (RFC 9112 §3.2): an HTTP/1.1 request without one, with more than one, or with a malformed one
is answered ``400`` before anything else looks at it (the hostname decides public vs private, and the redirect
is built from it). HTTP/1.0 may leave it out."""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

from updown_app.http.errors import error_response

HOST_RE = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$")


def hostname(host: str) -> str:
    """The name of a well-formed ``Host`` value, without its port, lower case."""
    if host.startswith("["):  # IPv6 literal
        return host[: host.find("]") + 1].lower()
    return host.rsplit(":", 1)[0].lower()


class StrictHostMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        hosts = [value for name, value in scope["headers"] if name == b"host"]
        if len(hosts) > 1:
            response = error_response(400, "duplicate_host", "more than one Host header")
        elif not hosts and scope.get("http_version") != "1.0":
            response = error_response(400, "missing_host", "an HTTP/1.1 request needs a Host header")
        elif hosts and not HOST_RE.match(hosts[0].decode("latin-1")):
            response = error_response(400, "invalid_host", "malformed Host header")
        else:
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)
