"""``GET /{package}/{channel}/latest/{filename-glob}``: a short-lived redirect to the newest published file.

The answer is a ``302`` to the file's immutable download URL with a small ``public, max-age``, so the frontend
caches absorb the traffic; when what a package's latest URLs point to may have changed (a publish, unpublish or
channel move of one of its files) every cached latest URL of that package is banned before the change is answered.
Public host only: private files are not in channels' latest URLs.
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response

from updown_app.http.errors import ApiError
from updown_app.http.handlers.download import request_host
from updown_app.http.handlers.files import CHANNEL_RE, download_path
from updown_app.http.handlers.upload import PACKAGE_RE
from updown_app.metadata.channels import Channels, channels_moved
from updown_app.metadata.models import File, FileState, Visibility
from updown_app.services.context import AppContext, ctx

_NOT_FOUND = ApiError(404, "not_found", "no published file matches")


async def latest(request: Request) -> Response:
    context = ctx(request)
    params = request.path_params
    package, channel, pattern = params["package"], params["channel"], params["pattern"]
    if request_host(request) != context.settings.public_host:
        raise _NOT_FOUND
    if not PACKAGE_RE.match(package) or not CHANNEL_RE.match(channel) or not pattern or len(pattern) > 255:
        raise _NOT_FOUND
    file = await Channels(context.repository.sessions).latest(package, channel, pattern)
    if file is None:
        raise _NOT_FOUND
    return Response(
        status_code=302,
        headers={
            "location": download_path(file),
            "cache-control": f"public, max-age={context.settings.latest_max_age}",
        },
    )


def latest_ban_regex(package: str) -> str:
    """Every latest URL of a package, any channel and glob, any query string (matched against the raw URL)."""
    # '+' is the only character of a package name a client may percent-encode.
    return "^/" + re.escape(package).replace(r"\+", "(?:\\+|%2[Bb])") + "/[^/?]+/latest/"


def install(context: AppContext) -> None:
    """Ban a package's latest URLs whenever one of its public files in a channel changes state or channels."""
    if not context.purger.enabled:
        return

    channels = Channels(context.repository.sessions)

    async def hook(file: File, state: FileState) -> None:
        # A file in no channel is behind no latest URL, unless it just left its channels.
        if file.visibility == Visibility.public.value and (channels_moved.get() or await channels.of(file.id)):
            await context.purger.ban([latest_ban_regex(file.package)])

    context.state_hooks.append(hook)
