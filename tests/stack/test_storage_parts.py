"""The part API of resumable uploads on every backend (local, Swift, Swift + Keystone, S3 API): store parts, list
them, read them back, assemble them into one object, and leave nothing behind."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import AsyncIterator

from tests.stack.test_storage_conformance import Backend, backend, read
from updown_app.storage.base import PartInfo

__all__ = ["backend"]  # the fixture, shared with the conformance suite

MiB = 1024 * 1024


async def test_parts_round_trip_and_assemble(backend: Backend) -> None:
    s = backend.storage
    prefix = f"uploads/{uuid.uuid4().hex}/"
    pieces = [os.urandom(5 * MiB + 1), os.urandom(5 * MiB), os.urandom(17)]
    parts = []
    offset = 0
    for piece in pieces:
        key = f"{prefix}{offset:016d}"
        md5 = await s.put_part(key, piece)
        assert md5 == hashlib.md5(piece).hexdigest()
        parts.append(PartInfo(key, len(piece), md5))
        offset += len(piece)
    listed = sorted([(p.key, p.size) async for p in s.list_parts(prefix)])
    assert listed == [(p.key, p.size) for p in parts]
    got = b"".join([c async for c in s.get_part(parts[1].key)])
    assert got == pieces[1]

    whole = b"".join(pieces)

    async def body() -> AsyncIterator[bytes]:
        for p in parts:
            async for chunk in s.get_part(p.key):
                yield chunk

    key = f"assembled/{uuid.uuid4().hex}"
    owned = await s.assemble(key, parts, body(), size=len(whole), md5=hashlib.md5(whole).hexdigest())
    assert owned == (backend.name == "swift")
    if not owned:
        for p in parts:
            assert await s.delete_part(p.key)
    assert await read(s, key) == whole
    assert await read(s, key, 5 * MiB - 3, 10) == whole[5 * MiB - 3 : 5 * MiB + 7]
    assert await s.delete(key)
    assert [p.key async for p in s.list_parts(prefix)] == []
    assert not await s.delete_part(parts[0].key)
