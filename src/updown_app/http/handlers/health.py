"""``/healthz`` (the process answers) and ``/readyz`` (database and storage usable)."""

from __future__ import annotations

import asyncio
import logging
import time

from starlette.requests import Request
from starlette.responses import JSONResponse

from updown_app.http.state import ctx
from updown_app.metrics import READINESS_FAILURES, READINESS_OK
from updown_app.runtime import Runtime

log = logging.getLogger("updown.health")
CHECK_TIMEOUT = 5.0
READY_CACHE_TTL = 1.0  # seconds a readiness answer is reused


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"}, headers={"cache-control": "no-store"})


class Readiness:
    """The last readiness answer, reused for ``READY_CACHE_TTL``: every HAProxy and Varnish of the cache tier
    probes every app unit each few seconds, and each probe would otherwise cost a database query and a storage
    request. Concurrent probes share one check."""

    def __init__(self) -> None:
        self.checked_at = -READY_CACHE_TTL
        self.checks: dict[str, str] = {}
        self.lock = asyncio.Lock()

    async def get(self, context: Runtime) -> dict[str, str]:
        async with self.lock:
            if time.monotonic() - self.checked_at >= READY_CACHE_TTL:
                self.checks = await _check(context)
                self.checked_at = time.monotonic()
            return self.checks


async def _check(context: Runtime) -> dict[str, str]:
    checks: dict[str, str] = {}
    for name, probe in (("database", context.repository.ping), ("storage", context.storage.check)):
        try:
            await asyncio.wait_for(probe(), CHECK_TIMEOUT)
            checks[name] = "ok"
        except Exception as exc:  # readiness reports every failure, whatever its kind
            log.warning("readiness check failed", extra={"check": name, "error": type(exc).__name__})
            checks[name] = "timeout" if isinstance(exc, TimeoutError) else "failed"
            READINESS_FAILURES.labels(name).inc()
        READINESS_OK.labels(name).set(1 if checks[name] == "ok" else 0)
    return checks


async def readyz(request: Request) -> JSONResponse:
    readiness: Readiness = request.app.state.readiness  # one per app, made with its context at start-up
    checks = await readiness.get(ctx(request))
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks},
        status_code=200 if ok else 503,
        headers={"cache-control": "no-store"},
    )
