"""SHA-1 and SHA-512 off the upload's request path: an upload answers with size, MD5 and SHA-256 verified, the
other two follow from the stored object, and no file is published without all four. The app runs in-process
(local store, SQLite and PostgreSQL) behind a store whose reads can be cut."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.forms import form, multipart, signed_headers, upload_fields
from updown_app import runtime as runtime_module
from updown_app import storage as storage_module
from updown_app.core import signing
from updown_app.core.digests import Declared, Digests
from updown_app.core.names import object_key
from updown_app.http.app import create_app
from updown_app.metadata.models import File, FileState, Visibility
from updown_app.metadata.repository import Repository, utcnow
from updown_app.runtime import Runtime
from updown_app.services.digest_completion import DigestCompletion, StoredObjectInvalid
from updown_app.services.ingest import KnownContent, StreamContent
from updown_app.services.upload_fields import UploadFields
from updown_app.settings import Settings
from updown_app.storage.base import Storage, StorageUnavailableError
from updown_app.storage.wrapper import StorageWrapper

KEY_ID = "store-test"
SECRET = "a-test-secret-of-thirty-two-bytes!"


class Outage(StorageWrapper):
    """The real store; its reads fail as an unreachable store's while ``down``."""

    down = False

    def get(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        return _unavailable() if self.down else self.inner.get(key, offset, length)


async def _unavailable() -> AsyncIterator[bytes]:
    raise StorageUnavailableError()
    yield b""  # an async generator, as a store's get is


class App:
    def __init__(self, http: httpx.AsyncClient, runtime: Runtime, store: Outage) -> None:
        self.http, self.runtime, self.store = http, runtime, store

    async def upload(self, data: bytes, **over: str) -> dict[str, Any]:
        fields = upload_fields(data, package="deferred", revision=uuid.uuid4().hex[:8], **over)
        body, ctype = multipart(form(fields, data))
        r = await self.http.post("/v1/files", content=body, headers=signed_headers(KEY_ID, SECRET, fields, ctype))
        assert r.status_code == 201, r.text
        result: dict[str, Any] = r.json()
        return result

    async def signed(self, method: str, path: str) -> httpx.Response:
        fields = signing.fresh_fields()
        auth = signing.authorization_header(KEY_ID, SECRET.encode(), method, path, fields)
        if method == "GET":
            return await self.http.get(path, params=fields, headers={"authorization": auth})
        return await self.http.request(method, path, data=fields, headers={"authorization": auth})

    async def info(self, file_id: str) -> dict[str, Any]:
        r = await self.signed("GET", f"/v1/files/{file_id}")
        assert r.status_code == 200, r.text
        result: dict[str, Any] = r.json()
        return result

    async def until(
        self, file_id: str, done: Callable[[dict[str, Any]], bool], timeout: float = 10.0
    ) -> dict[str, Any]:
        """The file's JSON once ``done`` holds (polled, as a client would)."""
        deadline = asyncio.get_running_loop().time() + 10.0
        while True:
            body = await self.info(file_id)
            if done(body) or asyncio.get_running_loop().time() > deadline:
                return body
            await asyncio.sleep(0.02)


@pytest.fixture
async def app(tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[App]:
    async with serving(tmp_path, database_url, monkeypatch, sweep_interval=0) as running:
        yield running


@contextlib.asynccontextmanager
async def serving(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch, sweep_interval: float
) -> AsyncIterator[App]:
    stores: list[Outage] = []
    real = storage_module.create_storage

    def create_storage(*args: Any) -> Storage:
        stores.append(Outage(real(*args)))
        return stores[-1]

    monkeypatch.setattr("updown_app.runtime.create_storage", create_storage)
    settings = Settings.load(
        data_dir=tmp_path,
        database_url=database_url,
        hmac_keys={KEY_ID: SECRET},
        tls=False,
        http_port=None,
        access_log=False,
        sweep={"interval": sweep_interval},
        uploads={"purge_interval": 0},
    )
    asgi = create_app(settings)
    async with asgi.router.lifespan_context(asgi):
        transport = httpx.ASGITransport(app=asgi)
        async with httpx.AsyncClient(transport=transport, base_url="https://private.localhost") as http:
            yield App(http, asgi.state.runtime, stores[0])


def hashes(data: bytes) -> dict[str, str]:
    return {name: hashlib.new(name, data).hexdigest() for name in ("md5", "sha1", "sha256", "sha512")}


def digests_of(body: dict[str, Any]) -> dict[str, str]:
    return {name: body[name] for name in ("md5", "sha1", "sha256", "sha512")}


async def test_upload_answers_md5_and_sha256_then_sha1_and_sha512_follow(app: App) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)  # several reads of the store, not a multiple of any of them
    body = await app.upload(data)
    assert body["size"] == len(data)
    assert (body["md5"], body["sha256"]) == (hashes(data)["md5"], hashes(data)["sha256"])
    assert body["sha1"] is None and body["sha512"] is None  # new content: completed after the answer
    done = await app.until(body["id"], lambda b: b["sha512"] is not None)
    assert digests_of(done) == hashes(data)
    assert done["state"] == "unpublished"


async def test_publish_right_after_upload_publishes_all_four(app: App) -> None:
    data = os.urandom(500_000)
    body = await app.upload(data)
    assert body["sha1"] is None
    r = await app.signed("POST", f"/v1/files/{body['id']}/publish")
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "published" and digests_of(r.json()) == hashes(data)
    download = await app.http.get("https://localhost" + body["path"])
    assert download.status_code == 200 and download.content == data
    sha1 = hashlib.sha1(data).digest()
    assert download.headers["digest"].split(", ")[1] == "SHA=" + base64.b64encode(sha1).decode()
    assert "sha-512=:" in download.headers["repr-digest"]


async def test_publish_while_the_store_cannot_be_read_answers_503_and_publishes_nothing(app: App) -> None:
    data = os.urandom(200_000)
    app.store.down = True
    body = await app.upload(data)  # the put works; only reading back fails
    await app.runtime.completion.wait_idle()  # the background completion failed meanwhile
    r = await app.signed("POST", f"/v1/files/{body['id']}/publish")
    assert r.status_code == 503 and r.json()["error"]["code"] == "storage_unavailable"
    assert r.headers["retry-after"].isdigit()
    after = await app.info(body["id"])
    assert after["state"] == "unpublished" and after["sha1"] is None and after["sha512"] is None
    assert (await app.http.get("https://localhost" + body["path"])).status_code == 404
    app.store.down = False
    r = await app.signed("POST", f"/v1/files/{body['id']}/publish")
    assert r.status_code == 200 and digests_of(r.json()) == hashes(data)


async def test_a_file_an_outage_left_incomplete_is_completed_at_the_next_round(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No publish and no restart needed: the completion looks again at every sweep interval."""
    async with serving(tmp_path, database_url, monkeypatch, sweep_interval=0.5) as app:
        data = os.urandom(150_000)
        app.store.down = True
        body = await app.upload(data)
        await app.runtime.completion.wait_idle()  # the background completion failed
        assert (await app.info(body["id"]))["sha512"] is None
        app.store.down = False
        done = await app.until(body["id"], lambda b: b["sha512"] is not None)
        assert digests_of(done) == hashes(data) and done["state"] == "unpublished"


async def test_identical_content_takes_the_digests_of_the_first_record(app: App) -> None:
    data = os.urandom(100_000)
    first = await app.upload(data)
    await app.until(first["id"], lambda b: b["sha512"] is not None)
    second = await app.upload(data)
    assert digests_of(second) == hashes(data)  # nothing left to compute


def crashed_record(data: bytes, key: str) -> File:
    """What an upload recorded before its process died: no SHA-1, no SHA-512."""
    digest = hashes(data)
    return File(
        id=uuid.uuid4().hex,
        package="crashed",
        revision="1",
        filename=f"{uuid.uuid4().hex[:8]}.bin",
        size=len(data),
        md5=digest["md5"],
        sha1=None,
        sha256=digest["sha256"],
        sha512=None,
        object_key=key,
        visibility=Visibility.public.value,
        state=FileState.unpublished.value,
        created_by=KEY_ID,
        created_at=utcnow(),
    )


async def put(storage: Storage, data: bytes) -> str:
    async def body() -> AsyncIterator[bytes]:
        yield data

    key = object_key(hashlib.sha256(data).hexdigest())
    await storage.put(key, body(), size=len(data), md5=hashlib.md5(data).hexdigest())
    return key


async def test_a_record_left_without_digests_is_completed_at_start(app: App) -> None:
    data = os.urandom(70_000)
    record = crashed_record(data, await put(app.runtime.storage, data))
    await app.runtime.repository.add(record, KEY_ID)
    # A new process (the same store and database) looks for such records at start.
    completion = DigestCompletion(app.runtime.repository, app.runtime.storage)
    assert await completion.catch_up() == 1
    await completion.wait_idle()
    done = await app.info(record.id)
    assert digests_of(done) == hashes(data)
    assert await completion.catch_up() == 0


async def test_the_app_completes_leftover_records_when_it_starts(tmp_path: Path, database_url: str) -> None:
    data = os.urandom(70_000)
    settings = Settings.load(
        data_dir=tmp_path, database_url=database_url, hmac_keys={KEY_ID: SECRET}, tls=False, sweep={"interval": 0}
    )
    first = await runtime_module.build_runtime(settings, serving=False)
    try:
        record = crashed_record(data, await put(first.storage, data))
        await first.repository.add(record, KEY_ID)
    finally:
        await runtime_module.close_runtime(first)
    asgi = create_app(settings)
    async with asgi.router.lifespan_context(asgi):
        repository: Repository = asgi.state.runtime.repository
        for _ in range(500):
            got = await repository.get(record.id)
            if got is not None and got.sha512 is not None:
                break
            await asyncio.sleep(0.02)
        assert got is not None and (got.sha1, got.sha512) == (hashes(data)["sha1"], hashes(data)["sha512"])


async def test_a_stored_object_that_does_not_match_its_record_is_never_published(app: App) -> None:
    data, other = os.urandom(50_000), os.urandom(50_000)
    record = crashed_record(data, await put(app.runtime.storage, other))  # the store holds other bytes
    await app.runtime.repository.add(record, KEY_ID)
    with pytest.raises(StoredObjectInvalid):
        await app.runtime.completion.complete(record.id)
    r = await app.signed("POST", f"/v1/files/{record.id}/publish")
    assert r.status_code == 409 and r.json()["error"]["code"] == "stored_object_mismatch"
    got = await app.runtime.repository.get(record.id)
    assert got is not None and got.state == "unpublished" and got.sha1 is None


async def test_imports_hash_all_four_while_they_stream(app: App) -> None:
    data = os.urandom(40_000)
    digest = hashes(data)
    declared = Declared(size=len(data), md5=digest["md5"], sha256=digest["sha256"])

    async def body() -> AsyncIterator[bytes]:
        yield data

    content = StreamContent(body(), declared, 1 << 20, all_digests=True)
    fields = UploadFields("imported", "1", "imported.bin", Visibility.public, declared)
    record = await app.runtime.ingest.ingest(fields, content, "mirror", sha512=digest["sha512"])
    assert (record.sha1, record.sha512) == (digest["sha1"], digest["sha512"])


async def test_known_content_whose_record_is_pending_is_completed_too(app: App) -> None:
    """The pull-through records content stored here under another name with that record's digests; when those
    are still pending, the new record is completed as well."""
    data = os.urandom(30_000)
    app.store.down = True  # the first record's completion fails: its digests stay pending
    first = await app.upload(data)
    await app.runtime.completion.wait_idle()
    app.store.down = False
    like = await app.runtime.repository.get(first["id"])
    assert like is not None and like.sha1 is None
    declared = Declared(size=like.size, md5=like.md5, sha256=like.sha256)
    fields = UploadFields("pulled", "1", "pulled.bin", Visibility.public, declared)
    known = KnownContent(Digests(like.size, like.md5, like.sha1, like.sha256, like.sha512))
    record = await app.runtime.ingest.ingest(fields, known, "pull-through", sha512=hashes(data)["sha512"])
    assert record.sha1 is None
    await app.runtime.completion.wait_idle()
    assert digests_of(await app.info(record.id)) == hashes(data)
