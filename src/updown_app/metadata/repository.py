"""Queries on the metadata database; the only module that writes SQL for the API."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, exists, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from updown_app.metadata.channels import channels_of, set_channels
from updown_app.metadata.models import File, FileEvent, FileState, Nonce, Visibility


class DuplicateFileError(Exception):
    """A file with the same (package, revision, filename) exists."""


class DigestsPendingError(Exception):
    """A file still missing SHA-1/SHA-512 was to be published: nothing changed (complete the digests first)."""


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class StateChange:
    """What one ``set_state`` did: the file as it now is, whether its state flipped, its channels before/after."""

    file: File
    changed: bool
    channels_before: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()

    @property
    def moved(self) -> bool:
        return self.channels_before != self.channels


class PublishedCache:
    """Recent positive lookups of published files.

    A download needs one indexed lookup, but on SQLite every query costs several thread hand-offs (aiosqlite),
    which capped small-file throughput at ~1.1k req/s. Only hits are cached, so a newly published file is visible
    at once; a state change in this process drops its entry at once; other processes see it within ``ttl``.
    """

    def __init__(self, ttl: float, max_entries: int = 50_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[tuple[str, str, str], tuple[float, File]] = {}

    def get(self, key: tuple[str, str, str]) -> File | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            self._entries.pop(key, None)
            return None
        return entry[1]

    def put(self, key: tuple[str, str, str], file: File) -> None:
        if self.ttl <= 0:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.pop(next(iter(self._entries)))
        self._entries[key] = (time.monotonic() + self.ttl, file)

    def drop(self, key: tuple[str, str, str]) -> None:
        self._entries.pop(key, None)


class Repository:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], lookup_cache_ttl: float = 0.0) -> None:
        self.sessions = sessions
        self.cache = PublishedCache(lookup_cache_ttl)

    async def ping(self) -> None:
        async with self.sessions() as session:
            await session.execute(text("SELECT 1"))

    # Files ------------------------------------------------------------------------------------------------------

    async def get(self, file_id: str) -> File | None:
        async with self.sessions() as session:
            return await session.get(File, file_id)

    async def name_taken(self, package: str, revision: str, filename: str) -> bool:
        async with self.sessions() as session:
            query = select(
                exists().where(File.package == package, File.revision == revision, File.filename == filename)
            )
            return bool(await session.scalar(query))

    async def object_for_sha256(self, sha256: str) -> str | None:
        """The storage key already holding this content, if any file refers to it."""
        async with self.sessions() as session:
            return await session.scalar(select(File.object_key).where(File.sha256 == sha256).limit(1))

    async def object_in_use(self, object_key: str) -> bool:
        async with self.sessions() as session:
            return bool(await session.scalar(select(exists().where(File.object_key == object_key))))

    async def recorded_objects(self, object_keys: Sequence[str]) -> set[str]:
        """Which of these storage keys some file records (the sweeper asks a page at a time)."""
        if not object_keys:
            return set()
        async with self.sessions() as session:
            query = select(File.object_key).where(File.object_key.in_(list(object_keys))).distinct()
            return set((await session.scalars(query)).all())

    async def known_digests(self, sha256: str, size: int) -> tuple[str, str] | None:
        """SHA-1 and SHA-512 of this content from a record that has them (dedupe: content is hashed once)."""
        async with self.sessions() as session:
            query = select(File.sha1, File.sha512).where(
                File.sha256 == sha256, File.size == size, File.sha1.is_not(None), File.sha512.is_not(None)
            )
            row = (await session.execute(query.limit(1))).first()
        return None if row is None or row[0] is None or row[1] is None else (row[0], row[1])

    async def missing_digests(self) -> list[str]:
        """Ids of the files still missing SHA-1 or SHA-512, oldest first."""
        async with self.sessions() as session:
            query = select(File.id).where(File.sha1.is_(None) | File.sha512.is_(None)).order_by(File.created_at)
            return list((await session.scalars(query)).all())

    async def complete_digests(self, file_id: str, sha1: str, sha512: str) -> File | None:
        """Record the SHA-1 and SHA-512 computed from the stored object; None: no such file (removed meanwhile)."""
        async with self.sessions() as session, session.begin():
            file = await session.get(File, file_id, with_for_update=True)
            if file is None:
                return None
            file.sha1, file.sha512 = sha1, sha512
        return file

    async def add(self, file: File, key_id: str) -> File:
        async with self.sessions() as session:
            session.add(file)
            session.add(FileEvent(file_id=file.id, action="upload", key_id=key_id, at=file.created_at))
            try:
                await session.commit()
            except IntegrityError as exc:
                raise DuplicateFileError from exc
        return file

    async def set_state(
        self, file_id: str, state: FileState, key_id: str, channels: Sequence[str] | None = None
    ) -> StateChange | None:
        """Flip the state (idempotently) and, when ``channels`` is given, make them exactly the file's channels,
        in one transaction; records an event only when the state changed. None: unknown id.
        ``DigestsPendingError``: a file is never published without all four digests."""
        async with self.sessions() as session, session.begin():
            file = await session.get(File, file_id, with_for_update=True)
            if file is None:
                return None
            if state is FileState.published and (file.sha1 is None or file.sha512 is None):
                raise DigestsPendingError(file_id)
            before = await channels_of(session, file_id)
            after = before if channels is None else await set_channels(session, file_id, before, channels)
            changed = file.state != state
            if changed:
                now = utcnow()
                file.state = state
                if state is FileState.published:
                    file.published_at = now
                else:
                    file.unpublished_at = now
                event = FileEvent(file_id=file.id, action=state.value.removesuffix("ed"), key_id=key_id, at=now)
                session.add(event)
        if changed:
            self.cache.drop((file.package, file.revision, file.filename))
        return StateChange(file, changed, before, after)

    async def published(self, package: str, revision: str, filename: str) -> File | None:
        key = (package, revision, filename)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        file = await self._published(package, revision, filename)
        if file is not None:
            self.cache.put(key, file)
        return file

    async def published_public(self, package: str, revision: str, filename: str) -> File | None:
        """The published public file at a name (what the public host serves). No timing oracle: a cached entry
        answers only when it is a file to serve, so a missing, an unpublished and a private file all take the
        same path (a cache miss, then the same query, matching no row) and cost the same."""
        key = (package, revision, filename)
        cached = self.cache.get(key)
        if cached is not None and cached.visibility == Visibility.public:
            return cached
        file = await self._published(package, revision, filename, Visibility.public)
        if file is not None:
            self.cache.put(key, file)
        return file

    async def _published(
        self, package: str, revision: str, filename: str, visibility: Visibility | None = None
    ) -> File | None:
        async with self.sessions() as session:
            query = select(File).where(
                File.package == package,
                File.revision == revision,
                File.filename == filename,
                File.state == FileState.published.value,
            )
            if visibility is not None:
                query = query.where(File.visibility == visibility.value)
            return await session.scalar(query)

    async def events(self, file_id: str) -> Sequence[FileEvent]:
        async with self.sessions() as session:
            query = select(FileEvent).where(FileEvent.file_id == file_id).order_by(FileEvent.id)
            return (await session.scalars(query)).all()

    async def count_files(self) -> int:
        async with self.sessions() as session:
            return len((await session.scalars(select(File.id))).all())

    # Nonces -----------------------------------------------------------------------------------------------------

    async def consume_nonce(self, key_id: str, nonce: str, expires_at: datetime) -> bool:
        """Remember a nonce until it expires; False when it was already seen (a replay)."""
        async with self.sessions() as session:
            session.add(Nonce(key_id=key_id, nonce=nonce, expires_at=expires_at))
            try:
                await session.commit()
            except IntegrityError:
                return False
        return True

    async def purge_nonces(self, now: datetime | None = None) -> int:
        async with self.sessions() as session, session.begin():
            result = await session.execute(delete(Nonce).where(Nonce.expires_at < (now or utcnow())))
        return int(getattr(result, "rowcount", 0) or 0)
