"""Resumable uploads, tus 1.0: core, creation, creation-with-upload, termination, checksum, expiration.

``POST /v1/uploads`` creates a session. It is signed like a simple upload: the signed fields (package, revision,
filename, visibility, size, md5, sha256, timestamp, nonce) travel in ``Upload-Metadata`` and ``Upload-Length``
must equal ``size``. The answer's ``Location`` is a capability URL (``auth/upload_urls.py``) that any unit can
check on its own. ``PATCH`` appends bytes at ``Upload-Offset``: the body is cut into parts of at most
``uploads.part_size`` bytes, each stored in object storage as it fills (nothing on the unit's disk), and the
parts and the new offset are committed in the database under the session's lease, so two writers can't both
win (the other gets ``409``). On the last byte the parts are read back once, size, MD5 and SHA-256 are checked
against the signed values, and the parts are assembled into the content-addressed object: the file then exists,
unpublished, exactly like a simple upload (SHA-1 and SHA-512 follow off the request path). A mismatch discards
the session and every part.

The finish, the hash states and discarding a session's parts are the uploads service's
(``services/uploads.py``); the file is made through the one ingest path.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import logging
import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from email.utils import format_datetime
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from updown_app import metrics
from updown_app.auth import upload_urls
from updown_app.core.digests import DigestMismatchError
from updown_app.core.errors import Conflict
from updown_app.http.errors import ApiError
from updown_app.http.state import ctx
from updown_app.metadata.models import UploadPart, UploadSession
from updown_app.metadata.repository import utcnow
from updown_app.metadata.upload_sessions import UploadSessions
from updown_app.runtime import Runtime
from updown_app.services.ingest import DUPLICATE
from updown_app.services.upload_fields import parse_fields
from updown_app.services.uploads import part_prefix
from updown_app.storage.base import StorageUnavailableError

log = logging.getLogger("updown.resumable")

TUS_VERSION = "1.0.0"
EXTENSIONS = "creation,creation-with-upload,termination,checksum,expiration"
CHECKSUMS = {"md5": "md5", "sha1": "sha1", "sha256": "sha256"}
OCTETS = "application/offset+octet-stream"


def _headers(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {"tus-resumable": TUS_VERSION, "cache-control": "no-store", **(extra or {})}


def _error(status: int, code: str, message: str) -> ApiError:
    return ApiError(status, code, message, _headers())


def _expires_header(at: datetime) -> str:
    return format_datetime(at, usegmt=True)


def _check_version(request: Request) -> None:
    if request.headers.get("tus-resumable") != TUS_VERSION:
        raise ApiError(
            412, "unsupported_version", "Tus-Resumable: 1.0.0 is required", _headers({"tus-version": TUS_VERSION})
        )


def parse_metadata(value: str) -> dict[str, str]:
    """``Upload-Metadata``: comma-separated ``key base64(value)`` pairs (a value may be absent)."""
    fields: dict[str, str] = {}
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        key, _, encoded = item.partition(" ")
        if not key or key in fields:
            raise _error(400, "invalid_metadata", "Upload-Metadata keys must be present and unique")
        try:
            fields[key] = base64.b64decode(encoded.strip(), validate=True).decode() if encoded.strip() else ""
        except (binascii.Error, UnicodeDecodeError):
            raise _error(400, "invalid_metadata", f"Upload-Metadata value of {key!r} is not base64 UTF-8") from None
    return fields


def _int_header(request: Request, name: str) -> int | None:
    value = request.headers.get(name)
    if value is None:
        return None
    if not value.isdigit():
        raise _error(400, f"invalid_{name.replace('-', '_')}", f"{name} must be a non-negative integer")
    return int(value)


def _checksum(request: Request) -> tuple[Any, bytes] | None:
    value = request.headers.get("upload-checksum")
    if value is None:
        return None
    algo, _, encoded = value.strip().partition(" ")
    if algo not in CHECKSUMS:
        raise _error(400, "unsupported_checksum", f"Upload-Checksum algorithm must be one of {', '.join(CHECKSUMS)}")
    try:
        expected = base64.b64decode(encoded.strip(), validate=True)
    except binascii.Error:
        raise _error(400, "invalid_checksum", "Upload-Checksum value must be base64") from None
    return hashlib.new(CHECKSUMS[algo], usedforsecurity=False), expected


# Endpoints -------------------------------------------------------------------------------------------------------


async def options(request: Request) -> Response:
    settings = ctx(request).settings
    return Response(
        status_code=204,
        headers=_headers(
            {
                "tus-version": TUS_VERSION,
                "tus-extension": EXTENSIONS,
                "tus-max-size": str(settings.max_upload_size),
                "tus-checksum-algorithm": ",".join(CHECKSUMS),
            }
        ),
    )


async def create(request: Request) -> Response:
    context = ctx(request)
    _check_version(request)
    settings = context.settings
    creds = context.verifier.credentials(request.headers.get("authorization"))
    if request.url.query:
        raise _error(400, "unexpected_query", "uploads take no query parameters")
    if request.headers.get("upload-defer-length") is not None:
        raise _error(400, "deferred_length", "Upload-Length is required (the size is signed)")
    length = _int_header(request, "upload-length")
    if length is None:
        raise _error(400, "missing_upload_length", "Upload-Length is required")
    raw_metadata = request.headers.get("upload-metadata", "")
    fields = parse_metadata(raw_metadata)
    key_id = await context.verifier.verify(creds, "POST", request.scope["raw_path"].decode("latin-1"), fields)
    parsed = parse_fields(fields, settings.max_upload_size)
    if parsed.declared.size != length:
        raise _error(400, "length_mismatch", "Upload-Length must equal the signed size")
    if await context.catalog.name_taken(parsed.package, parsed.revision, parsed.filename):
        raise _error(409, "duplicate", DUPLICATE)
    now = utcnow()
    expires = now + timedelta(seconds=settings.uploads.expiry)
    session = UploadSession(
        id=uuid.uuid4().hex,
        key_id=key_id,
        package=parsed.package,
        revision=parsed.revision,
        filename=parsed.filename,
        visibility=parsed.visibility.value,
        size=parsed.declared.size,
        md5=parsed.declared.md5,
        sha256=parsed.declared.sha256,
        offset=0,
        state="open",
        file_id=None,
        upload_metadata=raw_metadata,
        created_at=now,
        expires_at=expires,
    )
    sessions = context.uploads.sessions
    await sessions.create(session)
    metrics.UPLOAD_SESSIONS_CREATED.inc()
    location = upload_urls.upload_path(context.verifier.keys[key_id], session.id, int(expires.timestamp()), key_id)
    headers = {"location": location, "upload-expires": _expires_header(expires)}
    log.info("upload session created", extra={"session": session.id, "size": session.size, "key_id": key_id})
    if request.headers.get("content-type") == OCTETS or session.size == 0:  # creation-with-upload; empty file
        result = await _append(context, request, sessions, session, 0)
        headers.update(result)
    else:
        headers["upload-offset"] = "0"
    return Response(status_code=201, headers=_headers(headers))


async def _session(context: Runtime, request: Request) -> tuple[UploadSessions, UploadSession]:
    p = request.path_params
    upload_urls.verify(context.verifier.keys, p["session_id"], p["expires"], p["key_id"], p["sig"])
    sessions = context.uploads.sessions
    session = await sessions.get(p["session_id"])
    if session is None or session.key_id != p["key_id"]:
        raise _error(404, "not_found", "no such upload")
    if session.expires_at <= utcnow():
        raise _error(410, "upload_expired", "this upload expired")
    return sessions, session


async def head(request: Request) -> Response:
    context = ctx(request)
    _check_version(request)
    _, session = await _session(context, request)
    headers = {
        "upload-offset": str(session.offset),
        "upload-length": str(session.size),
        "upload-expires": _expires_header(session.expires_at),
    }
    if session.upload_metadata:
        headers["upload-metadata"] = session.upload_metadata
    if session.file_id:
        headers["updown-file-id"] = session.file_id
    return Response(status_code=200, headers=_headers(headers))


async def patch(request: Request) -> Response:
    context = ctx(request)
    _check_version(request)
    if request.headers.get("content-type") != OCTETS:
        raise _error(415, "unsupported_media_type", f"PATCH bodies must be {OCTETS}")
    offset = _int_header(request, "upload-offset")
    if offset is None:
        raise _error(400, "missing_upload_offset", "Upload-Offset is required")
    sessions, session = await _session(context, request)
    if session.state != "open":
        raise _error(409, "upload_complete", "this upload is complete")
    if offset != session.offset:
        raise _error(409, "offset_mismatch", f"Upload-Offset is {session.offset}")
    headers = await _append(context, request, sessions, session, offset)
    headers["upload-expires"] = _expires_header(session.expires_at)
    return Response(status_code=204, headers=_headers(headers))


async def terminate(request: Request) -> Response:
    context = ctx(request)
    _check_version(request)
    sessions, session = await _session(context, request)
    if session.state != "open":
        raise _error(409, "upload_complete", "this upload is complete; the file exists")
    token = secrets.token_hex(16)
    if not await sessions.claim_for_removal(session.id, token, context.settings.uploads.lease, expired_only=False):
        raise _error(409, "upload_busy", "a request is writing to this upload")
    removed = await context.uploads.discard(session.id)
    log.info("upload session terminated", extra={"session": session.id, "bytes": removed})
    return Response(status_code=204, headers=_headers())


# Shared by PATCH and creation-with-upload ------------------------------------------------------------------


async def _heartbeat(sessions: UploadSessions, session_id: str, token: str, lease: float) -> None:
    while True:
        await asyncio.sleep(lease / 3)
        with contextlib.suppress(Exception):
            await sessions.renew(session_id, token, lease)


async def _parts_of(body: AsyncIterator[bytes], size: int) -> AsyncIterator[bytes]:
    """Re-cut a request body into buffers of ``size`` bytes (the last may be shorter)."""
    pieces: list[bytes] = []
    buffered = 0
    async for piece in body:
        while piece:
            take = piece[: size - buffered]
            piece = piece[len(take) :]
            pieces.append(take)
            buffered += len(take)
            if buffered == size:
                yield b"".join(pieces)
                pieces.clear()
                buffered = 0
    if buffered:
        yield b"".join(pieces)


async def _append(
    context: Runtime, request: Request, sessions: UploadSessions, session: UploadSession, offset: int
) -> dict[str, str]:
    """Store the request body at ``offset`` under the session's lease; finish the upload on its last byte."""
    settings = context.settings.uploads
    length = _int_header(request, "content-length")
    if length is not None and offset + length > session.size:
        raise _error(413, "too_large", f"the body goes past Upload-Length ({session.size})")
    checksum = _checksum(request)
    loop = asyncio.get_running_loop()
    token = secrets.token_hex(16)
    if not await sessions.acquire(session.id, offset, token, settings.lease):
        raise _error(409, "offset_mismatch", "the offset changed or another request is writing to this upload")
    heartbeat = asyncio.create_task(_heartbeat(sessions, session.id, token, settings.lease))
    storage = context.storage
    written: list[UploadPart] = []
    committed = False
    hasher = context.uploads.hash_states.take(session.id, offset)
    try:
        position = offset
        try:
            async for data in _parts_of(request.stream(), settings.part_size):
                if position + len(data) > session.size:
                    raise _error(413, "too_large", f"the body goes past Upload-Length ({session.size})")
                key = f"{part_prefix(session.id)}{position:016d}-{secrets.token_hex(4)}"
                # Storing the part, the running digests and the chunk checksum overlap (hashlib releases the GIL).
                work: list[Any] = [storage.put_part(key, data)]
                if hasher is not None:
                    work.append(hasher.update_in_threads(loop, data))
                if checksum is not None:
                    work.append(loop.run_in_executor(None, checksum[0].update, data))
                md5 = (await asyncio.gather(*work))[0]
                written.append(UploadPart(session_id=session.id, offset=position, size=len(data), md5=md5, key=key))
                position += len(data)
        except ClientDisconnect:
            metrics.UPLOAD_FAILURES.labels(reason="client_disconnected").inc()
            raise _error(400, "client_disconnected", "the body broke off") from None
        except StorageUnavailableError:
            raise ApiError(
                503,
                "storage_unavailable",
                "the object store is unavailable; retry later",
                _headers({"retry-after": "30"}),
            ) from None
        if checksum is not None and checksum[0].digest() != checksum[1]:
            raise ApiError(460, "checksum_mismatch", "Upload-Checksum does not match the body", _headers())
        if written and not await sessions.commit(session.id, token, offset, written):
            raise _error(409, "offset_mismatch", "another request took over this upload")
        committed = True
        headers = {"upload-offset": str(position)}
        if position == session.size:
            try:
                file_id = await context.uploads.finish(session, token, hasher)
            except DigestMismatchError as exc:
                raise _error(400, exc.code, f"the upload does not match what was signed: {exc}") from None
            except Conflict as exc:
                raise _error(409, exc.code, exc.message) from None
            headers["updown-file-id"] = file_id
        elif hasher is not None:
            context.uploads.hash_states.put(session.id, hasher)
        return headers
    finally:
        heartbeat.cancel()
        if not committed:
            for part in written:
                with contextlib.suppress(Exception):
                    await storage.delete_part(part.key)
        with contextlib.suppress(Exception):
            await sessions.release(session.id, token)
