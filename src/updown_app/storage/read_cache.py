"""Object reads through the backend cache units (charms/cache, role=backend), the tier between the app and the store.

When ``caches.backends`` (or ``caches.units_file``, which follows units as they join and leave: cache_units.py) is
set, ``create_storage`` wraps the real backend in ``ReadCacheStorage``. Its ``get``:

1. picks the unit for the object by consistent hashing on the object key (``uhashring`` over the unit names): every
   app unit picks the same unit for a key, and a unit joining or leaving moves only its share of the keys;
2. makes a presigned URL for the object (a Swift TempURL, an S3 presigned GET) and sends that URL's path and query
   to the unit, with a ``Range`` header for the bytes wanted. The unit fetches from the store with it (over HTTPS)
   and caches the object in slices keyed by the path only, so every TempURL of an object shares one entry;
3. streams the body in chunks of at most ``chunk_size`` bytes, as the direct path does.

If the unit is unreachable, refuses, answers an error or breaks off, the read continues from the store directly
(from the byte where the unit stopped), counted in ``updown_read_cache_fallbacks_total{unit,reason}`` and logged
without the URL (its query is a credential). A unit that times out (frozen, overloaded) or fails
``BREAKER_THRESHOLD`` reads in a row is taken out for ``BREAKER_COOLDOWN`` seconds (a circuit breaker: reads of
its keys go to the store at once, reason ``circuit_open``; counted in ``updown_read_cache_breaker_opens_total``),
then one read tries it again. Its read timeout is well below the frontends' (Varnish's first byte: 60 s), so a
hung unit costs one download a couple of seconds, not the frontend's timeout. Reads through a unit are counted in
``updown_read_cache_reads_total{unit,cache}`` with the unit's ``X-Cache`` (HIT or MISS). Everything else (writes,
parts, heads, deletes, listings, readiness) goes to the real backend (``StorageWrapper``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Mapping
from urllib.parse import urlsplit

import httpx
from uhashring import HashRing

from updown_app.caches.units import CacheUnits
from updown_app.metrics import READ_CACHE_BREAKER_OPENS, READ_CACHE_FALLBACKS, READ_CACHE_READS
from updown_app.settings import Settings
from updown_app.storage.base import LocalFile, Storage, StorageError
from updown_app.storage.breaker import CircuitBreaker
from updown_app.storage.wrapper import StorageWrapper

log = logging.getLogger("updown.storage.read_cache")

# The unit fetches later slices of a download with the same URL: it must outlive a long download. A download that
# outlives it anyway breaks off at the unit and is finished from the store directly.
PRESIGN_TTL = 6 * 3600
CONNECT_TIMEOUT = 2.0  # a unit that does not accept a connection by then is taken as down for this read
# A miss makes the unit fetch from the store before it answers; it streams the slice as it comes, so its first
# bytes come soon. A unit slower than this is as good as down: the store directly is faster.
READ_TIMEOUT = 2.0
BREAKER_THRESHOLD = 3  # failed reads in a row that take a unit out (a timeout alone does)
BREAKER_COOLDOWN = 30.0  # seconds a unit stays out before one read tries it again
# Failures that say the unit itself is sick; a 404 or a refused signature says nothing about its health.
_SICK = frozenset({"timeout", "unreachable", "broken", "short", "upstream_error", "bad_response"})
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


def check_presignable(settings: Settings) -> None:
    """Refuse to start with backend cache units the storage can't feed: they fetch objects with presigned URLs."""
    storage = settings.storage
    if storage.backend == "local":
        raise ValueError(
            "caches.backends is set, but storage.backend 'local' cannot make presigned URLs for the backend cache "
            "units: use swift (with temp_url_key) or s3, or leave caches.backends empty"
        )
    if storage.backend == "swift" and storage.swift is not None and storage.swift.temp_url_key is None:
        raise ValueError(
            "caches.backends is set, but storage.swift.temp_url_key is not: the backend cache units read objects "
            "with TempURLs; set a key (the app sets it on the Swift account or container at start-up)"
        )


def _unit_out(unit: str, reason: str, seconds: float) -> None:
    READ_CACHE_BREAKER_OPENS.labels(unit).inc()
    log.warning(
        "backend cache unit taken out of the read path",
        extra={"cache_unit": unit, "reason": reason, "seconds": seconds},
    )


def _unit_back(unit: str) -> None:
    log.info("backend cache unit is back in the read path", extra={"cache_unit": unit})


def unit_breaker() -> CircuitBreaker:
    return CircuitBreaker(BREAKER_THRESHOLD, BREAKER_COOLDOWN, on_open=_unit_out, on_close=_unit_back)


class _UnitFailed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ReadCacheStorage(StorageWrapper):
    """``inner`` with its object reads going through the backend cache units ``{unit name: http://address:port}``."""

    def __init__(
        self,
        inner: Storage,
        backends: Mapping[str, str] | CacheUnits,
        *,
        chunk_size: int = 1024 * 1024,
        presign_ttl: int = PRESIGN_TTL,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.units = backends if isinstance(backends, CacheUnits) else CacheUnits(backends=dict(backends))
        if not self.units.dynamic and not self.units.backends:
            raise ValueError("ReadCacheStorage needs at least one backend cache unit")
        super().__init__(inner)
        self._generation = -1
        self.backends: dict[str, str] = {}
        self.ring: HashRing | None = None
        self._refresh()
        self.chunk_size = chunk_size
        self.presign_ttl = presign_ttl
        self._timeout = httpx.Timeout(connect=connect_timeout, read=read_timeout, write=10.0, pool=connect_timeout)
        self._client: httpx.AsyncClient | None = None
        self.breaker = breaker or unit_breaker()

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self._timeout,
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
                follow_redirects=False,
                trust_env=False,  # the units are on the internal network: no proxy from the environment
            )
        return self._client

    def _refresh(self) -> None:
        """Follow the units as they join and leave (a units file): rebuild the ring when they changed."""
        self.units.refresh()
        if self.units.generation != self._generation:
            self._generation = self.units.generation
            self.backends = {unit: url.rstrip("/") for unit, url in self.units.backends.items()}
            self.ring = HashRing(nodes=sorted(self.backends)) if self.backends else None

    def unit_for(self, key: str) -> str | None:
        """The backend cache unit that holds ``key`` (the same on every app unit seeing the same units); None when
        there is none right now."""
        self._refresh()
        return None if self.ring is None else str(self.ring.get_node(key))

    # Reads ---------------------------------------------------------------------------------------------------

    @property
    def uncached(self) -> Storage:
        return self.inner

    def open_file(self, key: str) -> LocalFile | None:
        """Never a local file: reads go through the backend cache units (``get``)."""
        return None

    async def get(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        if length == 0:
            async for chunk in self.inner.get(key, offset, length):
                yield chunk
            return
        unit = self.unit_for(key)
        if unit is None:  # no backend unit related at the moment: the store directly
            async for chunk in self.inner.get(key, offset, length):
                yield chunk
            return
        if not self.breaker.allow(unit):  # taken out for a while: the store directly, no wait
            READ_CACHE_FALLBACKS.labels(unit, "circuit_open").inc()
            async for chunk in self.inner.get(key, offset, length):
                yield chunk
            return
        delivered = 0
        reason: str
        try:
            response = await self._open(unit, key, offset, length)
        except _UnitFailed as failure:
            reason = failure.reason
        else:
            expected = length if length is not None else _body_length(response)
            try:
                async for raw in response.aiter_raw(self.chunk_size):
                    chunk = raw if length is None else raw[: length - delivered]
                    if chunk:
                        delivered += len(chunk)
                        yield chunk
                    if length is not None and delivered >= length:
                        break
            except (httpx.TransportError, httpx.StreamError) as exc:
                reason = "broken" if not isinstance(exc, httpx.TimeoutException) else "timeout"
            else:
                if expected is None or delivered >= expected:
                    self.breaker.succeeded(unit)
                    return
                reason = "short"
            finally:
                await response.aclose()
        if reason in _SICK:
            self.breaker.failed(unit, reason, weight=self.breaker.threshold if reason == "timeout" else 1)
        self._fallback(unit, key, reason, offset + delivered)
        rest = None if length is None else length - delivered
        async for chunk in self.inner.get(key, offset + delivered, rest):
            yield chunk

    async def _open(self, unit: str, key: str, offset: int, length: int | None) -> httpx.Response:
        """The unit's response for the range, headers read and checked; raises _UnitFailed otherwise."""
        try:
            url = await self.inner.presigned_url(key, self.presign_ttl)
        except StorageError as exc:
            log.warning("could not presign an object for the read cache", extra={"object_key": key, "error": str(exc)})
            raise _UnitFailed("presign_failed") from exc
        if url is None:
            raise _UnitFailed("presign_failed")
        parts = urlsplit(url)
        target = self.backends[unit] + parts.path + (f"?{parts.query}" if parts.query else "")
        headers = {"Accept-Encoding": "identity"}
        if offset > 0 or length is not None:
            headers["Range"] = f"bytes={offset}-{'' if length is None else offset + length - 1}"
        request = self.client.build_request("GET", target, headers=headers)
        try:
            response = await self.client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            raise _UnitFailed("timeout") from exc
        except httpx.TransportError as exc:
            raise _UnitFailed("unreachable") from exc
        status = response.status_code
        if status == 206:
            match = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
            good = match is not None and int(match.group(1)) == offset
        else:
            good = status == 200 and offset == 0
        if not good:
            await response.aclose()
            if status == 404:
                raise _UnitFailed("not_found")  # the store says so directly (KeyError), or the unit was wrong
            if 400 <= status < 500:
                raise _UnitFailed("refused")  # 403: not (yet) in the unit's allow list; 401: signature refused
            raise _UnitFailed("upstream_error" if status >= 500 else "bad_response")
        cache = "HIT" if response.headers.get("x-cache", "").upper() == "HIT" else "MISS"
        READ_CACHE_READS.labels(unit, cache).inc()
        return response

    def _fallback(self, unit: str, key: str, reason: str, offset: int) -> None:
        READ_CACHE_FALLBACKS.labels(unit, reason).inc()
        # Never the URL: its query is a TempURL signature or an S3 presigned credential.
        log.warning(
            "backend cache unit failed, reading the store directly",
            extra={"cache_unit": unit, "object_key": key, "reason": reason, "offset": offset},
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        await self.inner.close()


def _body_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length", "")
    return int(value) if value.isdigit() else None
