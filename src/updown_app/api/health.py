"""``/healthz`` (the process answers) and ``/readyz`` (database and storage usable)."""

from __future__ import annotations

import asyncio
import logging

from starlette.requests import Request
from starlette.responses import JSONResponse

from updown_app.context import ctx

log = logging.getLogger("updown.health")
CHECK_TIMEOUT = 5.0


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"}, headers={"cache-control": "no-store"})


async def readyz(request: Request) -> JSONResponse:
    context = ctx(request)
    checks: dict[str, str] = {}
    for name, probe in (("database", context.repository.ping), ("storage", context.storage.check)):
        try:
            await asyncio.wait_for(probe(), CHECK_TIMEOUT)
            checks[name] = "ok"
        except Exception as exc:  # readiness reports every failure, whatever its kind
            log.warning("readiness check failed", extra={"check": name, "error": type(exc).__name__})
            checks[name] = "timeout" if isinstance(exc, TimeoutError) else "failed"
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks},
        status_code=200 if ok else 503,
        headers={"cache-control": "no-store"},
    )
