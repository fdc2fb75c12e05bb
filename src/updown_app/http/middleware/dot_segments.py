"""One spelling per download URL: GET/HEAD paths lose their "." segments and doubled slashes before routing, and
paths with ".." segments are refused (400). apt asks a flat repository for "<base>/./Packages"; nginx and the
frontend HAProxy (charms/cache) normalise the same way (RFC 3986 dot-segment removal), so a single node and the
cached stack answer the same URLs. Own code: Starlette has no such option, and it is a dozen lines.
"""

from __future__ import annotations

from urllib.parse import unquote

from starlette.types import ASGIApp, Receive, Scope, Send

from updown_app.http.errors import error_response


def normalized(raw_path: bytes) -> bytes | None:
    """The path without "." segments and empty ones (a trailing slash kept); None when it has a ".." segment."""
    segments = raw_path.split(b"/")
    if b".." in segments:
        return None
    kept = [s for s in segments if s not in (b"", b".")]
    trailing = raw_path.endswith((b"/", b"/."))
    return b"/" + b"/".join(kept) + (b"/" if trailing and kept else b"")


class DotSegmentsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
            raw = scope.get("raw_path") or scope["path"].encode()
            if b"/." in raw or b"//" in raw:
                clean = normalized(raw)
                if clean is None:
                    response = error_response(400, "invalid_path", "dot-dot path segments are not allowed")
                    await response(scope, receive, send)
                    return
                scope = {**scope, "raw_path": clean, "path": unquote(clean.decode("latin-1"))}
        await self.app(scope, receive, send)
