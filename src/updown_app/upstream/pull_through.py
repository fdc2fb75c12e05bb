"""Pull-through downloads: a public download this instance does not have is fetched from the configured upstream,
verified against the upstream's signed (TUF) index, streamed to the client and stored, so the next request is
served from here, and keeps being served when the upstream is down.

The bytes go through the one ingest path (verifying stream, store, record) while they are copied to the client. The
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
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import httpx
from tuf.api.metadata import TargetFile

from updown_app.core.digests import Declared, DigestMismatchError, Digests
from updown_app.core.errors import DomainError, NotFound, Unavailable, UpstreamFailed
from updown_app.index.fetcher import CHUNK
from updown_app.metrics import PULL_THROUGH
from updown_app.services.catalog import Catalog
from updown_app.services.ingest import KnownContent, StreamContent
from updown_app.settings import Settings
from updown_app.storage.base import StorageError
from updown_app.upstream.importer import (
    Importer,
    RefusedError,
    UpstreamIndex,
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


@dataclass(frozen=True)
class Streaming:
    """The first answer for a file being fetched: its signed size and SHA-256 and the bytes as they arrive (the
    HTTP layer answers it ``no-store``; the stream raises, cutting the connection, if verification fails)."""

    filename: str
    size: int
    sha256: str
    body: AsyncIterator[bytes]


class PullThrough:
    def __init__(self, catalog: Catalog, importer: Importer, settings: Settings) -> None:
        up = settings.upstream
        assert up.url and up.root_file is not None
        self.catalog = catalog
        self.importer = importer
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
        When a refresh fails, what was verified before is used; with nothing verified, ``Unavailable``."""
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
            raise Unavailable("upstream_unavailable", "the upstream is unavailable")
        return await asyncio.to_thread(self.index.targetinfo, path)

    async def pull(self, package: str, revision: str, filename: str, whole: bool) -> Streaming | None:
        """Fetch a file missing here. None: it is stored here now (the caller serves it as any other file);
        ``whole`` (HEAD) imports it completely first. Else the first answer streams while it is stored.
        ``NotFound`` when the upstream does not have it either, or when this instance has the name but does not
        serve it (unpublished or private here: the upstream's copy must not override that)."""
        path = f"{package}/{revision}/{filename}"
        if await self.catalog.name_taken(package, revision, filename):
            raise NotFound("not_found", "no such file")
        info = await self._targetinfo(path)
        try:
            if info is None:
                raise RefusedError("not_found", "not in the upstream's index")
            split_target(info.path)
        except RefusedError:
            raise NotFound("not_found", "no such file") from None
        known = await self.importer.ingest.stored_object(info.hashes["sha256"])
        # Checked after the last await: _import_whole and _stream claim the path before they first suspend, so
        # requests that arrived during the index refresh wait for one fetch instead of each starting their own.
        waiting = self._inflight.get(path)
        if waiting is not None:
            await waiting.wait()
            return None
        if whole or known is not None:
            await self._import_whole(info, known)
            return None
        return await self._stream(info)

    async def _import_whole(self, info: TargetFile, known: str | None) -> None:
        event = self._inflight.setdefault(info.path, asyncio.Event())
        try:
            like = await self.catalog.with_object(known) if known is not None else None
            if like is not None:  # the content is here under another name: record it without fetching
                digests = Digests(like.size, like.md5, like.sha1, like.sha256, like.sha512)
                await self._record(info, KnownContent(digests), like.md5)
            else:
                async with self.http.stream("GET", self.index.url(info.path), headers=self._headers()) as r:
                    if r.status_code != 200:
                        raise UpstreamFailed("upstream_error", f"the upstream answered {r.status_code}")
                    md5 = self._md5(r)
                    await self._record(info, self._content(info, md5, r.aiter_bytes(CHUNK), None), md5)
        finally:
            event.set()
            self._inflight.pop(info.path, None)

    def _headers(self) -> dict[str, str]:
        return {"x-forwarded-proto": "https"} if self.index.base_url.startswith("http://") else {}

    @staticmethod
    def _md5(response: httpx.Response) -> str:
        md5 = _md5_from_digest(response.headers.get("digest", ""))
        if md5 is None:
            raise UpstreamFailed("upstream_error", "the upstream sent no MD5 digest")
        return md5

    def _content(
        self, info: TargetFile, md5: str, source: AsyncIterator[bytes], tap: Callable[[bytes], Awaitable[None]] | None
    ) -> StreamContent:
        declared = Declared(size=info.length, md5=md5, sha256=info.hashes["sha256"])
        return StreamContent(source, declared, self.settings.chunk_size, tap=tap)

    async def _record(self, info: TargetFile, content: StreamContent | KnownContent, md5: str) -> None:
        if await self.importer.record(info, content, md5, PULL_KEY_ID) is None:
            return  # another request or process recorded it first
        log.info("pulled from upstream", extra={"path": info.path, "size": info.length})

    async def _stream(self, info: TargetFile) -> Streaming:
        event = self._inflight.setdefault(info.path, asyncio.Event())
        request = self.http.build_request("GET", self.index.url(info.path), headers=self._headers())

        def done() -> None:
            event.set()
            self._inflight.pop(info.path, None)

        try:
            upstream = await self.http.send(request, stream=True)
        except httpx.HTTPError:
            done()
            raise Unavailable("upstream_unavailable", "the upstream is unavailable") from None
        if upstream.status_code != 200:
            await upstream.aclose()
            done()
            raise UpstreamFailed("upstream_error", f"the upstream answered {upstream.status_code}")
        queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(_QUEUE_CHUNKS)

        async def fetch_and_store() -> None:
            try:
                md5 = self._md5(upstream)
                await self._record(info, self._content(info, md5, upstream.aiter_bytes(CHUNK), queue.put), md5)
                PULL_THROUGH.labels("stored").inc()
                await queue.put(None)
            except (DomainError, StorageError, httpx.HTTPError) as exc:
                PULL_THROUGH.labels("refused" if isinstance(exc, DigestMismatchError) else "failed").inc()
                log.error("pull-through refused or failed", extra={"path": info.path, "error": type(exc).__name__})
                await queue.put(exc)
            finally:
                await upstream.aclose()
                done()

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

        return Streaming(info.path.rsplit("/", 1)[1], info.length, info.hashes["sha256"], body())


async def _drain(queue: asyncio.Queue[bytes | BaseException | None], task: asyncio.Task[None]) -> None:
    while not task.done() or not queue.empty():
        try:
            await asyncio.wait_for(queue.get(), timeout=1.0)
        except TimeoutError:
            continue
