"""``GET /{package}/{channel}/latest/{filename-glob}``: a short-lived redirect to the newest published file.

The answer is a ``302`` to the file's immutable download URL with a small ``public, max-age``, so the frontend
caches absorb the traffic; when what a package's latest URLs point to may have changed (a publish, unpublish or
channel move of one of its files) every cached latest URL of that package is banned before the change is answered.
Public host only: private files are not in channels' latest URLs.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from updown_app.core.errors import NotFound
from updown_app.core.names import CHANNEL_RE, PACKAGE_RE, download_path
from updown_app.http.handlers.download import request_host
from updown_app.http.state import ctx

_NOT_FOUND = NotFound("not_found", "no published file matches")


async def latest(request: Request) -> Response:
    context = ctx(request)
    params = request.path_params
    package, channel, pattern = params["package"], params["channel"], params["pattern"]
    if request_host(request) != context.settings.public_host:
        raise _NOT_FOUND
    if not PACKAGE_RE.match(package) or not CHANNEL_RE.match(channel) or not pattern or len(pattern) > 255:
        raise _NOT_FOUND
    file = await context.catalog.latest(package, channel, pattern)
    if file is None:
        raise _NOT_FOUND
    return Response(
        status_code=302,
        headers={
            "location": download_path(file),
            "cache-control": f"public, max-age={context.settings.latest_max_age}",
        },
    )
