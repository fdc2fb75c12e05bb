"""The SQL schema: files, their state-change history, and the nonces of signed requests."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite would hand back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class Visibility(enum.StrEnum):
    public = "public"
    private = "private"


class FileState(enum.StrEnum):
    unpublished = "unpublished"
    published = "published"


class File(Base):
    __tablename__ = "files"
    __table_args__ = (
        UniqueConstraint("package", "revision", "filename", name="uq_files_package_revision_filename"),
        Index("ix_files_sha256", "sha256"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    package: Mapped[str] = mapped_column(String(128))
    revision: Mapped[str] = mapped_column(String(128))
    filename: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    md5: Mapped[str] = mapped_column(String(32))
    # SHA-1 and SHA-512 are computed after the upload answered (services/digest_completion.py): NULL until then,
    # never NULL on a published file.
    sha1: Mapped[str | None] = mapped_column(String(40), nullable=True)
    sha256: Mapped[str] = mapped_column(String(64))
    sha512: Mapped[str | None] = mapped_column(String(128), nullable=True)
    object_key: Mapped[str] = mapped_column(String(300))
    visibility: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    published_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    unpublished_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class FileEvent(Base):
    """Who (signing key id) changed what, when: uploads, publishes, unpublishes."""

    __tablename__ = "file_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    file_id: Mapped[str] = mapped_column(String(32), ForeignKey("files.id", ondelete="CASCADE"), index=True)
    action: Mapped[str] = mapped_column(String(16))
    key_id: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UtcDateTime())


class Nonce(Base):
    """Nonces seen within the clock-skew window; the primary key makes a replay fail atomically."""

    __tablename__ = "nonces"

    key_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(128), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)


class UploadSession(Base):
    """A resumable (tus) upload: what the store signed, how far it got, and who is writing to it now."""

    __tablename__ = "upload_sessions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(64))
    package: Mapped[str] = mapped_column(String(128))
    revision: Mapped[str] = mapped_column(String(128))
    filename: Mapped[str] = mapped_column(String(255))
    visibility: Mapped[str] = mapped_column(String(16))
    size: Mapped[int] = mapped_column(BigInteger)
    md5: Mapped[str] = mapped_column(String(32))
    sha256: Mapped[str] = mapped_column(String(64))
    offset: Mapped[int] = mapped_column(BigInteger, default=0)
    state: Mapped[str] = mapped_column(String(16))  # open | done
    file_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    upload_metadata: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    lease_token: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class UploadPart(Base):
    """A stored part of a session, in offset order; only parts whose PATCH completed are recorded."""

    __tablename__ = "upload_parts"

    session_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("upload_sessions.id", ondelete="CASCADE"), primary_key=True
    )
    offset: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    md5: Mapped[str] = mapped_column(String(32))
    key: Mapped[str] = mapped_column(String(300))


class FileChannel(Base):
    """A channel (``stable``, ``edge``...) a file is published in; the "latest" URLs and the index read these."""

    __tablename__ = "file_channels"

    file_id: Mapped[str] = mapped_column(String(32), ForeignKey("files.id", ondelete="CASCADE"), primary_key=True)
    channel: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)


class IndexMetadata(Base):
    """One signed TUF metadata file (targets, snapshot, timestamp) by role and version. The (role, version) key
    makes two processes racing to write the same version fail atomically: the loser retries on the new state."""

    __tablename__ = "index_metadata"

    role: Mapped[str] = mapped_column(String(16), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
