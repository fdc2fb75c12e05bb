"""Pull-through downloads: a public download this instance does not have is fetched from the configured upstream,
verified against the upstream's signed (TUF) index, stored, and then answered as an ordinary local download, so
every later request is served from here, and keeps being served when the upstream is down.

The bytes go through the one ingest path (``services/ingest.py``: size, MD5 and the signed SHA-256 while they
stream, then the signed SHA-512) before anything is answered: a client never receives a byte that was not
verified, so no validator (ETag, Last-Modified) it could resume on with If-Range ever covers unverified bytes. The
cost is latency: the first byte of a first-time pull arrives once the whole file is stored (measured in
docs/index-and-mirroring.md). The MD5 comes from the upstream's ``Digest`` header: not signed, it only feeds the
object store's own receipt check. Concurrent requests for one missing file wait for the first to finish.

No HTTP here: ``pull`` returns once the file is stored (the download handler then serves it as any other) or
raises a domain error (``NotFound``, ``Unavailable``, ``UpstreamFailed``).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import httpx

from updown_app.core.digests import Declared, DigestMismatchError, Digests
from updown_app.core.errors import DomainError, NotFound, Unavailable, UpstreamFailed
from updown_app.index.client import CHUNK
from updown_app.metrics import PULL_THROUGH
from updown_app.services.catalog import Catalog
from updown_app.services.ingest import Content, KnownContent, StreamContent
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

if TYPE_CHECKING:
    from tuf.api.metadata import TargetFile

log = logging.getLogger("updown.pull_through")
PULL_KEY_ID = "pull-through"
_TRANSIENT = ("unreachable", "upstream_error")  # a refresh that failed without refusing anything


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
        self._refused: str | None = None  # why the last refresh refused the upstream's metadata
        self._inflight: dict[str, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @staticmethod
    def configured(settings: Settings) -> bool:
        return bool(settings.upstream.url) and settings.upstream.root_file is not None

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # raised to the request, if still there
        return task

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.http.aclose()
        self.index.close()

    async def _targetinfo(self, path: str) -> TargetFile | None:
        """The upstream's verified record of ``path``; the metadata is refreshed at most every refresh_interval.

        When the upstream is unreachable, what was verified before is used while it has not expired. When its
        metadata was refused (expired/frozen, rolled back, badly signed) or what is trusted has expired, nothing
        new is served, as ``updown mirror`` imports nothing then: ``Unavailable`` (also with nothing verified)."""
        async with self._refresh_lock:
            if time.monotonic() - self._refreshed >= self.settings.upstream.refresh_interval:
                # A failed attempt waits its turn too: a down upstream is not retried by every missing download
                # (each behind this lock, each waiting for its own connect timeout).
                self._refreshed = time.monotonic()
                try:
                    await asyncio.to_thread(self.index.refresh)
                    self._refused = None
                except Exception as exc:
                    reason = refusal_reason(exc)
                    log.warning("upstream index refresh failed", extra={"reason": reason})
                    self._refused = None if reason in _TRANSIENT else reason
        if self.index.updater is None:
            raise Unavailable("upstream_unavailable", "the upstream is unavailable")
        stale = self._refused or ("expired_metadata" if self.index.expired() else None)
        if stale is not None:
            PULL_THROUGH.labels("stale").inc()
            raise Unavailable("upstream_stale", f"the upstream's signed index is not fresh ({stale})")
        return await asyncio.to_thread(self.index.targetinfo, path)

    async def pull(self, package: str, revision: str, filename: str) -> None:
        """Fetch, verify, store and record a file missing here; on return it is stored here (the caller serves it
        as any other file). ``NotFound`` when the upstream does not have it either, or when this instance has the
        name but does not serve it (unpublished or private here: the upstream's copy must not override that)."""
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
        # Checked after the last await, and the path claimed below before the next one, so requests that arrived
        # during the index refresh wait for one fetch instead of each starting their own.
        waiting = self._inflight.get(path)
        if waiting is not None:
            await waiting.wait()
            return
        # Shielded, so a client that leaves does not abort an import half-way (the next request finds it stored).
        self._inflight[path] = asyncio.Event()
        await asyncio.shield(self._spawn(self._import_whole(info, known)))

    async def _import_whole(self, info: TargetFile, known: str | None) -> None:
        """Fetch, verify, store and record the target (a domain error, one log line, when it cannot be)."""
        event = self._inflight[info.path]
        try:
            like = await self.catalog.with_object(known) if known is not None else None
            if like is not None:  # the content is here under another name: record it without fetching
                digests = Digests(like.size, like.md5, like.sha1, like.sha256, like.sha512)
                await self._record(info, KnownContent(digests), like.md5)
            else:
                async with self.http.stream("GET", self.index.url(info.path), headers=self._headers()) as r:
                    if r.status_code != 200:
                        raise UpstreamFailed("upstream_error", f"the upstream answered {r.status_code}")
                    md5 = _md5_from_digest(r.headers.get("digest", ""))
                    if md5 is None:
                        raise UpstreamFailed("upstream_error", "the upstream sent no MD5 digest")
                    declared = Declared(size=info.length, md5=md5, sha256=info.hashes["sha256"])
                    content = StreamContent(r.aiter_bytes(CHUNK), declared, self.settings.chunk_size, all_digests=True)
                    await self._record(info, content, md5)
                PULL_THROUGH.labels("stored").inc()
        except DigestMismatchError as exc:
            PULL_THROUGH.labels("refused").inc()
            log.warning("pull-through refused", extra={"path": info.path, "mismatch": exc.field})
            raise UpstreamFailed("upstream_mismatch", "the upstream's file does not match its signed index") from None
        except (httpx.HTTPError, StorageError, DomainError) as exc:
            PULL_THROUGH.labels("failed").inc()
            log.warning("pull-through failed", extra={"path": info.path, "error": type(exc).__name__})
            if isinstance(exc, DomainError):
                raise
            if isinstance(exc, StorageError):
                raise Unavailable("storage_unavailable", "the object store is unavailable") from None
            raise Unavailable("upstream_unavailable", "the upstream is unavailable") from None
        finally:
            event.set()
            self._inflight.pop(info.path, None)

    def _headers(self) -> dict[str, str]:
        return {"x-forwarded-proto": "https"} if self.index.base_url.startswith("http://") else {}

    async def _record(self, info: TargetFile, content: Content, md5: str) -> None:
        if await self.importer.record(info, content, md5, PULL_KEY_ID) is None:
            return  # another request or process recorded it first
        log.info("pulled from upstream", extra={"path": info.path, "size": info.length})
