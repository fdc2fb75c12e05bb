"""Queries on channels: which channels a file is in, and the newest published file of a package in a channel."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from updown_app.metadata.models import File, FileChannel, FileState, Visibility

# Files looked at per "latest" lookup before giving up on a pattern; a package's channel rarely holds more.
LATEST_SCAN_LIMIT = 5000


async def channels_of(session: AsyncSession, file_id: str) -> tuple[str, ...]:
    query = select(FileChannel.channel).where(FileChannel.file_id == file_id).order_by(FileChannel.channel)
    return tuple((await session.scalars(query)).all())


async def set_channels(
    session: AsyncSession, file_id: str, current: Sequence[str], channels: Sequence[str]
) -> tuple[str, ...]:
    """Make ``channels`` exactly the file's channels (``current`` being what it is in), in the caller's
    transaction; returns them sorted."""
    have, wanted = set(current), set(channels)
    gone = have - wanted
    if gone:
        await session.execute(delete(FileChannel).where(FileChannel.file_id == file_id, FileChannel.channel.in_(gone)))
    session.add_all(FileChannel(file_id=file_id, channel=c) for c in sorted(wanted - have))
    return tuple(sorted(wanted))


class Channels:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def of(self, file_id: str) -> list[str]:
        async with self.sessions() as session:
            return list(await channels_of(session, file_id))

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
