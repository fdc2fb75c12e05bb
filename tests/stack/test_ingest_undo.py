"""The ingest's undo does not depend on the database (issue "The edges hold", item 4): with the real PostgreSQL
made unreachable after the object was stored and before it is recorded, the object this ingest created is
removed; an object that existed before the ingest (content-addressed dedupe) is never removed by it.

The database is reached through a loopback TCP forwarder that the test cuts at the moment the body has been
read: every connection is reset and new ones are refused, as when PostgreSQL's host goes away.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy.exc import DBAPIError

from updown_app.core.digests import Declared
from updown_app.core.names import object_key
from updown_app.metadata.db import create_engine, migrate, session_factory
from updown_app.metadata.models import Visibility
from updown_app.metadata.repository import Repository
from updown_app.services.ingest import Ingest, StreamContent
from updown_app.services.upload_fields import UploadFields
from updown_app.storage.local import LocalStorage
from updown_app.unavailable import DependencyUnavailable

pytestmark = pytest.mark.postgres
DATABASE_GONE = (DependencyUnavailable, DBAPIError, OSError)


class Forwarder:
    """127.0.0.1:<port> -> the database, until ``cut()``: then every connection is reset, new ones refused."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.transport.abort()


def fields(name: str, data: bytes) -> UploadFields:
    declared = Declared(
        size=len(data),
        md5=hashlib.md5(data, usedforsecurity=False).hexdigest(),
        sha256=hashlib.sha256(data).hexdigest(),
    )
    return UploadFields("pkg", "1", name, Visibility.public, declared)


async def body(data: bytes, then: Forwarder | None = None) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 65536):
        yield data[i : i + 65536]
    if then is not None:
        then.cut()  # the whole body was received: the database goes away before the record is written


async def setup(postgres_url: str, tmp_path: Path) -> tuple[Forwarder, Ingest, LocalStorage, list[object]]:
    parts = urlsplit(postgres_url)
    forwarder = Forwarder(parts.hostname or "127.0.0.1", parts.port or 5432)
    port = await forwarder.start()
    netloc = parts.netloc.rsplit("@", 1)
    url = parts._replace(netloc=f"{netloc[0]}@127.0.0.1:{port}" if len(netloc) == 2 else f"127.0.0.1:{port}")
    engine = create_engine(url.geturl())
    await migrate(engine)
    storage = LocalStorage(tmp_path / "objects")
    return forwarder, Ingest(Repository(session_factory(engine)), storage), storage, [engine]


async def test_an_object_this_ingest_created_is_removed_with_the_database_gone(
    postgres_url: str, tmp_path: Path
) -> None:
    forwarder, ingest, storage, (engine,) = await setup(postgres_url, tmp_path)
    data = os.urandom(3 * 1024 * 1024)
    f = fields("new.bin", data)
    try:
        with pytest.raises(DATABASE_GONE):  # it failed on the database, not on the bytes
            await ingest.ingest(f, StreamContent(body(data, forwarder), f.declared, 1 << 20), "store")
        assert await storage.head(object_key(f.declared.sha256)) is None
        assert [o async for o in storage.list()] == []
    finally:
        await engine.dispose()  # type: ignore[attr-defined]


async def test_an_object_that_existed_before_the_ingest_is_kept_with_the_database_gone(
    postgres_url: str, tmp_path: Path
) -> None:
    forwarder, ingest, storage, (engine,) = await setup(postgres_url, tmp_path)
    data = os.urandom(1024 * 1024)
    first = fields("first.bin", data)
    try:
        recorded = await ingest.ingest(first, StreamContent(body(data), first.declared, 1 << 20), "store")
        second = fields("second.bin", data)  # same content, other name: deduplicated onto the first's object
        with pytest.raises(DATABASE_GONE):
            await ingest.ingest(second, StreamContent(body(data, forwarder), second.declared, 1 << 20), "store")
        info = await storage.head(recorded.object_key)
        assert info is not None and info.size == len(data)
    finally:
        await engine.dispose()  # type: ignore[attr-defined]
