"""The ASGI application: routes, middleware and the start-up that builds the ``AppContext``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from updown_app.api import download, files, health, index, latest, links, resumable, upload
from updown_app.api.files import download_path
from updown_app.auth.private import Authorizer, DenyAll
from updown_app.auth.signed_requests import RequestVerifier
from updown_app.auth.store_authorizer import build_authorizer
from updown_app.cache_purge import CachePurger
from updown_app.cache_units import CacheUnits
from updown_app.context import AppContext
from updown_app.dot_segments import DotSegmentsMiddleware
from updown_app.errors import ApiError, api_error_handler, error_response
from updown_app.https_only import HttpsOnlyMiddleware
from updown_app.metadata.db import create_engine, migrate, session_factory
from updown_app.metadata.models import File, FileState
from updown_app.metadata.repository import Repository
from updown_app.metrics import MetricsMiddleware, metrics_endpoint
from updown_app.pull_through import PullThrough
from updown_app.settings import Settings
from updown_app.storage import create_storage
from updown_app.unavailable import DependencyUnavailable

log = logging.getLogger("updown.app")
NONCE_PURGE_INTERVAL = 60.0
DEPENDENCY_RETRY_AFTER = "5"  # seconds; the frontends' own 503 (charms/cache) says the same


async def build_context(settings: Settings, authorizer: Authorizer | None = None) -> AppContext:
    engine = create_engine(settings.resolved_database_url)
    if settings.auto_migrate:
        await migrate(engine)
    repository = Repository(session_factory(engine), settings.resolved_lookup_cache_ttl)
    keys = settings.signing_keys()
    if not keys:
        log.warning("no HMAC keys configured: every signed request will be refused")
    # One view of the cache units (one look at the units file a second) for the read cache and the purger.
    units = CacheUnits.from_settings(settings.caches)
    context = AppContext(
        settings=settings,
        engine=engine,
        repository=repository,
        storage=create_storage(settings, units),
        verifier=RequestVerifier(keys, repository, settings.max_clock_skew),
        authorizer=authorizer or build_authorizer(settings) or DenyAll(),
        purger=CachePurger(settings.caches, units, settings.public_host, settings.resolved_lookup_cache_ttl),
    )
    if context.purger.enabled:
        context.state_hooks.append(_purge_unpublished(context.purger))
    latest.install(context)
    await index.setup(context)
    if PullThrough.configured(settings):
        context.pull_through = PullThrough(context, settings)
    return context


def _purge_unpublished(purger: CachePurger) -> Callable[[File, FileState], Awaitable[None]]:
    async def hook(file: File, state: FileState) -> None:
        # Before the unpublish is answered: the next request through any frontend unit must not find it cached.
        if state is FileState.unpublished:
            await purger.purge([download_path(file)])

    return hook


async def close_context(context: AppContext) -> None:
    """Release what build_context opened: clients, background work, connections."""
    aclose = getattr(context.authorizer, "aclose", None)
    if aclose is not None:
        await aclose()
    if context.index is not None:
        await context.index.aclose()
    if context.pull_through is not None:
        await context.pull_through.aclose()
    await context.purger.aclose()
    await context.storage.close()
    await context.engine.dispose()


async def _purge_nonces(context: AppContext) -> None:
    while True:
        await asyncio.sleep(NONCE_PURGE_INTERVAL)
        try:
            await context.repository.purge_nonces()
        except Exception:  # keep purging after a transient database error
            log.exception("purging expired nonces failed")


async def _purge_uploads(context: AppContext) -> None:
    from updown_app.metadata.upload_sessions import UploadSessions
    from updown_app.upload_purge import purge_expired

    interval = context.settings.uploads.purge_interval
    sessions = UploadSessions(context.repository.sessions)
    while True:
        try:
            await purge_expired(context.storage, sessions, context.settings.uploads.lease)
        except Exception:  # keep purging after a transient database or storage error
            log.exception("purging expired upload sessions failed")
        await asyncio.sleep(interval)


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    return error_response(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail))


async def _dependency_unavailable(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DependencyUnavailable)
    # The path only: a query string may hold a credential.
    log.warning(
        "dependency unavailable",
        extra={"dependency": exc.dependency, "path": request.url.path, "error": type(exc.__cause__ or exc).__name__},
    )
    return error_response(
        503,
        f"{exc.dependency}_unavailable",
        f"the {exc.dependency} is unavailable; retry later",
        {"retry-after": DEPENDENCY_RETRY_AFTER},
    )


async def _unhandled(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal_error", "internal server error")


def create_app(settings: Settings | None = None, authorizer: Authorizer | None = None) -> Starlette:
    settings = settings or Settings.load()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        context = await build_context(settings, authorizer)
        app.state.ctx = context
        app.state.readiness = health.Readiness()
        purger = asyncio.create_task(_purge_nonces(context))
        upload_purger = asyncio.create_task(_purge_uploads(context)) if settings.uploads.purge_interval > 0 else None
        try:
            yield
        finally:
            purger.cancel()
            if upload_purger is not None:
                upload_purger.cancel()
            await close_context(context)

    routes = [
        Route("/healthz", health.healthz, methods=["GET", "HEAD"]),
        Route("/readyz", health.readyz, methods=["GET", "HEAD"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/v1/files", upload.upload, methods=["POST"]),
        Route("/v1/uploads", resumable.create, methods=["POST"]),
        Route("/v1/uploads", resumable.options, methods=["OPTIONS"]),
        Route("/v1/uploads/{session_id}/{expires}/{key_id}/{sig}", resumable.head, methods=["HEAD"]),
        Route("/v1/uploads/{session_id}/{expires}/{key_id}/{sig}", resumable.patch, methods=["PATCH"]),
        Route("/v1/uploads/{session_id}/{expires}/{key_id}/{sig}", resumable.terminate, methods=["DELETE"]),
        Route("/v1/uploads/{session_id}/{expires}/{key_id}/{sig}", resumable.options, methods=["OPTIONS"]),
        Route("/v1/files/{file_id}", files.info, methods=["GET"]),
        Route("/v1/files/{file_id}/publish", files.publish, methods=["POST"]),
        Route("/v1/files/{file_id}/unpublish", files.unpublish, methods=["POST"]),
        Route("/v1/files/{file_id}/links", links.mint, methods=["POST"]),
        Route("/-/link/{token}/{package}/{revision}/{filename}", links.download, methods=["GET", "HEAD"]),
        Route("/-/tuf/metadata/{name}", index.metadata, methods=["GET", "HEAD"]),
        Route("/{package}/{channel}/latest/{pattern}", latest.latest, methods=["GET", "HEAD"]),
        Route("/{package}/{revision}/{filename}", download.download, methods=["GET", "HEAD"]),
    ]
    middleware = []
    if settings.trusted_proxies:
        middleware.append(Middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies))
    middleware += [
        Middleware(MetricsMiddleware, access_log=settings.access_log),
        Middleware(HttpsOnlyMiddleware, redirect_port=settings.redirect_port, hsts=settings.tls),
        Middleware(DotSegmentsMiddleware),
    ]
    return Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={
            ApiError: api_error_handler,
            DependencyUnavailable: _dependency_unavailable,
            HTTPException: _http_exception,
            Exception: _unhandled,
        },
    )
