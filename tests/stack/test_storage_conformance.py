"""One conformance suite for every storage backend: the local directory, Swift's native API and the S3 API (Swift's
s3api middleware on the same real Swift, started by scripts/services/swift.sh).

Thresholds are small so that multi-segment (SLO) and multipart objects are a few MiB.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import need_service
from tests.support.swift import (
    KEYSTONE_PASSWORD,
    KEYSTONE_PROJECT,
    KEYSTONE_URL,
    KEYSTONE_USER,
    SWIFT_KEY,
    SWIFT_URL,
    SWIFT_USER,
)
from updown_app.settings import S3StorageSettings, SwiftStorageSettings
from updown_app.storage.base import (
    ObjectInfo,
    Storage,
    StorageError,
    StorageIntegrityError,
)
from updown_app.storage.local import LocalStorage
from updown_app.storage.s3 import S3Storage
from updown_app.storage.swift import SwiftStorage

KiB = 1024
MiB = 1024 * KiB
RUN = uuid.uuid4().hex[:8]  # containers/buckets of this test run
CHUNK = 64 * KiB


def swift_settings(**overrides: Any) -> SwiftStorageSettings:
    url = need_service("Swift", SWIFT_URL)
    values: dict[str, Any] = {
        "auth": "tempauth",
        "auth_url": f"{url}/auth/v1.0",
        "username": SWIFT_USER,
        "password": SWIFT_KEY,
        "container": f"conformance-{RUN}",
        "slo_threshold": 2 * MiB,
        "segment_size": 1 * MiB,
        "temp_url_key": "conformance-tempurl-key",
        "retry_backoff": 0.05,
    }
    values.update(overrides)
    return SwiftStorageSettings(**values)


def keystone_settings(**overrides: Any) -> SwiftStorageSettings:
    """Swift through the Keystone-auth proxy of scripts/services/keystone.sh (endpoint from the catalog)."""
    url = need_service("Keystone", KEYSTONE_URL)
    values: dict[str, Any] = {
        "auth": "keystone",
        "auth_url": url,
        "username": KEYSTONE_USER,
        "password": KEYSTONE_PASSWORD,
        "project_name": KEYSTONE_PROJECT,
        "region_name": "RegionOne",
        "container": f"conformance-ks-{RUN}",
        "slo_threshold": 2 * MiB,
        "segment_size": 1 * MiB,
        "temp_url_key": "conformance-ks-tempurl-key",
        "retry_backoff": 0.05,
    }
    values.update(overrides)
    return SwiftStorageSettings(**values)


def s3_settings(**overrides: Any) -> S3StorageSettings:
    url = need_service("Swift", SWIFT_URL)
    values: dict[str, Any] = {
        "bucket": f"conformance-{RUN}",
        "endpoint_url": url,
        "region": "us-east-1",
        "addressing_style": "path",
        "create_bucket": True,
        "multipart_threshold": 5 * MiB,
        "part_size": 5 * MiB,
        "retry_backoff": 0.05,
    }
    values.update(overrides)
    return S3StorageSettings(**values)


def use_swift_s3_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The standard AWS chain, fed by the environment: with tempauth, s3api's access key is 'account:user'."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", SWIFT_USER)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SWIFT_KEY)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@dataclass
class Backend:
    name: str
    storage: Storage
    multi_size: int  # large enough for several segments / parts
    segment_size: int  # 0: not segmented

    async def leftovers(self, key: str) -> list[str]:
        """Anything a failed upload of ``key`` may have left: partial files, segments, multipart uploads."""
        s = self.storage
        if isinstance(s, LocalStorage):
            return [p.name for p in (s.root / ".tmp").iterdir()]
        if isinstance(s, SwiftStorage):
            prefix = s.segment_prefix + key
            r = await s._call("GET", s.segment_container, params={"format": "json", "prefix": prefix})
            return [] if r.status_code == 404 else [o["name"] for o in r.json()]
        assert isinstance(s, S3Storage)
        client = await s._s3()
        answer = await client.list_multipart_uploads(Bucket=s.bucket, Prefix=key)
        return [u["Key"] for u in answer.get("Uploads", [])]

    async def segmented(self, key: str) -> bool:
        s = self.storage
        if isinstance(s, SwiftStorage):
            r = await s._call("HEAD", s._object_path(key))
            return bool(r.headers.get("x-static-large-object", "").lower() == "true")
        if isinstance(s, S3Storage):
            client = await s._s3()
            head = await client.head_object(Bucket=s.bucket, Key=key)
            return "-" in head["ETag"]
        return False


@pytest.fixture(params=["local", "swift", "swift-keystone", "s3"])
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Backend]:
    storage: Storage
    if request.param == "local":
        storage = LocalStorage(tmp_path / "objects", chunk_size=CHUNK)
        b = Backend("local", storage, 3 * MiB + 12345, 0)
    elif request.param == "swift":
        storage = SwiftStorage(swift_settings(), chunk_size=CHUNK)
        b = Backend("swift", storage, 3 * MiB + 12345, 1 * MiB)
    elif request.param == "swift-keystone":
        storage = SwiftStorage(keystone_settings(), chunk_size=CHUNK)
        b = Backend("swift", storage, 3 * MiB + 12345, 1 * MiB)
    else:
        use_swift_s3_credentials(monkeypatch, tmp_path)
        storage = S3Storage(s3_settings(), chunk_size=CHUNK)
        b = Backend("s3", storage, 11 * MiB + 3, 5 * MiB)
    await storage.check()
    yield b
    await storage.close()


def new_key(prefix: str = "t") -> str:
    return f"{prefix}/{uuid.uuid4().hex}"


def payload(size: int) -> bytes:
    return os.urandom(size)


async def chunks(data: bytes, size: int = CHUNK, fail_before_end: bool = False) -> AsyncIterator[bytes]:
    """Like the app's verified body: when it fails, it fails before the last chunk."""
    for i in range(0, len(data), size):
        if fail_before_end and i + size >= len(data):
            raise RuntimeError("digest mismatch (simulated)")
        yield data[i : i + size]


async def read(storage: Storage, key: str, offset: int = 0, length: int | None = None) -> bytes:
    return b"".join([c async for c in storage.get(key, offset, length)])


async def put(storage: Storage, key: str, data: bytes) -> None:
    await storage.put(key, chunks(data), size=len(data), md5=hashlib.md5(data).hexdigest())


async def listed(storage: Storage, prefix: str) -> list[ObjectInfo]:
    return [o async for o in storage.list(prefix)]


# Round trips -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 1 * MiB], ids=["0B", "1B", "1MiB"])
async def test_round_trip(backend: Backend, size: int) -> None:
    data, key = payload(size), new_key()
    await put(backend.storage, key, data)
    info = await backend.storage.head(key)
    assert info is not None and info.size == size
    if info.md5 is not None:
        assert info.md5 == hashlib.md5(data).hexdigest()
    assert await read(backend.storage, key) == data
    assert [o.key for o in await listed(backend.storage, key)] == [key]
    assert not await backend.segmented(key)


async def test_multi_segment_round_trip(backend: Backend) -> None:
    data, key = payload(backend.multi_size), new_key()
    await put(backend.storage, key, data)
    if backend.segment_size:
        assert await backend.segmented(key)
    info = await backend.storage.head(key)
    assert info is not None and info.size == len(data)
    assert info.md5 in (None, hashlib.md5(data).hexdigest())
    got = [c async for c in backend.storage.get(key)]
    assert b"".join(got) == data
    assert max(len(c) for c in got) <= CHUNK  # streamed in bounded pieces, not one buffer
    assert [(o.key, o.size) for o in await listed(backend.storage, key)] == [(key, len(data))]


# Ranges ------------------------------------------------------------------------------------------------------


def range_shapes(size: int, segment: int) -> list[tuple[int, int | None]]:
    """(offset, length) pairs: what the API turns every Range header shape into."""
    shapes: list[tuple[int, int | None]] = [
        (0, None),  # whole object
        (0, size),  # bytes=0-(size-1)
        (0, 1),  # first byte
        (size - 1, 1),  # last byte (bytes=-1)
        (size - 1, None),  # open range on the last byte
        (size - 100, None),  # suffix bytes=-100
        (size - 100, 100),  # suffix as a closed range
        (12345, None),  # open range bytes=12345-
        (1000, 5000),  # middle
        (1, size - 2),  # all but the first and last bytes
    ]
    if segment and size > segment:
        shapes += [
            (segment - 10, 20),  # across the first segment boundary
            (segment, 1),  # first byte of the second segment
            (segment - 1, 1),  # last byte of the first segment
            (segment // 2, min(segment * 2, size - segment)),  # spans several segments
        ]
    return shapes


async def test_every_range_shape(backend: Backend) -> None:
    data, key = payload(backend.multi_size), new_key()
    await put(backend.storage, key, data)
    for offset, length in range_shapes(len(data), backend.segment_size):
        end = len(data) if length is None else offset + length
        got = await read(backend.storage, key, offset, length)
        assert got == data[offset:end], (offset, length)
    assert await read(backend.storage, key, 5, 0) == b""


async def test_range_past_the_end_is_an_error(backend: Backend) -> None:
    data, key = payload(1000), new_key()
    await put(backend.storage, key, data)
    with pytest.raises(StorageError):
        await read(backend.storage, key, 2000, 10)


async def test_get_missing_raises_key_error(backend: Backend) -> None:
    stream = backend.storage.get(new_key("missing"))
    with pytest.raises(KeyError):
        await anext(stream)
    assert await backend.storage.head(new_key("missing")) is None


# Integrity: nothing stored unless it all matched --------------------------------------------------------------


@pytest.mark.parametrize("multi", [False, True], ids=["single", "multi"])
async def test_md5_mismatch_refused_and_nothing_left(backend: Backend, multi: bool) -> None:
    data = payload(backend.multi_size if multi else 300 * KiB)
    key = new_key("bad-md5")
    wrong = hashlib.md5(data + b"x").hexdigest()
    with pytest.raises(StorageIntegrityError):
        await backend.storage.put(key, chunks(data), size=len(data), md5=wrong)
    assert await backend.storage.head(key) is None
    assert await listed(backend.storage, key) == []
    assert await backend.leftovers(key) == []


@pytest.mark.parametrize("multi", [False, True], ids=["single", "multi"])
async def test_failing_stream_leaves_nothing(backend: Backend, multi: bool) -> None:
    data = payload(backend.multi_size if multi else 300 * KiB)
    key = new_key("failed")
    with pytest.raises(RuntimeError, match="simulated"):
        await backend.storage.put(
            key, chunks(data, fail_before_end=True), size=len(data), md5=hashlib.md5(data).hexdigest()
        )
    assert await backend.storage.head(key) is None
    assert await backend.leftovers(key) == []


@pytest.mark.parametrize("delta", [-1, +1], ids=["short", "long"])
async def test_size_mismatch_refused(backend: Backend, delta: int) -> None:
    data, key = payload(200 * KiB), new_key("bad-size")
    with pytest.raises(StorageIntegrityError):
        await backend.storage.put(key, chunks(data), size=len(data) + delta, md5=hashlib.md5(data).hexdigest())
    assert await backend.storage.head(key) is None
    assert await backend.leftovers(key) == []


# Delete and list ---------------------------------------------------------------------------------------------


async def test_delete(backend: Backend) -> None:
    key = new_key()
    assert await backend.storage.delete(key) is False  # missing: no error
    await put(backend.storage, key, payload(10))
    assert await backend.storage.delete(key) is True
    assert await backend.storage.head(key) is None
    assert await backend.storage.delete(key) is False


async def test_delete_multi_segment_removes_segments(backend: Backend) -> None:
    key = new_key()
    await put(backend.storage, key, payload(backend.multi_size))
    assert await backend.storage.delete(key) is True
    assert await backend.storage.head(key) is None
    assert await backend.leftovers(key) == []
    with pytest.raises(KeyError):
        await read(backend.storage, key)


async def test_list_for_purge_jobs(backend: Backend) -> None:
    base = new_key("list")
    keys = sorted(f"{base}/a/{i}" for i in range(3))
    for i, key in enumerate(keys):
        await put(backend.storage, key, payload(i + 1))
    await put(backend.storage, f"{base}/b/0", payload(4))
    got = await listed(backend.storage, f"{base}/a/")
    assert [(o.key, o.size) for o in got] == [(k, i + 1) for i, k in enumerate(keys)]
    assert len(await listed(backend.storage, f"{base}/")) == 4
    assert await listed(backend.storage, f"{base}/c/") == []


# Presigned URL / TempURL -------------------------------------------------------------------------------------


@pytest.mark.parametrize("multi", [False, True], ids=["single", "multi"])
async def test_presigned_fetch_with_range(backend: Backend, multi: bool) -> None:
    data, key = payload(backend.multi_size if multi else 100 * KiB), new_key("signed")
    await put(backend.storage, key, data)
    url = await backend.storage.presigned_url(key, expires_in=300)
    if backend.name == "local":
        assert url is None
        return
    assert url is not None
    size = len(data)
    async with httpx.AsyncClient(timeout=30) as http:
        whole = await http.get(url)
        assert whole.status_code == 200 and whole.content == data
        shapes = [("bytes=5-14", 5, 15), ("bytes=-10", size - 10, size), (f"bytes={size - 7}-", size - 7, size)]
        if multi:  # across a segment boundary
            seg = backend.segment_size
            shapes.append((f"bytes={seg - 3}-{seg + 2}", seg - 3, seg + 3))
        for header, start, end in shapes:
            r = await http.get(url, headers={"Range": header})
            assert r.status_code == 206, (header, r.status_code)
            assert r.content == data[start:end], header
            assert r.headers["content-range"] == f"bytes {start}-{end - 1}/{size}"
        if backend.name == "swift":  # a TempURL for GET allows HEAD (an S3 signature covers the method)
            head = await http.head(url)
            assert head.status_code == 200 and int(head.headers["content-length"]) == size
        # The signature covers the object: another key, or a tampered signature, is refused.
        other = url.replace(key, new_key("signed"))
        assert (await http.get(other)).status_code in (401, 403)
        tampered = (
            url.replace("sig=", "sig=0", 1) if "temp_url_sig=" in url else url.replace("Signature=", "Signature=0", 1)
        )
        assert (await http.get(tampered)).status_code in (401, 403)


# Swift specifics ---------------------------------------------------------------------------------------------


async def test_swift_container_scoped_tempurl_reaches_slo_segments() -> None:
    """A container TempURL key can't reach another container: SLO segments then live beside the objects under
    '.segments/', hidden from listings."""
    storage = SwiftStorage(
        swift_settings(container=f"scoped-{RUN}", temp_url_key_scope="container", temp_url_key="scoped-key"),
        chunk_size=CHUNK,
    )
    try:
        await storage.check()
        assert storage.segment_container == storage.container
        data, key = payload(3 * MiB + 1), new_key("scoped")
        await put(storage, key, data)
        assert [o.key for o in await listed(storage, "")] == [key]
        url = await storage.presigned_url(key)
        assert url is not None
        async with httpx.AsyncClient(timeout=30) as http:
            r = await http.get(url, headers={"Range": f"bytes={MiB - 5}-{MiB + 4}"})
            assert r.status_code == 206 and r.content == data[MiB - 5 : MiB + 5]
        assert await storage.delete(key)
        r2 = await storage._call("GET", storage.container, params={"format": "json"})
        assert r2.status_code == 204 or r2.json() == []
    finally:
        await storage.close()


async def test_swift_token_refreshed_after_401() -> None:
    """A token Swift no longer accepts is replaced transparently (idempotent calls are re-sent)."""
    storage = SwiftStorage(swift_settings(), chunk_size=CHUNK)
    try:
        await storage.check()
        data, key = payload(1000), new_key("token")
        await put(storage, key, data)
        old = storage._token
        assert old is not None
        storage._token = type(old)("AUTH_tk" + "0" * 32, old.storage_url, old.expires_at)
        assert await read(storage, key) == data
        assert storage._token is not None and storage._token.value != "AUTH_tk" + "0" * 32
    finally:
        await storage.close()


async def test_swift_keystone_token_refresh() -> None:
    """Keystone v3: the endpoint comes from the catalog (AUTH_<project id>); a token Swift refuses is replaced
    through keystoneauth (invalidate + re-authenticate) and the request re-sent; an expiring token is renewed."""
    storage = SwiftStorage(keystone_settings(), chunk_size=CHUNK)
    try:
        await storage.check()
        token = storage._token
        assert token is not None and "/v1/AUTH_" in token.storage_url and token.expires_at is not None
        data, key = payload(1000), new_key("ks-token")
        await put(storage, key, data)
        storage._token = type(token)("gAAAAA-not-a-token", token.storage_url, token.expires_at)
        assert await read(storage, key) == data
        assert storage._token is not None and storage._token.value != "gAAAAA-not-a-token"
        refreshed = storage._token
        # A token within two minutes of its expiry is replaced before it is used.
        storage._token = type(refreshed)(refreshed.value, refreshed.storage_url, __import__("time").time() + 60)
        assert await storage.head(key) is not None
        assert storage._token is not None and storage._token.expires_at is not None
        assert storage._token.expires_at > __import__("time").time() + 600
    finally:
        await storage.close()


async def test_swift_keystone_wrong_password_is_an_auth_error(caplog: pytest.LogCaptureFixture) -> None:
    from updown_app.storage.base import StorageAuthError

    storage = SwiftStorage(keystone_settings(password="wrong"), chunk_size=CHUNK)
    try:
        with pytest.raises(StorageAuthError):
            await storage.check()
        assert any("swift authentication failed" in r.getMessage() for r in caplog.records)
    finally:
        await storage.close()


async def test_sweeper_removes_only_unrecorded_objects(backend: Backend, tmp_path: Path) -> None:
    """The sweeper on every backend: an object no file records goes once past the grace period, a recorded one
    stays; afterwards the store's content objects are exactly those the database knows."""
    from updown_app.core.names import object_key
    from updown_app.metadata.db import create_engine, migrate, session_factory
    from updown_app.metadata.models import File
    from updown_app.metadata.repository import Repository, utcnow
    from updown_app.services.sweeper import Sweeper

    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'meta.db'}")
    await migrate(engine)
    repository = Repository(session_factory(engine))
    kept, orphan = payload(1000), payload(1001)
    keys = {name: object_key(hashlib.sha256(data).hexdigest()) for name, data in (("kept", kept), ("orphan", orphan))}
    try:
        for name, data in (("kept", kept), ("orphan", orphan)):
            await put(backend.storage, keys[name], data)
        digest = hashlib.sha256(kept).hexdigest()
        record = File(
            id=uuid.uuid4().hex, package="p", revision="1", filename="kept.bin", size=len(kept),
            md5=hashlib.md5(kept).hexdigest(), sha1=hashlib.sha1(kept).hexdigest(), sha256=digest,
            sha512=hashlib.sha512(kept).hexdigest(), object_key=keys["kept"], visibility="public",
            state="unpublished", created_by="test", created_at=utcnow(),
        )  # fmt: skip
        await repository.add(record, "test")
        info = await backend.storage.head(keys["orphan"])
        assert info is not None and info.modified is not None and abs(info.modified - time.time()) < 60

        within_grace = await Sweeper(backend.storage, repository, grace=3600).sweep()
        assert within_grace.objects == []
        await asyncio.sleep(1.1)  # S3 (Swift's s3api) dates objects to the second, rounded up
        report = await Sweeper(backend.storage, repository, grace=0).sweep()
        assert report.objects == [keys["orphan"]] and report.object_bytes == len(orphan)
        assert {o.key for o in await listed(backend.storage, "sha256/")} == {keys["kept"]}
        assert await read(backend.storage, keys["kept"]) == kept
    finally:
        for key in keys.values():
            await backend.storage.delete(key)
        await engine.dispose()
