"""One spelling per download URL: GET/HEAD paths have percent-encoded unreserved characters decoded (other escapes
upper-cased), lose their "." segments and doubled slashes before routing; paths with ".." segments or an encoded
slash ("%2F": a separator to the router, not to a cache's key) are refused (400). apt asks a flat repository for
"<base>/./Packages"; nginx and the frontend HAProxy (charms/cache) normalise the same way (RFC 3986 6.2.2 and
dot-segment removal), so a single node and the cached stack answer the same URLs. Own code: Starlette has no such
option, and it is a dozen lines.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from starlette.types import ASGIApp, Receive, Scope, Send

from updown_app.http.errors import error_response

_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")
_ENCODED_SLASH = re.compile(rb"%2[fF]")
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def decode_unreserved(raw_path: bytes) -> bytes:
    """RFC 3986 6.2.2: percent-encoded unreserved characters decoded, the other escapes upper-cased."""

    def one(match: re.Match[bytes]) -> bytes:
        byte = int(match.group(1), 16)
        return bytes([byte]) if byte in _UNRESERVED else b"%" + match.group(1).upper()

    return _ESCAPE.sub(one, raw_path)


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
            if b"%" in raw:
                if _ENCODED_SLASH.search(raw):
                    response = error_response(400, "invalid_path", "encoded slashes (%2F) are not allowed in the path")
                    await response(scope, receive, send)
                    return
                raw = decode_unreserved(raw)
                scope = {**scope, "raw_path": raw}
            if b"/." in raw or b"//" in raw:
                clean = normalized(raw)
                if clean is None:
                    response = error_response(400, "invalid_path", "dot-dot path segments are not allowed")
                    await response(scope, receive, send)
                    return
                scope = {**scope, "raw_path": clean, "path": unquote(clean.decode("latin-1"))}
        await self.app(scope, receive, send)
