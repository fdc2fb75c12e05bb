"""The services, built once at start-up, frozen, each given what it uses: shared by ``updown serve`` (the HTTP
app keeps one on ``app.state.runtime``), the CLI commands and the tests. Change subscribers are registered here
(``services/propagation.py``), in one place."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine

from updown_app.auth.links import LinkSigner
from updown_app.auth.private import Authorizer, DenyAll
from updown_app.auth.signed_requests import RequestVerifier
from updown_app.auth.store_authorizer import build_authorizer
from updown_app.caches.purge import CachePurger
from updown_app.caches.units import CacheUnits
from updown_app.index import layout
from updown_app.index.layout import TIMESTAMP_PATH
from updown_app.metadata.db import create_engine, migrate, session_factory
from updown_app.metadata.repository import Repository
from updown_app.metadata.upload_sessions import UploadSessions
from updown_app.services.catalog import Catalog
from updown_app.services.digest_completion import DigestCompletion
from updown_app.services.ingest import Ingest
from updown_app.services.propagation import subscribers
from updown_app.services.sweeper import Sweeper
from updown_app.services.uploads import ResumableUploads
from updown_app.settings import Settings
from updown_app.storage import create_storage
from updown_app.storage.base import Storage
from updown_app.upstream.importer import Importer
from updown_app.upstream.pull_through import PullThrough

if TYPE_CHECKING:
    from updown_app.index.repository import SignedIndex

log = logging.getLogger("updown.runtime")


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    engine: AsyncEngine
    repository: Repository
    storage: Storage
    verifier: RequestVerifier
    authorizer: Authorizer
    purger: CachePurger  # bans URLs on every frontend cache unit (a no-op without caches.frontends)
    catalog: Catalog
    completion: DigestCompletion  # SHA-1/SHA-512 of uploads, off the request path, before any publish
    ingest: Ingest
    uploads: ResumableUploads
    sweeper: Sweeper  # removes objects no file records and partial local writes (services/sweeper.py)
    importer: Importer
    index: SignedIndex | None  # when index.root_dir and index.keys_file are configured
    pull_through: PullThrough | None  # when upstream.url and upstream.root_file are configured
    link_signer: LinkSigner | None  # when private.links.keys are configured


async def build_runtime(settings: Settings, authorizer: Authorizer | None = None, *, serving: bool = True) -> Runtime:
    """``serving``: the service's own runtime (index re-signed in the background, pull-through, the store's
    authorizer); a CLI command builds the same services without them."""
    engine = create_engine(settings.resolved_database_url)
    if settings.auto_migrate:
        await migrate(engine)
    repository = Repository(session_factory(engine), settings.resolved_lookup_cache_ttl)
    keys = settings.signing_keys()
    if serving and not keys:
        log.warning("no HMAC keys configured: every signed request will be refused")
    # One view of the cache units (one look at the units file a second) for the read cache and the purger.
    units = CacheUnits.from_settings(settings.caches)
    storage = create_storage(settings, units)
    purger = CachePurger(settings.caches, units, settings.public_host, settings.resolved_lookup_cache_ttl)

    async def index_changed() -> None:
        await purger.purge([TIMESTAMP_PATH])

    index = None
    if layout.configured(settings.index):
        from updown_app.index.repository import SignedIndex  # python-tuf and cryptography: only with an index

        index = SignedIndex(settings.index, repository.sessions, on_change=index_changed)
        if (await index.update()).changed:
            await index_changed()
        if serving:
            index.start()
    # The read-back of an unpublished upload goes to the store itself: the backend cache units keep what is served.
    completion = DigestCompletion(repository, storage.uncached)
    catalog = Catalog(repository, subscribers(purger, index), completion)
    ingest = Ingest(repository, storage, completion)
    importer = Importer(catalog, ingest, settings.chunk_size)
    return Runtime(
        settings=settings,
        engine=engine,
        repository=repository,
        storage=storage,
        verifier=RequestVerifier(keys, repository, settings.max_clock_skew),
        authorizer=authorizer or (build_authorizer(settings) if serving else None) or DenyAll(),
        purger=purger,
        catalog=catalog,
        completion=completion,
        ingest=ingest,
        uploads=ResumableUploads(storage, UploadSessions(repository.sessions), ingest, settings.chunk_size),
        sweeper=Sweeper(storage, repository, settings.sweep.grace),
        importer=importer,
        index=index,
        pull_through=PullThrough(catalog, importer, settings) if serving and PullThrough.configured(settings) else None,
        link_signer=LinkSigner.from_settings(settings.private.links),
    )


async def close_runtime(runtime: Runtime) -> None:
    """Release what build_runtime opened: clients, background work, connections."""
    await runtime.completion.aclose()
    aclose = getattr(runtime.authorizer, "aclose", None)
    if aclose is not None:
        await aclose()
    if runtime.index is not None:
        await runtime.index.aclose()
    if runtime.pull_through is not None:
        await runtime.pull_through.aclose()
    await runtime.purger.aclose()
    await runtime.storage.close()
    await runtime.engine.dispose()
