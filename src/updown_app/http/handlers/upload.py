"""``POST /v1/files``: a signed multipart upload streamed to storage while its digests are computed.

Checks happen in the cheapest order that leaks nothing: length limit and Authorization header before reading
the body; signature, fields and duplicates once the fields preceding the file part are read; size, MD5 and
SHA-256 while the file streams. Any failure leaves no object and no record behind.

The answer has size, MD5 and SHA-256, verified; SHA-1 and SHA-512 are hashed off the request path from the stored
object (``services/digest_completion.py``), ``null`` in the record until then, always there before a publish.
"""

from __future__ import annotations

import logging

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from updown_app import metrics
from updown_app.core.errors import Conflict, DomainError, InvalidInput, TooLarge
from updown_app.http.errors import ApiError, as_api_error
from updown_app.http.handlers.files import file_json
from updown_app.http.state import ctx
from updown_app.http.wire.multipart import MAX_FIELD_BYTES, MAX_FIELDS, MultipartReader, boundary_of
from updown_app.runtime import Runtime
from updown_app.services.ingest import DUPLICATE, StreamContent
from updown_app.services.upload_fields import parse_fields

log = logging.getLogger("updown.upload")

# Multipart framing and the fields around the file part may add this much to Content-Length.
FORM_OVERHEAD = MAX_FIELDS * MAX_FIELD_BYTES


async def upload(request: Request) -> Response:
    context = ctx(request)
    try:
        return await _upload(context, request)
    except (ApiError, DomainError) as exc:
        metrics.UPLOAD_FAILURES.labels(reason=exc.code).inc()
        return as_api_error(exc).response()
    except ClientDisconnect:
        metrics.UPLOAD_FAILURES.labels(reason="client_disconnected").inc()
        log.info("upload abandoned by the client")
        return Response(status_code=400)


async def _upload(context: Runtime, request: Request) -> Response:
    settings = context.settings
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > settings.max_upload_size + FORM_OVERHEAD:
        raise TooLarge("too_large", f"files may be at most {settings.max_upload_size} bytes")
    creds = context.verifier.credentials(request.headers.get("authorization"))
    if request.url.query:
        raise InvalidInput("unexpected_query", "uploads take no query parameters")
    reader = MultipartReader(request.stream(), boundary_of(request.headers.get("content-type")))
    fields = await reader.read_fields()
    key_id = await context.verifier.verify(creds, "POST", request.scope["raw_path"].decode("latin-1"), fields)
    if reader.file_part is None:
        raise InvalidInput("missing_file", "the upload has no file part")
    parsed = parse_fields(fields, settings.max_upload_size)
    if await context.catalog.name_taken(parsed.package, parsed.revision, parsed.filename):
        raise Conflict("duplicate", DUPLICATE)
    content = StreamContent(reader.file_data(), parsed.declared, settings.chunk_size)
    record = await context.ingest.ingest(parsed, content, key_id)
    metrics.UPLOADED_BYTES.inc(record.size)
    log.info(
        "uploaded",
        extra={"file_id": record.id, "package": record.package, "size": record.size, "key_id": key_id},
    )
    return JSONResponse(file_json(record), status_code=201)
