"""Signed file API: ``GET /v1/files/{id}``, ``POST /v1/files/{id}/publish`` and ``.../unpublish``.

Small signed requests carry their fields in the query string or an urlencoded body; each field once.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import parse_qsl, quote

from starlette.requests import Request
from starlette.responses import JSONResponse

from updown_app.http.errors import ApiError
from updown_app.metadata.channels import Channels
from updown_app.metadata.models import File, FileState
from updown_app.services.context import ctx

log = logging.getLogger("updown.files")
MAX_FORM_BYTES = 64 * 1024
CHANNEL_RE = re.compile(r"^[a-z][a-z0-9-]{0,63}$")
MAX_CHANNELS = 16


def parse_channels(value: str) -> list[str]:
    """The ``channels`` field of a publish: names joined by ``,`` (empty: in no channel); see docs/signing.md."""
    if value == "":
        return []
    names = value.split(",")
    for name in names:
        if not CHANNEL_RE.match(name):
            raise ApiError(400, "invalid_channel", "channel names must match [a-z][a-z0-9-]*, joined by ','")
    if len(set(names)) != len(names):
        raise ApiError(400, "invalid_channel", "a channel is named twice")
    if len(names) > MAX_CHANNELS:
        raise ApiError(400, "invalid_channel", f"a file may be in at most {MAX_CHANNELS} channels")
    return sorted(names)


def download_path(file: File) -> str:
    """The URL path a file is downloaded from, percent-encoded as clients send it."""
    return "/" + "/".join(quote(part, safe="!$&'()*+,;=:@") for part in (file.package, file.revision, file.filename))


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
        raise ApiError(400, "unknown_field", f"unknown field(s): {', '.join(extra)}")
    return key_id, fields


async def info(request: Request) -> JSONResponse:
    await _authenticated(request)
    file = await ctx(request).repository.get(request.path_params["file_id"])
    if file is None:
        raise ApiError(404, "unknown_file", "no file with this id")
    events = await ctx(request).repository.events(file.id)
    body = file_json(file)
    body["channels"] = await Channels(ctx(request).repository.sessions).of(file.id)
    body["events"] = [{"action": e.action, "key_id": e.key_id, "at": e.at.isoformat()} for e in events]
    return JSONResponse(body)


async def _set_state(request: Request, state: FileState) -> JSONResponse:
    publishing = state is FileState.published
    key_id, fields = await _authenticated(request, frozenset({"channels"}) if publishing else frozenset())
    # Validated before anything changes: a bad channel list leaves the file as it was.
    wanted = parse_channels(fields["channels"]) if "channels" in fields else None
    context = ctx(request)
    channels = Channels(context.repository.sessions)
    change = await context.repository.set_state(request.path_params["file_id"], state, key_id)
    if change is None:
        raise ApiError(404, "unknown_file", "no file with this id")
    moved = wanted is not None and await channels.set(change.file.id, wanted)
    if change.changed or moved:
        log.info(state.value, extra={"file_id": change.file.id, "key_id": key_id, "channels": wanted})
        try:
            for hook in context.state_hooks:
                await hook(change.file, state)
        except Exception:
            # The change is committed; the index's background refresh rebuilds from the files table, and latest
            # redirects are short-lived. Say so rather than answer an opaque 500.
            log.exception("propagating a state change failed", extra={"file_id": change.file.id})
            raise ApiError(
                503,
                "propagation_pending",
                f"the file is {state.value}; the signed index and the caches catch up within the index refresh "
                "interval",
                {"retry-after": "60"},
            ) from None
    body = file_json(change.file)
    body["channels"] = await channels.of(change.file.id)
    return JSONResponse(body)


async def publish(request: Request) -> JSONResponse:
    return await _set_state(request, FileState.published)


async def unpublish(request: Request) -> JSONResponse:
    return await _set_state(request, FileState.unpublished)
