"""Queries on resumable upload sessions. Offsets only move through conditional updates, so concurrent writers,
on any number of units, can't both win: a PATCH first takes the session's lease (``lease_token``), renews it while
it streams, and commits its parts and the new offset only if it still holds it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from updown_app.metadata.models import UploadPart, UploadSession
from updown_app.metadata.repository import utcnow


def _free(now: datetime) -> ColumnElement[bool]:
    return or_(UploadSession.lease_token.is_(None), UploadSession.lease_until < now)


class UploadSessions:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def create(self, session: UploadSession) -> None:
        async with self.sessions() as db, db.begin():
            db.add(session)

    async def get(self, session_id: str) -> UploadSession | None:
        async with self.sessions() as db:
            return await db.get(UploadSession, session_id)

    async def parts(self, session_id: str) -> Sequence[UploadPart]:
        async with self.sessions() as db:
            query = select(UploadPart).where(UploadPart.session_id == session_id).order_by(UploadPart.offset)
            return (await db.scalars(query)).all()

    async def acquire(self, session_id: str, offset: int, token: str, lease: float) -> bool:
        """Take the lease of an open session at ``offset``; False when the offset differs or someone holds it."""
        now = utcnow()
        async with self.sessions() as db, db.begin():
            result = await db.execute(
                update(UploadSession)
                .where(
                    UploadSession.id == session_id,
                    UploadSession.state == "open",
                    UploadSession.offset == offset,
                    UploadSession.expires_at > now,
                    _free(now),
                )
                .values(lease_token=token, lease_until=now + timedelta(seconds=lease))
            )
        return int(getattr(result, "rowcount", 0) or 0) == 1

    async def renew(self, session_id: str, token: str, lease: float) -> bool:
        async with self.sessions() as db, db.begin():
            result = await db.execute(
                update(UploadSession)
                .where(UploadSession.id == session_id, UploadSession.lease_token == token)
                .values(lease_until=utcnow() + timedelta(seconds=lease))
            )
        return int(getattr(result, "rowcount", 0) or 0) == 1

    async def release(self, session_id: str, token: str) -> None:
        async with self.sessions() as db, db.begin():
            await db.execute(
                update(UploadSession)
                .where(UploadSession.id == session_id, UploadSession.lease_token == token)
                .values(lease_token=None, lease_until=None)
            )

    async def commit(self, session_id: str, token: str, old: int, parts: Sequence[UploadPart]) -> bool:
        """Record ``parts`` and move the offset past them, only while holding the lease. Keeps the lease."""
        new = old + sum(p.size for p in parts)
        async with self.sessions() as db, db.begin():
            result = await db.execute(
                update(UploadSession)
                .where(UploadSession.id == session_id, UploadSession.lease_token == token, UploadSession.offset == old)
                .values(offset=new)
            )
            if int(getattr(result, "rowcount", 0) or 0) != 1:
                return False
            db.add_all(parts)
        return True

    async def finish(self, session_id: str, token: str, file_id: str) -> None:
        async with self.sessions() as db, db.begin():
            await db.execute(delete(UploadPart).where(UploadPart.session_id == session_id))
            await db.execute(
                update(UploadSession)
                .where(UploadSession.id == session_id, UploadSession.lease_token == token)
                .values(state="done", file_id=file_id, lease_token=None, lease_until=None)
            )

    async def remove(self, session_id: str) -> None:
        async with self.sessions() as db, db.begin():
            await db.execute(delete(UploadSession).where(UploadSession.id == session_id))

    async def claim_for_removal(self, session_id: str, token: str, lease: float, *, expired_only: bool) -> bool:
        """Take the lease to delete a session (termination, purge); never while a writer holds it."""
        now = utcnow()
        conditions: list[ColumnElement[bool]] = [UploadSession.id == session_id, _free(now)]
        if expired_only:
            conditions.append(UploadSession.expires_at <= now)
        async with self.sessions() as db, db.begin():
            result = await db.execute(
                update(UploadSession)
                .where(and_(*conditions))
                .values(lease_token=token, lease_until=now + timedelta(seconds=lease))
            )
        return int(getattr(result, "rowcount", 0) or 0) == 1

    async def expired(self, limit: int = 1000) -> Sequence[UploadSession]:
        now = utcnow()
        async with self.sessions() as db:
            query = select(UploadSession).where(UploadSession.expires_at <= now, _free(now)).limit(limit)
            return (await db.scalars(query)).all()

    async def count_open(self) -> int:
        async with self.sessions() as db:
            query = select(func.count()).select_from(UploadSession).where(UploadSession.state == "open")
            return int(await db.scalar(query) or 0)
