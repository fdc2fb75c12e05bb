"""GET/HEAD ``/{package}/{revision}/{filename}`` on the public and private hostnames.

The public host serves only published public files and answers the same 404 for everything else, so nothing
leaks about unpublished or private files. The private host asks the configured ``Authorizer`` who the caller is
before looking anything up, and whether they may have the file after.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncGenerator
from typing import cast

from starlette.requests import Request
from starlette.responses import Response

from updown_app.core.errors import DomainError, NotFound
from updown_app.http.errors import ApiError, error_response
from updown_app.http.middleware.host import hostname
from updown_app.http.state import ctx
from updown_app.http.wire import ranges
from updown_app.http.wire.headers import PRIVATE_CACHE, file_headers
from updown_app.http.wire.streaming import BodyResponse, ObjectResponse, ZeroCopyResponse, zerocopy_offered
from updown_app.metadata.models import File
from updown_app.runtime import Runtime
from updown_app.storage.base import StorageError, StorageUnavailableError

log = logging.getLogger("updown.download")

_NOT_FOUND = NotFound("not_found", "no such file")


def request_host(request: Request) -> str:
    return hostname(request.headers.get("host", ""))


async def find_file(context: Runtime, request: Request) -> tuple[File, bool]:
    """The file to serve and whether this is a private-host response; a domain error otherwise."""
    params = request.path_params
    host = request_host(request)
    settings = context.settings
    if host == settings.public_host:
        # One query whatever the reason for a 404 (missing, unpublished, private): no timing oracle.
        file = await context.catalog.published_public(params["package"], params["revision"], params["filename"])
        if file is None:
            raise _NOT_FOUND
        return file, False
    if host == settings.private_host:
        principal = await context.authorizer.authenticate(request.headers.get("authorization"))
        file = await context.catalog.published(params["package"], params["revision"], params["filename"])
        if file is None:
            raise _NOT_FOUND
        await context.authorizer.authorize(principal, file)
        return file, True
    raise _NOT_FOUND


async def download(request: Request) -> Response | BodyResponse:
    context = ctx(request)
    try:
        file, private = await find_file(context, request)
    except DomainError as exc:
        public = request_host(request) == context.settings.public_host
        if isinstance(exc, NotFound) and public and context.pull_through is not None:
            return await _pull(context, request)
        error = ApiError.of(exc)
        if request_host(request) == context.settings.private_host:
            error.headers.setdefault("vary", "Authorization")
            error.headers.setdefault("cache-control", PRIVATE_CACHE)
        return error.response()
    return await respond(context, request, file, private)


async def _pull(context: Runtime, request: Request) -> Response | BodyResponse:
    """A public file missing here, fetched, verified and stored from the upstream (``upstream/pull_through.py``),
    then answered as any stored file (404 if it could not be imported)."""
    assert context.pull_through is not None
    try:
        await context.pull_through.pull(**request.path_params)
        file, private = await find_file(context, request)
    except DomainError as exc:
        return ApiError.of(exc).response()
    return await respond(context, request, file, private)


async def respond(context: Runtime, request: Request, file: File, private: bool) -> Response | BodyResponse:
    headers = file_headers(file, private)
    decision = ranges.evaluate(
        request.method,
        request.headers,
        etag=headers["etag"],
        last_modified=file.created_at,
        size=file.size,
    )
    if decision.status == 304:
        keep = ("etag", "last-modified", "cache-control", "vary", "content-disposition")
        return Response(status_code=304, headers={k: v for k, v in headers.items() if k in keep})
    if decision.status == 412:
        return error_response(412, "precondition_failed", "a precondition of the request does not hold")
    if decision.status == 416:
        assert decision.error is not None
        return error_response(
            416,
            decision.error.code,
            decision.error.message,
            {"content-range": f"bytes */{file.size}", "accept-ranges": "bytes"},
        )
    if decision.byte_range is not None:
        offset, length, status = decision.byte_range.start, decision.byte_range.length, 206
        headers["content-range"] = decision.byte_range.content_range(file.size)
    else:
        offset, length, status = 0, file.size, 200
    headers["content-length"] = str(length)
    if request.method == "HEAD" or length == 0:
        return Response(status_code=status, headers=headers)
    if zerocopy_offered(request.scope):
        try:
            local = context.storage.open_file(file.object_key)
        except KeyError:
            return _unreadable(file)
        if local is not None:
            # The file must be the stored object: one replaced or truncated underneath is refused here, and one cut
            # short during the send closes the connection (the server checks what sendfile returned).
            if local.size != file.size:
                os.close(local.fd)
                return _unreadable(file, local.size)
            return ZeroCopyResponse(status, headers, local, offset, length)
    stream = cast(AsyncGenerator[bytes, int | None], context.storage.get(file.object_key, offset, length))
    try:
        # Fetch the first chunk before answering, so a missing object or an unreachable store is a clean error.
        first = await anext(stream)
    except StorageUnavailableError as exc:
        await stream.aclose()
        return ApiError.of(exc).response()
    except (KeyError, StorageError, StopAsyncIteration):
        await stream.aclose()
        return _unreadable(file)
    if len(first) >= length:
        await stream.aclose()
        return ObjectResponse(status, headers, first, None)
    return ObjectResponse(status, headers, first, stream, max_read=context.settings.chunk_size)


def _unreadable(file: File, found_size: int | None = None) -> Response:
    extra: dict[str, object] = {"file_id": file.id, "object_key": file.object_key}
    if found_size is not None:
        extra.update(size=file.size, found_size=found_size)
    log.error("stored object unreadable", extra=extra)
    return error_response(500, "object_missing", "the stored object for this file cannot be read")
