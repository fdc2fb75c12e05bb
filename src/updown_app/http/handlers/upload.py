"""``POST /v1/files``: a signed multipart upload streamed to storage while its digests are computed.

Checks happen in the cheapest order that leaks nothing: length limit and Authorization header before reading
the body; signature, fields and duplicates once the fields preceding the file part are read; size, MD5 and
SHA-256 while the file streams. Any failure leaves no object and no record behind.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from updown_app import metrics
from updown_app.core.digests import Declared, DigestMismatchError, Digests, MultiHasher, verified_stream
from updown_app.http.errors import ApiError
from updown_app.http.handlers.files import file_json
from updown_app.http.wire.multipart import MAX_FIELD_BYTES, MAX_FIELDS, MultipartReader, boundary_of
from updown_app.metadata.models import File, FileState, Visibility
from updown_app.metadata.repository import DuplicateFileError, utcnow
from updown_app.services.context import AppContext, ctx
from updown_app.storage.base import StorageIntegrityError, StorageUnavailableError

log = logging.getLogger("updown.upload")

PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9.+-]{0,127}$")
REVISION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+~_-]{0,127}$")
HEX_RE = {32: re.compile(r"^[0-9a-fA-F]{32}$"), 64: re.compile(r"^[0-9a-fA-F]{64}$")}
RESERVED_PACKAGES = frozenset({"v1", "healthz", "readyz", "metrics"})
UPLOAD_FIELDS = frozenset(
    {"package", "revision", "filename", "visibility", "size", "md5", "sha256", "timestamp", "nonce"}
)
# Multipart framing and the fields around the file part may add this much to Content-Length.
FORM_OVERHEAD = MAX_FIELDS * MAX_FIELD_BYTES


def _bad(code: str, message: str) -> ApiError:
    return ApiError(400, code, message)


def object_key(sha256: str) -> str:
    return f"sha256/{sha256[:2]}/{sha256}"


def check_filename(name: str) -> str:
    if not name or len(name.encode()) > 255:
        raise _bad("invalid_filename", "filename must be 1-255 bytes")
    if "/" in name or "\\" in name or name in (".", "..") or ".." in name:
        raise _bad("invalid_filename", "filename must not contain path separators or '..'")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise _bad("invalid_filename", "filename must not contain control characters")
    if name.startswith("."):
        raise _bad("invalid_filename", "filename must not start with '.'")
    return name


@dataclass(frozen=True)
class UploadFields:
    package: str
    revision: str
    filename: str
    visibility: Visibility
    declared: Declared


def parse_fields(fields: dict[str, str], max_size: int) -> UploadFields:
    unknown = sorted(set(fields) - UPLOAD_FIELDS)
    if unknown:
        raise _bad("unknown_field", f"unknown field(s): {', '.join(unknown)}")
    missing = sorted(UPLOAD_FIELDS - set(fields))
    if missing:
        raise _bad("missing_field", f"missing field(s): {', '.join(missing)}")
    package, revision = fields["package"], fields["revision"]
    if not PACKAGE_RE.match(package) or package in RESERVED_PACKAGES:
        raise _bad("invalid_package", "package must match [a-z0-9][a-z0-9.+-]* and not be a reserved name")
    if not REVISION_RE.match(revision):
        raise _bad("invalid_revision", "revision must match [A-Za-z0-9][A-Za-z0-9.+~_-]*")
    try:
        visibility = Visibility(fields["visibility"])
    except ValueError:
        raise _bad("invalid_visibility", "visibility must be 'public' or 'private'") from None
    if not fields["size"].isdigit():
        raise _bad("invalid_size", "size must be a non-negative integer")
    size = int(fields["size"])
    if size > max_size:
        raise ApiError(413, "too_large", f"files may be at most {max_size} bytes")
    if not HEX_RE[32].match(fields["md5"]):
        raise _bad("invalid_md5", "md5 must be 32 hex digits")
    if not HEX_RE[64].match(fields["sha256"]):
        raise _bad("invalid_sha256", "sha256 must be 64 hex digits")
    return UploadFields(
        package,
        revision,
        check_filename(fields["filename"]),
        visibility,
        Declared(size=size, md5=fields["md5"].lower(), sha256=fields["sha256"].lower()),
    )


async def _drain(stream: AsyncIterator[bytes]) -> None:
    async for _ in stream:
        pass


def file_record(
    digests: Digests, *, package: str, revision: str, filename: str, visibility: str, key: str, key_id: str
) -> File:
    """The unpublished record of a verified upload (simple or resumable)."""
    return File(
        id=uuid.uuid4().hex,
        package=package,
        revision=revision,
        filename=filename,
        size=digests.size,
        md5=digests.md5,
        sha1=digests.sha1,
        sha256=digests.sha256,
        sha512=digests.sha512,
        object_key=key,
        visibility=visibility,
        state=FileState.unpublished.value,
        created_by=key_id,
        created_at=utcnow(),
    )


async def store(
    context: AppContext, upload: UploadFields, body: AsyncIterator[bytes], key_id: str
) -> tuple[str, bool, File]:
    """Stream and verify the body; returns the object key, whether this upload created it, and the record."""
    hasher = MultiHasher()
    checked = verified_stream(body, upload.declared, hasher, context.settings.chunk_size)
    existing = await context.repository.object_for_sha256(upload.declared.sha256)
    if existing is not None and await context.storage.head(existing) is not None:
        # Identical content is stored once; the body is still read and verified against what was signed.
        await _drain(checked)
        key, created = existing, False
    else:
        key, created = object_key(upload.declared.sha256), True
        await context.storage.put(key, checked, size=upload.declared.size, md5=upload.declared.md5)
    record = file_record(
        hasher.digests(),
        package=upload.package,
        revision=upload.revision,
        filename=upload.filename,
        visibility=upload.visibility.value,
        key=key,
        key_id=key_id,
    )
    return key, created, record


async def upload(request: Request) -> Response:
    context = ctx(request)
    try:
        return await _upload(context, request)
    except ApiError as exc:
        metrics.UPLOAD_FAILURES.labels(reason=exc.code).inc()
        return exc.response()
    except ClientDisconnect:
        metrics.UPLOAD_FAILURES.labels(reason="client_disconnected").inc()
        log.info("upload abandoned by the client")
        return Response(status_code=400)


async def _upload(context: AppContext, request: Request) -> Response:
    settings = context.settings
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > settings.max_upload_size + FORM_OVERHEAD:
        raise ApiError(413, "too_large", f"files may be at most {settings.max_upload_size} bytes")
    creds = context.verifier.credentials(request.headers.get("authorization"))
    if request.url.query:
        raise _bad("unexpected_query", "uploads take no query parameters")
    reader = MultipartReader(request.stream(), boundary_of(request.headers.get("content-type")))
    fields = await reader.read_fields()
    key_id = await context.verifier.verify(creds, "POST", request.scope["raw_path"].decode("latin-1"), fields)
    if reader.file_part is None:
        raise _bad("missing_file", "the upload has no file part")
    parsed = parse_fields(fields, settings.max_upload_size)
    if await context.repository.name_taken(parsed.package, parsed.revision, parsed.filename):
        raise ApiError(409, "duplicate", "a file with this package, revision and filename exists")
    try:
        key, created, record = await store(context, parsed, reader.file_data(), key_id)
    except DigestMismatchError as exc:
        raise _bad(f"{exc.field}_mismatch", str(exc)) from None
    except StorageIntegrityError as exc:
        raise _bad("md5_mismatch", f"the object store refused the body: {exc}") from None
    except StorageUnavailableError:
        raise ApiError(
            503, "storage_unavailable", "the object store is unavailable; retry later", {"retry-after": "30"}
        ) from None
    try:
        await context.repository.add(record, key_id)
    except DuplicateFileError:
        # Lost a race with an identical (package, revision, filename): undo our object unless shared.
        if created and not await context.repository.object_in_use(key):
            await context.storage.delete(key)
        raise ApiError(409, "duplicate", "a file with this package, revision and filename exists") from None
    except BaseException:
        if created and not await context.repository.object_in_use(key):
            await context.storage.delete(key)
        raise
    metrics.UPLOADED_BYTES.inc(record.size)
    log.info(
        "uploaded",
        extra={"file_id": record.id, "package": record.package, "size": record.size, "key_id": key_id},
    )
    return JSONResponse(file_json(record), status_code=201)
