"""Queries on channels: which channels a file is in, and the newest published file of a package in a channel."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from contextvars import ContextVar

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from updown_app.metadata.models import File, FileChannel, FileState, Visibility

# Files looked at per "latest" lookup before giving up on a pattern; a package's channel rarely holds more.
LATEST_SCAN_LIMIT = 5000
# Whether the last Channels.set of this request changed a file's channels: the state hooks that run next (cache
# bans of "latest" URLs) must act on a file taken out of its last channel too, which they can no longer see.
channels_moved: ContextVar[bool] = ContextVar("channels_moved", default=False)


class Channels:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def of(self, file_id: str) -> list[str]:
        async with self.sessions() as session:
            query = select(FileChannel.channel).where(FileChannel.file_id == file_id).order_by(FileChannel.channel)
            return list((await session.scalars(query)).all())

    async def set(self, file_id: str, channels: Sequence[str]) -> bool:
        """Make ``channels`` exactly the file's channels; True when that changed anything."""
        async with self.sessions() as session, session.begin():
            query = select(FileChannel.channel).where(FileChannel.file_id == file_id)
            current = set((await session.scalars(query)).all())
            wanted = set(channels)
            channels_moved.set(current != wanted)
            if current == wanted:
                return False
            gone = current - wanted
            if gone:
                await session.execute(
                    delete(FileChannel).where(FileChannel.file_id == file_id, FileChannel.channel.in_(gone))
                )
            session.add_all(FileChannel(file_id=file_id, channel=c) for c in sorted(wanted - current))
        return True

    async def latest(self, package: str, channel: str, pattern: str) -> File | None:
        """The most recently published public file of ``package`` in ``channel`` whose filename matches the glob
        ``pattern`` (an exact filename matches itself)."""
        async with self.sessions() as session:
            query = (
                select(File)
                .join(FileChannel, FileChannel.file_id == File.id)
                .where(
                    File.package == package,
                    FileChannel.channel == channel,
                    File.state == FileState.published.value,
                    File.visibility == Visibility.public.value,
                )
                .order_by(File.published_at.desc(), File.created_at.desc(), File.id)
                .limit(LATEST_SCAN_LIMIT)
            )
            for file in (await session.scalars(query)).all():
                if fnmatch.fnmatchcase(file.filename, pattern):
                    return file
        return None
