"""Resumable upload sessions (tus), the storage side: the running digests of the sessions this process writes,
discarding a session's parts, and finishing an upload through the one ingest path.

Hash state: a process keeps the running digests of the sessions it is writing (``HashStates``) while it stores
each part, so when the same process received every chunk, nothing is read back; when chunks went to several
units (hashlib state can't be exported to the database), the unit that receives the last byte reads the parts
back once. Those digests are what verification needs (size, MD5, SHA-256); SHA-1 and SHA-512 are completed from
the assembled object (``services/digest_completion.py``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence

from updown_app import metrics
from updown_app.core.digests import Declared, DigestMismatchError, Digests, MultiHasher, check, verified_stream
from updown_app.core.errors import Conflict
from updown_app.metadata.models import UploadSession, Visibility
from updown_app.metadata.upload_sessions import UploadSessions
from updown_app.services.ingest import Ingest
from updown_app.services.upload_fields import UploadFields
from updown_app.storage.base import PartInfo, Storage

log = logging.getLogger("updown.resumable")


class HashStates:
    """Running digests of the sessions this process is writing: session id -> (offset covered, hasher)."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._states: dict[str, tuple[int, MultiHasher]] = {}

    def take(self, session_id: str, offset: int) -> MultiHasher | None:
        """The hasher covering exactly ``offset`` bytes, a new one at offset 0, else None (removed: the caller
        puts it back only after its bytes were committed)."""
        state = self._states.pop(session_id, None)
        if state is not None and state[0] == offset:
            return state[1]
        return MultiHasher() if offset == 0 else None

    def put(self, session_id: str, hasher: MultiHasher) -> None:
        if len(self._states) >= self.max_entries:
            self._states.pop(next(iter(self._states)))
        self._states[session_id] = (hasher.size, hasher)

    def drop(self, session_id: str) -> None:
        self._states.pop(session_id, None)


def part_prefix(session_id: str) -> str:
    return f"uploads/{session_id}/"


async def discard(storage: Storage, sessions: UploadSessions, session_id: str) -> int:
    """Delete every part a session left in storage (recorded or not), then the session; returns bytes removed."""
    removed = 0
    async for part in storage.list_parts(part_prefix(session_id)):
        if await storage.delete_part(part.key):
            removed += part.size
    await sessions.remove(session_id)
    return removed


async def _read_parts(storage: Storage, parts: Sequence[PartInfo]) -> AsyncIterator[bytes]:
    for part in parts:
        async for chunk in storage.get_part(part.key):
            yield chunk


class PartsContent:
    """An upload's stored parts as ingest content. ``running``: this unit's digests of every byte, when it
    received them all (then nothing is read back where the store assembles in place); else the parts are read
    back once, verifying. ``owned``: the parts became the object's own (Swift SLO segments)."""

    def __init__(
        self, storage: Storage, parts: Sequence[PartInfo], declared: Declared, running: MultiHasher | None, chunk: int
    ) -> None:
        self.storage, self.parts, self.declared = storage, parts, declared
        self.owned = False
        self.body: AsyncIterator[bytes]
        if running is not None and running.size == declared.size:
            check(running.digests(), declared)
            self.hasher, self.verified = running, True
            self.body = _read_parts(storage, parts)  # read only by backends that copy the parts
        else:
            self.hasher, self.verified = MultiHasher(), False
            self.body = verified_stream(_read_parts(storage, parts), declared, self.hasher, chunk)

    async def drain(self) -> Digests:
        if not self.verified:
            async for _ in self.body:  # one verifying read of everything
                pass
        return self.hasher.digests()

    async def put(self, storage: Storage, key: str) -> Digests:
        if not self.verified and storage.assembles_in_place(self.parts):
            await self.drain()
        self.owned = await storage.assemble(key, self.parts, self.body, size=self.declared.size, md5=self.declared.md5)
        return self.hasher.digests()


class ResumableUploads:
    def __init__(self, storage: Storage, sessions: UploadSessions, ingest: Ingest, chunk_size: int) -> None:
        self.storage = storage
        self.sessions = sessions
        self.ingest = ingest
        self.chunk_size = chunk_size
        self.hash_states = HashStates()

    async def discard(self, session_id: str) -> int:
        return await discard(self.storage, self.sessions, session_id)

    async def finish(self, session: UploadSession, token: str, running: MultiHasher | None) -> str:
        """Verify the whole upload against the signed values and make it a file through the ingest; on a
        mismatch or a taken name, discard the session and every part. Returns the new file's id."""
        recorded = await self.sessions.parts(session.id)
        parts = [PartInfo(p.key, p.size, p.md5) for p in recorded]
        declared = Declared(size=session.size, md5=session.md5, sha256=session.sha256)
        fields = UploadFields(
            session.package, session.revision, session.filename, Visibility(session.visibility), declared
        )
        try:
            content = PartsContent(self.storage, parts, declared, running, self.chunk_size)
            record = await self.ingest.ingest(fields, content, session.key_id)
        except DigestMismatchError as exc:
            await self.discard(session.id)
            metrics.UPLOAD_FAILURES.labels(reason=f"{exc.field}_mismatch").inc()
            raise
        except Conflict:
            await self.discard(session.id)
            raise
        # Parts not assembled into the object (copied, deduplicated, or left by broken requests) go now.
        keep = {p.key for p in parts} if content.owned else set()
        async for part in self.storage.list_parts(part_prefix(session.id)):
            if part.key not in keep:
                with contextlib.suppress(Exception):
                    await self.storage.delete_part(part.key)
        await self.sessions.finish(session.id, token, record.id)
        metrics.UPLOADED_BYTES.inc(record.size)
        log.info("resumable upload complete", extra={"file_id": record.id, "session": session.id, "size": record.size})
        return record.id
