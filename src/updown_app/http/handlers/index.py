"""``GET /-/tuf/metadata/{name}``: the signed index, on the public host, through the same caches as downloads.

``N.root.json``, ``N.targets.json`` and ``N.snapshot.json`` never change once written (consistent snapshots) and
are cached for a year; ``timestamp.json`` is cached briefly and purged from the frontend units when it changes.
The prefix ``/-/`` cannot be a package name, so these never clash with downloads.
"""

from __future__ import annotations

import logging
import re

from starlette.requests import Request
from starlette.responses import Response

from updown_app.http.errors import ApiError
from updown_app.http.handlers.download import PUBLIC_CACHE, request_host
from updown_app.index.repository import SignedIndex
from updown_app.metadata.models import File, FileState, Visibility
from updown_app.services.context import AppContext, ctx

log = logging.getLogger("updown.index")
METADATA_PREFIX = "/-/tuf/metadata/"
TIMESTAMP_PATH = METADATA_PREFIX + "timestamp.json"
_VERSIONED = re.compile(r"^([1-9][0-9]{0,9})\.(root|targets|snapshot)\.json$")
_NOT_FOUND = ApiError(404, "not_found", "no such metadata")


async def metadata(request: Request) -> Response:
    context = ctx(request)
    index = context.index
    if index is None or request_host(request) != context.settings.public_host:
        raise _NOT_FOUND
    name = request.path_params["name"]
    if name == "timestamp.json":
        data = await index.metadata("timestamp", None)
        cache = f"public, max-age={context.settings.index.timestamp_max_age}"
    else:
        match = _VERSIONED.match(name)
        if match is None:
            raise _NOT_FOUND
        data = await index.metadata(match[2], int(match[1]))
        cache = PUBLIC_CACHE
    if data is None:
        raise _NOT_FOUND
    return Response(data, headers={"cache-control": cache, "content-type": "application/json"})


async def setup(context: AppContext, background: bool = True) -> SignedIndex | None:
    """Load the index when configured, bring it up to date, and keep it so: after every state change of a public
    file (before the change is answered) and, in the background, before anything expires."""
    if not SignedIndex.configured(context.settings.index):
        return None
    index = SignedIndex(context.settings.index, context.repository.sessions)
    context.index = index

    async def changed() -> None:
        await context.purger.purge([TIMESTAMP_PATH])

    async def hook(file: File, state: FileState) -> None:
        if file.visibility == Visibility.public.value and (await index.update()).changed:
            await changed()

    if (await index.update()).changed:
        await changed()
    context.state_hooks.append(hook)
    index.on_change = changed
    if background:
        index.start()
    return index
