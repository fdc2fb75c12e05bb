"""Pull-through downloads: a public download this instance does not have is fetched from the configured upstream,
verified against the upstream's signed (TUF) index, streamed to the client and stored, so the next request is
served from here, and keeps being served when the upstream is down.

The bytes go through the upload's verifying stream into our storage while they are copied to the client. The
verifying stream holds the last chunk back until size, MD5 and the signed SHA-256 matched, so a client never
receives a complete body that failed a check (the connection is cut instead) and no record is made of it. The
MD5 comes from the upstream's ``Digest`` header: not signed, it only feeds the object store's own receipt check;
the signed SHA-256 and SHA-512 decide. The first answer is ``no-store`` (the caches take the file from the next,
ordinary answer); Range is ignored on it. Concurrent requests for one missing file wait for the first to finish.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import mimetypes
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any
from urllib.parse import quote

import httpx
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from tuf.api.metadata import TargetFile

from updown_app.core.digests import Declared, DigestMismatchError, MultiHasher, VerifiedBody, verified_stream
from updown_app.http.errors import ApiError, error_response
from updown_app.http.handlers.upload import file_record, object_key
from updown_app.http.wire.streaming import ObjectResponse
from updown_app.index.fetcher import CHUNK
from updown_app.metadata.models import File, Visibility
from updown_app.metrics import PULL_THROUGH
from updown_app.services.context import AppContext
from updown_app.settings import Settings
from updown_app.storage.base import StorageError
from updown_app.upstream.importer import (
    RefusedError,
    UpstreamIndex,
    record_imported,
    refusal_reason,
    split_target,
    state_dir_for,
)

log = logging.getLogger("updown.pull_through")
PULL_KEY_ID = "pull-through"
_QUEUE_CHUNKS = 8  # chunks buffered between the upstream and a slow client


def _md5_from_digest(header: str) -> str | None:
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        if name.strip().lower() == "md5":
            try:
                return base64.b64decode(value.strip()).hex()
            except ValueError:
                return None
    return None


class PullThrough:
    def __init__(self, context: AppContext, settings: Settings) -> None:
        up = settings.upstream
        assert up.url and up.root_file is not None
        self.context = context
        self.settings = settings
        self.index = UpstreamIndex(
            up.url, up.root_file.read_bytes(), state_dir_for(settings.data_dir, up.url), up.ca_bundle, up.timeout
        )
        verify: bool | str = str(up.ca_bundle) if up.ca_bundle else True
        self.http = httpx.AsyncClient(
            verify=verify, timeout=httpx.Timeout(up.timeout, connect=min(up.timeout, 10.0)), trust_env=False
        )
        self._refreshed = float("-inf")  # monotonic() may be small right after boot
        self._refresh_lock = asyncio.Lock()
        self._inflight: dict[str, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @staticmethod
    def configured(settings: Settings) -> bool:
        return bool(settings.upstream.url) and settings.upstream.root_file is not None

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.http.aclose()
        self.index.close()

    async def _targetinfo(self, path: str) -> TargetFile | None:
        """The upstream's verified record of ``path``; the metadata is refreshed at most every refresh_interval.
        When a refresh fails, what was verified before is used; with nothing verified, ApiError 503."""
        async with self._refresh_lock:
            if time.monotonic() - self._refreshed >= self.settings.upstream.refresh_interval:
                # A failed attempt waits its turn too: a down upstream is not retried by every missing download
                # (each behind this lock, each waiting for its own connect timeout).
                self._refreshed = time.monotonic()
                try:
                    await asyncio.to_thread(self.index.refresh)
                except Exception as exc:
                    log.warning("upstream index refresh failed", extra={"reason": refusal_reason(exc)})
        if self.index.updater is None:
            raise ApiError(503, "upstream_unavailable", "the upstream is unavailable", {"retry-after": "30"})
        return await asyncio.to_thread(self.index.targetinfo, path)

    async def serve(self, request: Request, package: str, revision: str, filename: str) -> Response | ObjectResponse:
        path = f"{package}/{revision}/{filename}"
        if await self.context.repository.name_taken(package, revision, filename):
            # Here but not served (unpublished or private here): the upstream's copy must not override that.
            raise ApiError(404, "not_found", "no such file")
        info = await self._targetinfo(path)
        try:
            if info is None:
                raise RefusedError("not_found", "not in the upstream's index")
            split_target(info.path)
        except RefusedError:
            raise ApiError(404, "not_found", "no such file") from None
        existing = await self.context.repository.object_for_sha256(info.hashes["sha256"])
        # Checked after the last await: _import_whole and _stream claim the path before they first suspend, so
        # requests that arrived during the index refresh wait for one fetch instead of each starting their own.
        waiting = self._inflight.get(path)
        if waiting is not None:
            await waiting.wait()
            return await self._serve_local(request)
        if request.method == "HEAD" or existing is not None:
            await self._import_whole(info, existing)
            return await self._serve_local(request)
        return await self._stream(info)

    async def _serve_local(self, request: Request) -> Response | ObjectResponse:
        """The ordinary answer for what is now stored here (404 if it could not be imported)."""
        from updown_app.http.handlers.download import find_file, respond

        file, private = await find_file(self.context, request)
        return await respond(self.context, request, file, private)

    async def _import_whole(self, info: TargetFile, existing: str | None) -> None:
        event = self._inflight.setdefault(info.path, asyncio.Event())
        try:
            if existing is not None and await self.context.storage.head(existing) is not None:
                hasher = None
                key = existing
            else:
                async with self.http.stream("GET", self.index.url(info.path), headers=self._headers()) as r:
                    if r.status_code != 200:
                        raise ApiError(502, "upstream_error", f"the upstream answered {r.status_code}")
                    key, hasher = await self._store(info, r, r.aiter_bytes(CHUNK), None)
            await self._record(info, key, hasher)
        finally:
            event.set()
            self._inflight.pop(info.path, None)

    def _headers(self) -> dict[str, str]:
        return {"x-forwarded-proto": "https"} if self.index.base_url.startswith("http://") else {}

    async def _store(
        self,
        info: TargetFile,
        response: httpx.Response,
        source: AsyncIterator[bytes],
        tee: asyncio.Queue[bytes | BaseException | None] | None,
    ) -> tuple[str, MultiHasher]:
        md5 = _md5_from_digest(response.headers.get("digest", ""))
        if md5 is None:
            raise ApiError(502, "upstream_error", "the upstream sent no MD5 digest")
        declared = Declared(size=info.length, md5=md5, sha256=info.hashes["sha256"])
        hasher = MultiHasher()
        checked = verified_stream(source, declared, hasher, self.settings.chunk_size)
        body = checked if tee is None else _Tee(checked, tee)
        key = object_key(declared.sha256)
        await self.context.storage.put(key, body, size=declared.size, md5=declared.md5)
        if hasher.digests().sha512 != info.hashes.get("sha512", hasher.digests().sha512):
            if not await self.context.repository.object_in_use(key):
                await self.context.storage.delete(key)
            raise DigestMismatchError("sha512", "SHA-512 of the upstream's file does not match its signed index")
        return key, hasher

    async def _record(self, info: TargetFile, key: str, hasher: MultiHasher | None) -> File | None:
        name = split_target(info.path)
        if hasher is None:  # the content is here under another name: record it without fetching
            from updown_app.core.digests import Digests

            like = await self._file_with_key(key)
            digests = Digests(like.size, like.md5, like.sha1, like.sha256, like.sha512)
        else:
            digests = hasher.digests()
        record = file_record(
            digests,
            package=name.package,
            revision=name.revision,
            filename=name.filename,
            visibility=Visibility.public.value,
            key=key,
            key_id=PULL_KEY_ID,
        )
        if await record_imported(self.context, info, record, created=hasher is not None) is None:
            return None  # another request or process recorded it first
        log.info("pulled from upstream", extra={"path": info.path, "size": record.size})
        return record

    async def _file_with_key(self, key: str) -> File:
        from sqlalchemy import select

        async with self.context.repository.sessions() as session:
            file = await session.scalar(select(File).where(File.object_key == key).limit(1))
        assert file is not None
        return file

    async def _stream(self, info: TargetFile) -> Response:
        event = self._inflight.setdefault(info.path, asyncio.Event())
        request = self.http.build_request("GET", self.index.url(info.path), headers=self._headers())
        try:
            upstream = await self.http.send(request, stream=True)
        except httpx.HTTPError:
            event.set()
            self._inflight.pop(info.path, None)
            return error_response(503, "upstream_unavailable", "the upstream is unavailable", {"retry-after": "30"})
        if upstream.status_code != 200:
            await upstream.aclose()
            event.set()
            self._inflight.pop(info.path, None)
            return error_response(502, "upstream_error", f"the upstream answered {upstream.status_code}")
        queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(_QUEUE_CHUNKS)

        async def fetch_and_store() -> None:
            try:
                key, hasher = await self._store(info, upstream, upstream.aiter_bytes(CHUNK), queue)
                await self._record(info, key, hasher)
                PULL_THROUGH.labels("stored").inc()
                await queue.put(None)
            except (DigestMismatchError, StorageError, httpx.HTTPError, ApiError) as exc:
                PULL_THROUGH.labels("refused" if isinstance(exc, DigestMismatchError) else "failed").inc()
                log.error("pull-through refused or failed", extra={"path": info.path, "error": type(exc).__name__})
                await queue.put(exc)
            finally:
                await upstream.aclose()
                event.set()
                self._inflight.pop(info.path, None)

        task = self._spawn(fetch_and_store())

        async def body() -> AsyncIterator[bytes]:
            try:
                while True:
                    item = await queue.get()
                    if item is None:
                        return
                    if isinstance(item, BaseException):
                        raise item  # cuts the connection: the client never sees a complete bad body
                    yield item
            finally:
                if not task.done():
                    # The client left: keep storing (the next request finds it) without feeding the queue.
                    self._spawn(_drain(queue, task))

        filename = info.path.rsplit("/", 1)[1]
        headers = {
            "content-length": str(info.length),
            "content-type": mimetypes.guess_type(filename)[0] or "application/octet-stream",
            "content-disposition": f"attachment; filename*=UTF-8''{quote(filename, safe='')}",
            "etag": f'"{info.hashes["sha256"]}"',
            "cache-control": "no-store",
        }
        return StreamingResponse(body(), headers=headers)


class _Tee:
    """The verified stream to the store, each chunk also queued for the client. Still a verified stream to the
    store (``verifies_md5``), so the backend does not compute the MD5 again."""

    verifies_md5 = True

    def __init__(self, checked: VerifiedBody, queue: asyncio.Queue[bytes | BaseException | None]) -> None:
        self._checked = checked
        self._queue = queue

    def __aiter__(self) -> _Tee:
        return self

    async def __anext__(self) -> bytes:
        chunk = await anext(self._checked)
        await self._queue.put(chunk)
        return chunk


async def _drain(queue: asyncio.Queue[bytes | BaseException | None], task: asyncio.Task[None]) -> None:
    while not task.done() or not queue.empty():
        try:
            await asyncio.wait_for(queue.get(), timeout=1.0)
        except TimeoutError:
            continue
