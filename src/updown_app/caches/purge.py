"""Purging the frontend caches (the Varnish of every frontend unit: ``caches.frontends``, or the units file that
follows units as they join and leave, cache_units.py) when a URL must stop being served: a file unpublished, a
"latest" redirect or the signed index that changed.

Each path is banned on every unit (``BAN`` with ``X-Ban-Url``, a regex matching the path with or without a query
string, so cache-busting variants go too) before the request that caused it is answered. A unit that cannot be
reached is retried with backoff, first within the request, then in the background until ``purge_give_up``; every
failure is counted and logged. A second round runs once ``lookup_cache_ttl`` has passed: until then another app
process may still answer from its lookup cache, and a cache unit could store that answer again.

Own code rather than a library: the protocol is two HTTP methods our own VCL defines (charms/cache).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Coroutine, Sequence
from typing import Any

import httpx

from updown_app.caches.units import CacheUnits
from updown_app.metrics import CACHE_PURGE_FAILURES, CACHE_PURGE_PENDING, CACHE_PURGES
from updown_app.settings import CacheSettings

log = logging.getLogger("updown.cache_purge")
RETRY_BACKOFF = 0.2  # seconds before the first retry; doubles per retry
BACKGROUND_BACKOFF_MAX = 30.0


_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/")


def _hex_class(byte: int) -> str:
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in f"{byte:02x}")


def ban_expression(path: str) -> str:
    """The regex the VCL matches against an object's URL: this path, whichever characters the client
    percent-encoded (filenames may hold any character but ``/``), with or without a query string."""
    parts = []
    for char in path:
        if char in _UNRESERVED:
            parts.append(char)
            continue
        encoded = "".join("%" + _hex_class(b) for b in char.encode())
        parts.append(f"(?:{re.escape(char)}|{encoded})")
    return "^" + "".join(parts) + r"(\?.*)?$"


def latest_ban_regex(package: str) -> str:
    """Every latest URL of a package, any channel and glob, any query string (matched against the raw URL)."""
    # '+' is the only character of a package name a client may percent-encode.
    return "^/" + re.escape(package).replace(r"\+", "(?:\\+|%2[Bb])") + "/[^/?]+/latest/"


class CachePurger:
    def __init__(
        self, settings: CacheSettings, units: CacheUnits, public_host: str, lookup_cache_ttl: float = 0.0
    ) -> None:
        self.units = units
        self.public_host = public_host
        self.timeout = settings.purge_timeout
        self.retries = settings.purge_retries
        self.give_up = settings.purge_give_up
        self.second_round_after = lookup_cache_ttl
        self._client: httpx.AsyncClient | None = None
        self._background: set[asyncio.Task[None]] = set()

    @property
    def enabled(self) -> bool:
        """Whether there are (or may come, with a units file) frontend units to purge."""
        return self.units.dynamic or bool(self.units.frontends)

    @property
    def endpoints(self) -> list[str]:
        return self.units.current_frontends()

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout, trust_env=False)
        return self._client

    async def purge(self, paths: Sequence[str]) -> list[str]:
        """Ban ``paths`` on every frontend unit; returns the endpoints that could not be purged (yet: they are
        retried in the background)."""
        return await self.ban([ban_expression(path) for path in paths])

    async def ban(self, expressions: Sequence[str]) -> list[str]:
        """Ban every cached URL matching one of ``expressions`` (regexes on the raw URL, path and query) on every
        frontend unit, like ``purge``."""
        endpoints = self.endpoints
        if not endpoints or not expressions:
            return []
        results = await asyncio.gather(*(self._ban_endpoint(e, expressions, self.retries) for e in endpoints))
        failed = [endpoint for endpoint, ok in zip(endpoints, results, strict=True) if not ok]
        for endpoint in failed:
            self._spawn(self._keep_trying(endpoint, expressions))
        if self.second_round_after > 0:
            self._spawn(self._second_round(expressions))
        return failed

    async def _ban_endpoint(self, endpoint: str, expressions: Sequence[str], retries: int) -> bool:
        for attempt in range(retries + 1):
            try:
                for expression in expressions:
                    response = await self.client.request(
                        "BAN", endpoint + "/", headers={"Host": self.public_host, "X-Ban-Url": expression}
                    )
                    if response.status_code != 200:
                        raise httpx.HTTPStatusError(
                            f"status {response.status_code}", request=response.request, response=response
                        )
                CACHE_PURGES.labels(endpoint).inc(len(expressions))
                return True
            except httpx.HTTPError as exc:
                CACHE_PURGE_FAILURES.labels(endpoint).inc()
                log.warning(
                    "cache purge failed",
                    extra={"endpoint": endpoint, "attempt": attempt + 1, "error": type(exc).__name__},
                )
                if attempt < retries:
                    await asyncio.sleep(RETRY_BACKOFF * 2**attempt)
        return False

    async def _keep_trying(self, endpoint: str, expressions: Sequence[str]) -> None:
        CACHE_PURGE_PENDING.inc()
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.give_up
            delay = RETRY_BACKOFF
            while loop.time() < deadline:
                await asyncio.sleep(delay)
                if endpoint not in self.endpoints:  # the unit left the relation (its cache went with it)
                    return
                if await self._ban_endpoint(endpoint, expressions, 0):
                    log.info("cache purge succeeded after retries", extra={"endpoint": endpoint})
                    return
                delay = min(delay * 2, BACKGROUND_BACKOFF_MAX)
            log.error("cache purge abandoned: unit unreachable", extra={"endpoint": endpoint, "bans": len(expressions)})
        finally:
            CACHE_PURGE_PENDING.dec()

    async def _second_round(self, expressions: Sequence[str]) -> None:
        await asyncio.sleep(self.second_round_after + 0.1)
        await asyncio.gather(*(self._ban_endpoint(e, expressions, self.retries) for e in self.endpoints))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def aclose(self) -> None:
        for task in list(self._background):
            task.cancel()
        if self._client is not None:
            await self._client.aclose()
