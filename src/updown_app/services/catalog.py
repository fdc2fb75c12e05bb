"""The catalog of files: lookups (a published file by name, latest in a channel, a record and its history) and
the one way a file's state and channels change, in one transaction, followed by one kind of change event
(``StateChange``) handed to the subscribers the runtime registered (``services/propagation.py``).

Publishing a file whose SHA-1/SHA-512 are still pending completes them first (``services/digest_completion.py``):
a published file always has all four digests, and while the store cannot be read nothing is published."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from sqlalchemy import select

from updown_app.core.errors import Conflict, NotFound, Unavailable
from updown_app.metadata.channels import Channels
from updown_app.metadata.models import File, FileEvent, FileState
from updown_app.metadata.repository import DigestsPendingError, Repository, StateChange
from updown_app.services.digest_completion import DigestCompletion

log = logging.getLogger("updown.catalog")

Subscriber = Callable[[StateChange], Awaitable[None]]


class PropagationPending(Unavailable):
    """The change is committed; a subscriber (the signed index, a cache) could not follow yet."""


class Catalog:
    """``completion``: completes the digests of a file being published (None: such a publish is refused)."""

    def __init__(
        self,
        repository: Repository,
        subscribers: Sequence[Subscriber] = (),
        completion: DigestCompletion | None = None,
    ) -> None:
        self.repository = repository
        self.channels = Channels(repository.sessions)
        self.subscribers = tuple(subscribers)
        self.completion = completion

    async def get(self, file_id: str) -> File | None:
        return await self.repository.get(file_id)

    async def events(self, file_id: str) -> Sequence[FileEvent]:
        return await self.repository.events(file_id)

    async def channels_of(self, file_id: str) -> list[str]:
        return await self.channels.of(file_id)

    async def published(self, package: str, revision: str, filename: str) -> File | None:
        return await self.repository.published(package, revision, filename)

    async def published_public(self, package: str, revision: str, filename: str) -> File | None:
        """What the public host serves at a name; the same cost for every name it does not serve."""
        return await self.repository.published_public(package, revision, filename)

    async def latest(self, package: str, channel: str, pattern: str) -> File | None:
        return await self.channels.latest(package, channel, pattern)

    async def name_taken(self, package: str, revision: str, filename: str) -> bool:
        """Whether a file of this name exists here, whatever its state."""
        return await self.repository.name_taken(package, revision, filename)

    async def by_name(self, package: str, revision: str, filename: str) -> File | None:
        """The file of this name, whatever its state."""
        async with self.repository.sessions() as session:
            query = select(File).where(File.package == package, File.revision == revision, File.filename == filename)
            return await session.scalar(query)

    async def with_object(self, key: str) -> File | None:
        """A file whose bytes are the object ``key``."""
        async with self.repository.sessions() as session:
            return await session.scalar(select(File).where(File.object_key == key).limit(1))

    async def published_by(self, key_id: str, packages: Sequence[str] = ()) -> list[File]:
        """Published files whose record names ``key_id`` as their creator (optionally of ``packages`` only)."""
        async with self.repository.sessions() as session:
            query = select(File).where(File.created_by == key_id, File.state == FileState.published.value)
            if packages:
                query = query.where(File.package.in_(packages))
            return list((await session.scalars(query)).all())

    async def set_state(
        self, file_id: str, state: FileState, key_id: str, channels: Sequence[str] | None = None
    ) -> StateChange | None:
        """Flip the state and (when given) set exactly these channels in one transaction; when anything changed,
        every subscriber is told before this returns. None: unknown id. ``PropagationPending`` when a subscriber
        failed: the change stands (the index's background refresh rebuilds from the files table, latest
        redirects are short-lived), and every other subscriber still ran. Publishing completes pending digests
        first: ``StoreUnavailable`` (nothing changed) when the store cannot be read meanwhile."""
        if state is FileState.published and self.completion is not None:
            try:
                await self.completion.complete(file_id)
            except NotFound:
                return None
        try:
            change = await self.repository.set_state(file_id, state, key_id, channels)
        except DigestsPendingError:
            raise Conflict("digests_pending", "the file's SHA-1 and SHA-512 are not computed yet") from None
        if change is not None and (change.changed or change.moved):
            log.info(state.value, extra={"file_id": change.file.id, "key_id": key_id, "channels": channels})
            await self._emit(change)
        return change

    async def _emit(self, change: StateChange) -> None:
        failed = False
        for subscriber in self.subscribers:
            try:
                await subscriber(change)
            except Exception:
                failed = True
                log.exception("propagating a state change failed", extra={"file_id": change.file.id})
        if failed:
            raise PropagationPending(
                "propagation_pending",
                f"the file is {change.file.state}; the signed index and the caches catch up within the index "
                "refresh interval",
                retry_after=60,
            )
