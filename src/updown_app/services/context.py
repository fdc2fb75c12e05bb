"""Everything a request handler needs, built once at start-up and kept on ``app.state.ctx``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request

from updown_app.auth.private import Authorizer
from updown_app.auth.signed_requests import RequestVerifier
from updown_app.caches.purge import CachePurger
from updown_app.index.repository import SignedIndex
from updown_app.metadata.models import File, FileState
from updown_app.metadata.repository import Repository
from updown_app.settings import Settings
from updown_app.storage.base import Storage

if TYPE_CHECKING:
    from updown_app.upstream.pull_through import PullThrough


@dataclass
class AppContext:
    settings: Settings
    engine: AsyncEngine
    repository: Repository
    storage: Storage
    verifier: RequestVerifier
    authorizer: Authorizer
    # Bans URLs on every frontend cache unit (a no-op without caches.frontends).
    purger: CachePurger
    # Called after a publish/unpublish changed a file's state (cache purges, index updates).
    state_hooks: list[Callable[[File, FileState], Awaitable[None]]] = field(default_factory=list)
    # The signed (TUF) index, when index.root_dir and index.keys_file are configured.
    index: SignedIndex | None = None
    # Pull-through downloads from an upstream updown, when upstream.url and upstream.root_file are configured.
    pull_through: PullThrough | None = None


def ctx(request: Request) -> AppContext:
    context: AppContext = request.app.state.ctx
    return context
