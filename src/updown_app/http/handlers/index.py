"""``GET /-/tuf/metadata/{name}``: the signed index, on the public host, through the same caches as downloads.

``N.root.json``, ``N.targets.json`` and ``N.snapshot.json`` never change once written (consistent snapshots) and
are cached for a year; ``timestamp.json`` is cached briefly and purged from the frontend units when it changes.
The prefix ``/-/`` cannot be a package name, so these never clash with downloads.
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response

from updown_app.core.errors import NotFound
from updown_app.http.handlers.download import request_host
from updown_app.http.state import ctx
from updown_app.http.wire.headers import PUBLIC_CACHE

_VERSIONED = re.compile(r"^([1-9][0-9]{0,9})\.(root|targets|snapshot)\.json$")
_NOT_FOUND = NotFound("not_found", "no such metadata")


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
