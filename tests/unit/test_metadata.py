"""The metadata layer on SQLite and on PostgreSQL: migrations, records, state history, nonces."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from updown_app.metadata.db import create_engine, current_revision, migrate, session_factory
from updown_app.metadata.models import File, FileState
from updown_app.metadata.repository import DigestsPendingError, DuplicateFileError, Repository, utcnow


def record(**overrides: object) -> File:
    values: dict[str, object] = {
        "id": uuid.uuid4().hex,
        "package": "pkg",
        "revision": "1",
        "filename": "pkg_1.snap",
        "size": 3,
        "md5": "0" * 32,
        "sha1": "1" * 40,
        "sha256": "2" * 64,
        "sha512": "3" * 128,
        "object_key": "sha256/22/" + "2" * 64,
        "visibility": "public",
        "state": "unpublished",
        "created_by": "store-1",
        "created_at": utcnow(),
    }
    values.update(overrides)
    return File(**values)


@pytest.fixture
async def repo(database_url: str):  # type: ignore[no-untyped-def]
    engine = create_engine(database_url)
    await migrate(engine)
    await migrate(engine)  # idempotent
    assert await current_revision(engine) == "0004"
    yield Repository(session_factory(engine))
    await engine.dispose()


async def test_add_get_and_duplicate(repo: Repository) -> None:
    f = await repo.add(record(), "store-1")
    got = await repo.get(f.id)
    assert got is not None and got.sha512 == "3" * 128 and got.size == 3
    assert got.created_at.tzinfo is not None
    assert await repo.name_taken("pkg", "1", "pkg_1.snap")
    assert not await repo.name_taken("pkg", "2", "pkg_1.snap")
    with pytest.raises(DuplicateFileError):
        await repo.add(record(), "store-1")
    assert await repo.count_files() == 1
    # Same content under another name shares the object.
    await repo.add(record(revision="2"), "store-1")
    assert await repo.object_for_sha256("2" * 64) == "sha256/22/" + "2" * 64
    assert await repo.object_in_use("sha256/22/" + "2" * 64)
    assert await repo.object_for_sha256("f" * 64) is None


async def test_state_changes_are_idempotent_and_recorded(repo: Repository) -> None:
    f = await repo.add(record(), "store-1")
    assert await repo.published("pkg", "1", "pkg_1.snap") is None
    change = await repo.set_state(f.id, FileState.published, "store-2")
    assert change is not None and change.changed and change.file.published_at is not None
    again = await repo.set_state(f.id, FileState.published, "store-2")
    assert again is not None and not again.changed
    assert (await repo.published("pkg", "1", "pkg_1.snap")) is not None
    await repo.set_state(f.id, FileState.unpublished, "store-3")
    assert await repo.published("pkg", "1", "pkg_1.snap") is None
    events = await repo.events(f.id)
    assert [(e.action, e.key_id) for e in events] == [
        ("upload", "store-1"),
        ("publish", "store-2"),
        ("unpublish", "store-3"),
    ]
    assert await repo.set_state("0" * 32, FileState.published, "k") is None


async def test_nonces_refuse_replays_until_purged(repo: Repository) -> None:
    soon = datetime.now(UTC) + timedelta(minutes=5)
    assert await repo.consume_nonce("k1", "nonce-0123456789abcdef", soon)
    assert not await repo.consume_nonce("k1", "nonce-0123456789abcdef", soon)
    assert await repo.consume_nonce("k2", "nonce-0123456789abcdef", soon)  # per key id
    assert await repo.purge_nonces(now=soon + timedelta(seconds=1)) == 2
    assert await repo.consume_nonce("k1", "nonce-0123456789abcdef", soon)


async def test_migration_0004_keeps_the_files_and_lets_sha1_and_sha512_wait(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await migrate(engine, "0003")
        repo = Repository(session_factory(engine))
        old = await repo.add(record(), "store-1")
        # Before: every file needs all four digests (the repository reports any constraint as a duplicate).
        with pytest.raises(DuplicateFileError):
            await repo.add(record(revision="2", sha1=None, sha512=None), "store-1")
        await migrate(engine)
        assert await current_revision(engine) == "0004"
        kept = await repo.get(old.id)
        assert kept is not None and (kept.sha1, kept.sha512) == ("1" * 40, "3" * 128)
        pending = await repo.add(record(revision="2", sha1=None, sha512=None), "store-1")
        assert await repo.missing_digests() == [pending.id]
        with pytest.raises(DigestsPendingError):  # never published without all four
            await repo.set_state(pending.id, FileState.published, "store-2")
        await repo.complete_digests(pending.id, "4" * 40, "5" * 128)
        assert await repo.missing_digests() == []
        change = await repo.set_state(pending.id, FileState.published, "store-2")
        assert change is not None and change.changed and change.file.sha512 == "5" * 128
    finally:
        await engine.dispose()
