"""Signed file API: ``GET /v1/files/{id}``, ``POST /v1/files/{id}/publish`` and ``.../unpublish``.

Small signed requests carry their fields in the query string or an urlencoded body; each field once. A file's
``sha1``/``sha512`` are ``null`` until computed after its upload; publishing completes them first (a published
file always has all four; the store unreadable meanwhile: 503 and nothing published).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse

from updown_app.core.errors import InvalidInput, NotFound
from updown_app.core.names import download_path, parse_channels
from updown_app.http.errors import ApiError
from updown_app.http.state import ctx
from updown_app.metadata.models import File, FileState

MAX_FORM_BYTES = 64 * 1024


def file_json(file: File) -> dict[str, Any]:
    def ts(value: Any) -> str | None:
        return None if value is None else value.isoformat()

    return {
        "id": file.id,
        "package": file.package,
        "revision": file.revision,
        "filename": file.filename,
        "size": file.size,
        "md5": file.md5,
        "sha1": file.sha1,
        "sha256": file.sha256,
        "sha512": file.sha512,
        "visibility": file.visibility,
        "state": file.state,
        "created_by": file.created_by,
        "created_at": ts(file.created_at),
        "published_at": ts(file.published_at),
        "unpublished_at": ts(file.unpublished_at),
        "path": download_path(file),
    }


async def signed_fields(request: Request) -> dict[str, str]:
    """Fields of a small signed request (query + urlencoded body), each name at most once."""
    fields: dict[str, str] = {}
    pairs = list(request.query_params.multi_items())
    if request.method == "POST":
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                raise ApiError(413, "too_large", "signed form bodies are limited to 64 KiB")
        if body:
            if ctype != "application/x-www-form-urlencoded":
                raise ApiError(415, "unsupported_media_type", "send fields as application/x-www-form-urlencoded")
            try:
                pairs += parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=True)
            except (UnicodeDecodeError, ValueError):
                raise ApiError(400, "invalid_form", "malformed form body") from None
    for name, value in pairs:
        if name in fields:
            raise ApiError(400, "duplicate_field", f"field {name!r} is given more than once")
        fields[name] = value
    return fields


async def _authenticated(request: Request, optional: frozenset[str] = frozenset()) -> tuple[str, dict[str, str]]:
    context = ctx(request)
    creds = context.verifier.credentials(request.headers.get("authorization"))
    fields = await signed_fields(request)
    key_id = await context.verifier.verify(creds, request.method, request.scope["raw_path"].decode("latin-1"), fields)
    extra = sorted(set(fields) - {"timestamp", "nonce"} - optional)
    if extra:
        raise InvalidInput("unknown_field", f"unknown field(s): {', '.join(extra)}")
    return key_id, fields


async def info(request: Request) -> JSONResponse:
    await _authenticated(request)
    catalog = ctx(request).catalog
    file = await catalog.get(request.path_params["file_id"])
    if file is None:
        raise NotFound("unknown_file", "no file with this id")
    events = await catalog.events(file.id)
    body = file_json(file)
    body["channels"] = await catalog.channels_of(file.id)
    body["events"] = [{"action": e.action, "key_id": e.key_id, "at": e.at.isoformat()} for e in events]
    return JSONResponse(body)


async def _set_state(request: Request, state: FileState) -> JSONResponse:
    publishing = state is FileState.published
    key_id, fields = await _authenticated(request, frozenset({"channels"}) if publishing else frozenset())
    # Validated before anything changes: a bad channel list leaves the file as it was.
    wanted = parse_channels(fields["channels"]) if "channels" in fields else None
    change = await ctx(request).catalog.set_state(request.path_params["file_id"], state, key_id, wanted)
    if change is None:
        raise NotFound("unknown_file", "no file with this id")
    body = file_json(change.file)
    body["channels"] = list(change.channels)
    return JSONResponse(body)


async def publish(request: Request) -> JSONResponse:
    return await _set_state(request, FileState.published)


async def unpublish(request: Request) -> JSONResponse:
    return await _set_state(request, FileState.unpublished)
