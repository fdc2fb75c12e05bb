"""What follows a file's change, registered in one place: the subscribers of the catalog's change events.

In order: the unpublished file's URL is banned on every frontend cache unit, then the package's "latest" URLs
when the file is or was in a channel, then the signed index is updated (and its timestamp URL purged when it
changed). All before the change is answered; the catalog runs each and reports any failure once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from updown_app.caches.purge import CachePurger, latest_ban_regex
from updown_app.core.names import download_path
from updown_app.index.layout import TIMESTAMP_PATH
from updown_app.metadata.models import FileState, Visibility
from updown_app.metadata.repository import StateChange
from updown_app.services.catalog import Subscriber

if TYPE_CHECKING:
    from updown_app.index.repository import SignedIndex


def subscribers(purger: CachePurger, index: SignedIndex | None) -> tuple[Subscriber, ...]:
    async def purge_unpublished(change: StateChange) -> None:
        # The next request through any frontend unit must not find it cached.
        if change.file.state == FileState.unpublished.value:
            await purger.purge([download_path(change.file)])

    async def ban_latest(change: StateChange) -> None:
        # A file in no channel is behind no latest URL, unless it just left its channels.
        if change.file.visibility == Visibility.public.value and (change.channels or change.channels_before):
            await purger.ban([latest_ban_regex(change.file.package)])

    async def update_index(change: StateChange) -> None:
        if index is not None and change.file.visibility == Visibility.public.value:
            if (await index.update()).changed:
                await purger.purge([TIMESTAMP_PATH])

    if not purger.enabled:
        return (update_index,)
    return purge_unpublished, ban_latest, update_index
