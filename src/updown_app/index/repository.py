"""The TUF repository the service maintains with python-tuf's Metadata API.

One top-level targets role lists every published public file: its path is the download path without the leading
``/`` (``package/revision/filename``), with length, SHA-256 and SHA-512 (known from the upload, so no byte is read)
and custom fields package, revision, channels and published time. Snapshot and timestamp follow. Consistent
snapshots: every metadata file but ``timestamp.json`` is ``N.<role>.json`` and never changes once written.

Signed metadata lives in the database (``index_metadata``), so every process and unit serves the same files. An
update rebuilds targets from the files table (the source of truth) and writes new versions only for what changed,
or what is past half its validity, or what the newest root no longer trusts the signature of (key rotation). Rows
are keyed by (role, version): two processes racing for the same version cannot both win; the loser retries on the
winner's state.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from securesystemslib.signer import Signer
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Signed,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from updown_app.index.keys import load_signers, root_versions, signers_for
from updown_app.metadata.models import File, FileChannel, FileState, IndexMetadata, Visibility
from updown_app.metrics import INDEX_VERSIONS
from updown_app.settings import IndexSettings

log = logging.getLogger("updown.index")
TIMESTAMPS_KEPT = 10  # older timestamps are never served; a few are kept for the record
_SERIALIZER = JSONSerializer(compact=True)


def target_path(file: File) -> str:
    return f"{file.package}/{file.revision}/{file.filename}"


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class UpdateResult:
    targets: int
    snapshot: int
    timestamp: int
    changed: bool


class SignedIndex:
    def __init__(
        self,
        settings: IndexSettings,
        sessions: async_sessionmaker[AsyncSession],
        on_change: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        assert settings.root_dir is not None and settings.keys_file is not None
        self.settings = settings
        self.sessions = sessions
        self.roots = dict(root_versions(settings.root_dir))
        self.root_md = Metadata[Root].from_bytes(self.roots[max(self.roots)])
        self.root = self.root_md.signed
        signers = load_signers(settings.keys_file)
        # Fail at start-up, not at the first publish, when the keys do not match the root.
        self.signers: dict[str, list[Signer]] = {
            r: signers_for(self.root, r, signers) for r in ("targets", "snapshot", "timestamp")
        }
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        # Run after the background refresh wrote new metadata (the cache purge of timestamp.json).
        self.on_change = on_change  # after a background re-signing changed the timestamp

    # Reading ---------------------------------------------------------------------------------------------------

    async def metadata(self, role: str, version: int | None) -> bytes | None:
        """Signed bytes of a role's version, or of its newest version when ``version`` is None."""
        if role == Root.type:
            if version is None:
                return self.roots[max(self.roots)]
            return self.roots.get(version)
        async with self.sessions() as session:
            query = select(IndexMetadata.data).where(IndexMetadata.role == role)
            if version is None:
                query = query.order_by(IndexMetadata.version.desc()).limit(1)
            else:
                query = query.where(IndexMetadata.version == version)
            return await session.scalar(query)

    async def _current(self, session: AsyncSession, role: str) -> tuple[Metadata[Any] | None, bytes]:
        """The newest version of a role, parsed, and its signed bytes (what the next role's MetaFile hashes)."""
        query = select(IndexMetadata.data).where(IndexMetadata.role == role).order_by(IndexMetadata.version.desc())
        data = await session.scalar(query.limit(1))
        return (None, b"") if data is None else (Metadata.from_bytes(data), data)

    # Writing ---------------------------------------------------------------------------------------------------

    async def _targets(self, session: AsyncSession) -> dict[str, TargetFile]:
        public = (File.state == FileState.published.value, File.visibility == Visibility.public.value)
        files = list((await session.scalars(select(File).where(*public))).all())
        channels: dict[str, list[str]] = {}
        in_channels = select(FileChannel.file_id, FileChannel.channel).join(File, File.id == FileChannel.file_id)
        for file_id, channel in (await session.execute(in_channels.where(*public))).all():
            channels.setdefault(file_id, []).append(channel)
        result: dict[str, TargetFile] = {}
        for f in files:
            path = target_path(f)
            custom = {
                "package": f.package,
                "revision": f.revision,
                "channels": sorted(channels.get(f.id, [])),
                "published": _utc(f.published_at or f.created_at).isoformat(),
            }
            # A published file has its SHA-512 (publishing completes it); the index never signs a missing one.
            hashes = {"sha256": f.sha256} if f.sha512 is None else {"sha256": f.sha256, "sha512": f.sha512}
            result[path] = TargetFile(f.size, hashes, path, unrecognized_fields={"custom": custom})
        return result

    def _stale(self, md: Metadata[Any] | None, role: str, lifetime: int, now: datetime) -> bool:
        """No metadata yet, past half its validity, or not signed by what the newest root trusts for the role."""
        if md is None:
            return True
        if md.signed.expires - now < timedelta(seconds=lifetime / 2):
            return True
        try:
            self.root_md.verify_delegate(role, md)
        except Exception:
            return True
        return False

    def _sign(self, signed: Signed) -> tuple[Metadata[Any], bytes]:
        md: Metadata[Any] = Metadata(signed)
        for i, signer in enumerate(self.signers[signed.type]):
            md.sign(signer, append=i > 0)
        return md, md.to_bytes(_SERIALIZER)

    async def update(self) -> UpdateResult:
        """Bring the metadata up to date with the published files; idempotent."""
        async with self._lock:
            for attempt in range(8):
                try:
                    return await self._update_once()
                except IntegrityError:
                    # Another process wrote this version first: rebuild on its state.
                    await asyncio.sleep(0.05 * (attempt + 1))
            return await self._update_once()

    def _next(
        self, role: type[Signed], current: Metadata[Any] | None, lifetime: int, now: datetime, **fields: Any
    ) -> tuple[Metadata[Any], bytes, IndexMetadata]:
        """The next version of a role, signed, and its row."""
        version = 1 if current is None else current.signed.version + 1
        expires = now + timedelta(seconds=lifetime)
        md, data = self._sign(role(version=version, expires=expires, **fields))
        row = IndexMetadata(role=role.type, version=version, data=data, expires_at=expires, created_at=now)
        return md, data, row

    async def _update_once(self) -> UpdateResult:
        s = self.settings
        now = datetime.now(UTC).replace(microsecond=0)
        async with self.sessions() as session, session.begin():
            targets_md, targets_data = await self._current(session, Targets.type)
            snapshot_md, snapshot_data = await self._current(session, Snapshot.type)
            timestamp_md, _ = await self._current(session, Timestamp.type)
            wanted = await self._targets(session)
            rows: list[IndexMetadata] = []
            # Each role gets a new version when what it describes got one, or when it is stale itself.
            if (
                targets_md is None
                or targets_md.signed.targets != wanted
                or self._stale(targets_md, Targets.type, s.targets_expiry, now)
            ):
                targets_md, targets_data, row = self._next(Targets, targets_md, s.targets_expiry, now, targets=wanted)
                rows.append(row)
            if rows or snapshot_md is None or self._stale(snapshot_md, Snapshot.type, s.snapshot_expiry, now):
                meta = {"targets.json": _meta_file(targets_md, targets_data)}
                snapshot_md, snapshot_data, row = self._next(Snapshot, snapshot_md, s.snapshot_expiry, now, meta=meta)
                rows.append(row)
            if rows or timestamp_md is None or self._stale(timestamp_md, Timestamp.type, s.timestamp_expiry, now):
                snapshot_meta = _meta_file(snapshot_md, snapshot_data)
                timestamp_md, _, row = self._next(
                    Timestamp, timestamp_md, s.timestamp_expiry, now, snapshot_meta=snapshot_meta
                )
                rows.append(row)
                await session.execute(
                    delete(IndexMetadata).where(
                        IndexMetadata.role == Timestamp.type, IndexMetadata.version <= row.version - TIMESTAMPS_KEPT
                    )
                )
            session.add_all(rows)
        for row in rows:
            INDEX_VERSIONS.labels(row.role).inc()
        if rows:
            log.info("index updated", extra={"roles": [f"{r.version}.{r.role}" for r in rows]})
        return UpdateResult(
            targets_md.signed.version, snapshot_md.signed.version, timestamp_md.signed.version, bool(rows)
        )

    async def count(self) -> int:
        async with self.sessions() as session:
            return int(await session.scalar(select(func.count()).select_from(IndexMetadata)) or 0)

    # Background re-signing -------------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._refresh_forever())

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.refresh_interval)
            try:
                result = await self.update()
                if result.changed and self.on_change is not None:
                    await self.on_change()
            except Exception:  # keep re-signing after a transient database error
                log.exception("re-signing the index failed")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()


def _meta_file(md: Metadata[Any], data: bytes) -> MetaFile:
    return MetaFile(md.signed.version, len(data), {"sha256": hashlib.sha256(data).hexdigest()})
