"""Queries on the metadata database; the only module that writes SQL for the API."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, exists, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from updown_app.metadata.models import File, FileEvent, FileState, Nonce


class DuplicateFileError(Exception):
    """A file with the same (package, revision, filename) exists."""


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class StateChange:
    file: File
    changed: bool


class Repository:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

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

    async def add(self, file: File, key_id: str) -> File:
        async with self.sessions() as session:
            session.add(file)
            session.add(FileEvent(file_id=file.id, action="upload", key_id=key_id, at=file.created_at))
            try:
                await session.commit()
            except IntegrityError as exc:
                raise DuplicateFileError from exc
        return file

    async def set_state(self, file_id: str, state: FileState, key_id: str) -> StateChange | None:
        """Flip the state (idempotently); records an event only when it changed. None: unknown id."""
        async with self.sessions() as session, session.begin():
            file = await session.get(File, file_id, with_for_update=True)
            if file is None:
                return None
            if file.state == state:
                return StateChange(file, changed=False)
            now = utcnow()
            file.state = state
            if state is FileState.published:
                file.published_at = now
            else:
                file.unpublished_at = now
            session.add(FileEvent(file_id=file.id, action=state.value.removesuffix("ed"), key_id=key_id, at=now))
        return StateChange(file, changed=True)

    async def published(self, package: str, revision: str, filename: str) -> File | None:
        async with self.sessions() as session:
            query = select(File).where(
                File.package == package,
                File.revision == revision,
                File.filename == filename,
                File.state == FileState.published.value,
            )
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
