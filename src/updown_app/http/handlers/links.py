"""Download links: ``GET/HEAD /-/link/<token>/<package>/<revision>/<filename>`` on the private host, and the
signed ``POST /v1/files/{file_id}/links`` with which the store mints them (format: ``auth/links.py``).

A link answers 404 on any host but the private one (like every private file), 403 when tampered, expired or
for another file, 404 when the file is not (or no longer) published; otherwise exactly what the private host
answers to a bearer token (``download.respond``: Range, conditional requests, HEAD, private cache headers).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from updown_app.auth.links import LinkError, LinkSigner, link_path, redacted_path
from updown_app.http.errors import ApiError, error_response
from updown_app.http.handlers.download import request_host, respond
from updown_app.http.handlers.files import signed_fields
from updown_app.http.state import ctx
from updown_app.http.wire.headers import PRIVATE_CACHE
from updown_app.http.wire.streaming import BodyResponse

log = logging.getLogger("updown.links")
MAX_USER_LENGTH = 255


def link_signer(request: Request) -> LinkSigner | None:
    """The signer for ``settings.private.links`` (None when not configured), built with the runtime."""
    return ctx(request).link_signer


async def download(request: Request) -> Response | BodyResponse:
    context = ctx(request)
    token = request.path_params["token"]
    # The access log writes scope["path"] after the response: keep the capability out of it.
    request.scope["path"] = redacted_path(request.scope["path"])
    request.scope["raw_path"] = request.scope["path"].encode("latin-1", "replace")
    if request_host(request) != context.settings.private_host:
        return error_response(404, "not_found", "no such file")
    private_headers = {"cache-control": PRIVATE_CACHE, "vary": "Authorization"}
    signer = link_signer(request)
    if signer is None:
        return error_response(404, "not_found", "no such file", private_headers)
    try:
        link = signer.verify(token)
    except LinkError as exc:
        log.info("download link refused", extra={"reason": exc.code})
        return error_response(403, exc.code, exc.reason, private_headers)
    params = request.path_params
    file = await context.catalog.published(params["package"], params["revision"], params["filename"])
    if file is None:
        return error_response(404, "not_found", "no such file", private_headers)
    if file.id != link.file_id:
        log.info("download link used for another file", extra={"file_id": file.id, "user": link.user})
        return error_response(403, "invalid_link", "the download link is for another file", private_headers)
    response = await respond(context, request, file, True)
    # A capability URL must not travel on in a Referer header.
    if isinstance(response, BodyResponse):
        response.raw_headers.append((b"referrer-policy", b"no-referrer"))
    else:
        response.headers["referrer-policy"] = "no-referrer"
    return response


async def mint(request: Request) -> JSONResponse:
    """Signed by the store: fields ``user`` and optional ``expires_in`` (seconds) besides timestamp/nonce."""
    context = ctx(request)
    creds = context.verifier.credentials(request.headers.get("authorization"))
    fields = await signed_fields(request)
    key_id = await context.verifier.verify(creds, request.method, request.scope["raw_path"].decode("latin-1"), fields)
    unknown = sorted(set(fields) - {"timestamp", "nonce", "user", "expires_in"})
    if unknown:
        raise ApiError(400, "unknown_field", f"unknown field(s): {', '.join(unknown)}")
    settings = context.settings.private.links
    signer = link_signer(request)
    if signer is None:
        raise ApiError(501, "links_disabled", "download links are not configured (private.links.keys)")
    user = fields.get("user", "")
    if not user or len(user) > MAX_USER_LENGTH:
        raise ApiError(400, "invalid_user", f"field 'user' must be 1-{MAX_USER_LENGTH} characters")
    raw_ttl = fields.get("expires_in", str(settings.default_ttl))
    if not raw_ttl.isdigit() or not 1 <= int(raw_ttl) <= settings.max_ttl:
        raise ApiError(400, "invalid_expires_in", f"field 'expires_in' must be 1-{settings.max_ttl} seconds")
    file = await context.catalog.get(request.path_params["file_id"])
    if file is None:
        raise ApiError(404, "unknown_file", "no file with this id")
    expires_at = int(time.time()) + int(raw_ttl)
    path = link_path(signer.mint(file.id, user, expires_at), file.package, file.revision, file.filename)
    port = context.settings.redirect_port
    origin = f"https://{context.settings.private_host}" + ("" if port == 443 else f":{port}")
    log.info(
        "download link minted",
        extra={"file_id": file.id, "user": user, "key_id": key_id, "expires_at": expires_at},
    )
    return JSONResponse(
        {
            "file_id": file.id,
            "user": user,
            "path": path,
            "url": origin + path,
            "expires_at": datetime.fromtimestamp(expires_at, UTC).isoformat(),
            "published": file.state == "published",
        },
        headers={"cache-control": "no-store"},
    )
