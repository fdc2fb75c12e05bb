"""Circuit breakers: a dependency that keeps failing is skipped for a while, so requests fail at once instead of
each paying the dependency's timeouts and retries.

``CircuitBreaker`` is keyed by name (one breaker serves every backend cache unit, ``read_cache``); ``GuardedStorage``
puts one in front of an object store. Own code, not pybreaker or aiobreaker: those wrap one callable each, where
these are keyed, and guard async generators whose failure comes while they stream (a download the store drops).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar

from updown_app.metrics import STORAGE_BREAKER_OPENS
from updown_app.storage.base import ObjectInfo, PartInfo, Storage, StorageUnavailableError
from updown_app.storage.wrapper import StorageWrapper

log = logging.getLogger("updown.storage.breaker")

T = TypeVar("T")
STORE = "store"


class CircuitBreaker:
    """Per key: closed (calls go through), open (calls are refused until the cooldown ends), then one trial call
    (half-open) whose success closes it and whose failure opens it again. ``on_open(key, reason, seconds)`` and
    ``on_close(key)`` say so (metrics, logs)."""

    def __init__(
        self,
        threshold: int,
        cooldown: float,
        *,
        on_open: Callable[[str, str, float], None] | None = None,
        on_close: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.clock = clock
        self.on_open = on_open
        self.on_close = on_close
        self.failures: dict[str, int] = {}
        self.open_until: dict[str, float] = {}

    def allow(self, key: str) -> bool:
        until = self.open_until.get(key)
        if until is None:
            return True
        if self.clock() < until:
            return False
        self.open_until[key] = self.clock() + self.cooldown  # this call is the trial; the others are still refused
        return True

    def succeeded(self, key: str) -> None:
        self.failures.pop(key, None)
        if self.open_until.pop(key, None) is not None and self.on_close is not None:
            self.on_close(key)

    def failed(self, key: str, reason: str, *, weight: int = 1) -> None:
        count = self.failures.get(key, 0) + weight
        self.failures[key] = count
        if count >= self.threshold:
            self.failures[key] = 0
            self.open_until[key] = self.clock() + self.cooldown
            if self.on_open is not None:
                self.on_open(key, reason, self.cooldown)


def _store_opened(key: str, reason: str, seconds: float) -> None:
    STORAGE_BREAKER_OPENS.inc()
    log.warning(
        "object store failing: calls answer 503 at once for a while", extra={"error": reason, "seconds": seconds}
    )


def _store_closed(key: str) -> None:
    log.info("object store answering again")


class GuardedStorage(StorageWrapper):
    """``inner`` behind a breaker. A call that fails with the store unavailable (its own retries spent, a download
    that broke off for good) opens it: for ``cooldown`` seconds every call raises ``StorageUnavailableError`` at
    once (the client's 503 with Retry-After in milliseconds, not after the next call's retries); then one call
    tries the store again. Any answer of the store (an object, a 404, a refused checksum) closes it.

    Deletes are not guarded: the undo of a failed ingest and the sweeper must try the store itself (they retry on
    their own). Streams ignore ``asend`` size hints, which only the local backend (never guarded) uses."""

    def __init__(self, inner: Storage, cooldown: float) -> None:
        super().__init__(inner)
        self.breaker = CircuitBreaker(1, cooldown, on_open=_store_opened, on_close=_store_closed)

    def _admit(self) -> None:
        if not self.breaker.allow(STORE):
            raise StorageUnavailableError("the object store failed moments ago; retry later")

    async def _guarded(self, call: Callable[[], Awaitable[T]]) -> T:
        self._admit()
        try:
            result = await call()
        except StorageUnavailableError as exc:
            self.breaker.failed(STORE, str(exc))
            raise
        except Exception:
            self.breaker.succeeded(STORE)  # the store answered (404, integrity): it is up
            raise
        self.breaker.succeeded(STORE)
        return result

    async def _guarded_stream(self, stream: Callable[[], AsyncIterator[T]]) -> AsyncIterator[T]:
        self._admit()
        try:
            async for item in stream():
                yield item
        except StorageUnavailableError as exc:
            self.breaker.failed(STORE, str(exc))
            raise
        except Exception:
            self.breaker.succeeded(STORE)
            raise
        self.breaker.succeeded(STORE)  # not reached when the consumer stops early (GeneratorExit): nothing learnt

    async def put(self, key: str, body: AsyncIterator[bytes], *, size: int, md5: str) -> None:
        await self._guarded(lambda: self.inner.put(key, body, size=size, md5=md5))

    def get(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        return self._guarded_stream(lambda: self.inner.get(key, offset, length))

    async def head(self, key: str) -> ObjectInfo | None:
        return await self._guarded(lambda: self.inner.head(key))

    def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        return self._guarded_stream(lambda: self.inner.list(prefix))

    async def check(self) -> None:
        await self._guarded(self.inner.check)

    async def put_part(self, key: str, data: bytes) -> str:
        return await self._guarded(lambda: self.inner.put_part(key, data))

    def get_part(self, key: str) -> AsyncIterator[bytes]:
        return self._guarded_stream(lambda: self.inner.get_part(key))

    def list_parts(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        return self._guarded_stream(lambda: self.inner.list_parts(prefix))

    async def assemble(
        self, key: str, parts: Sequence[PartInfo], body: AsyncIterator[bytes], *, size: int, md5: str
    ) -> bool:
        return await self._guarded(lambda: self.inner.assemble(key, parts, body, size=size, md5=md5))
