"""Resumable uploads across two app processes sharing PostgreSQL and one object store (Swift, Swift's S3 API, a
shared local directory): tuspy alternates processes between chunks, one process is killed in the middle of a chunk,
the client resumes on the other; the published download matches, and the store holds no leftover part."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tusclient.exceptions import TusCommunicationError

from tests.conftest import need_service
from tests.support.server import KEY_ID, ServerProcess, make_server
from tests.support.swift import SWIFT_KEY, SWIFT_URL, SWIFT_USER, swift_env
from tests.support.tus import TUS, fields_for, uploader
from updown_app.settings import Settings
from updown_app.storage import create_storage
from updown_app.storage.breaker import GuardedStorage
from updown_app.storage.swift import SwiftStorage

MiB = 1024 * 1024
CHUNK = 8 * MiB
PART = 4 * MiB


def backend_env(name: str, tmp_path: Path) -> dict[str, str]:
    run = uuid.uuid4().hex[:8]
    if name == "local":
        return {"UPDOWN_STORAGE__LOCAL__PATH": str(tmp_path / "shared-objects")}
    if name == "swift":
        return swift_env(f"tus-{run}")
    url = need_service("Swift", SWIFT_URL)
    return {
        "UPDOWN_STORAGE__BACKEND": "s3",
        "UPDOWN_STORAGE__S3__BUCKET": f"tus-{run}",
        "UPDOWN_STORAGE__S3__ENDPOINT_URL": url,
        "UPDOWN_STORAGE__S3__REGION": "us-east-1",
        "UPDOWN_STORAGE__S3__ADDRESSING_STYLE": "path",
        "UPDOWN_STORAGE__S3__CREATE_BUCKET": "true",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "AWS_ACCESS_KEY_ID": SWIFT_USER,
        "AWS_SECRET_ACCESS_KEY": SWIFT_KEY,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def leftover_parts(env: dict[str, str], object_key: str) -> list[str]:
    """Every part under uploads/ in the shared store that ``object_key`` does not own (Swift: the segments of its
    SLO manifest), seen through a fresh backend built from the same settings."""

    async def run() -> list[str]:
        guarded = create_storage(Settings())
        storage = guarded.inner if isinstance(guarded, GuardedStorage) else guarded
        try:
            owned: set[str] = set()
            if isinstance(storage, SwiftStorage):
                r = await storage._call(
                    "GET", storage._object_path(object_key), params={"multipart-manifest": "get", "format": "raw"}
                )
                if r.headers.get("x-static-large-object") == "True" or r.status_code == 200:
                    for seg in r.json():
                        owned.add(seg["path"].split("/", 2)[2].removeprefix(storage.segment_prefix))
            return [p.key async for p in storage.list_parts("uploads/") if p.key not in owned]
        finally:
            await storage.close()

    saved = dict(os.environ)
    os.environ.update(env)  # the AWS chain reads credentials lazily
    try:
        return asyncio.run(run())
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture
def pair(request: pytest.FixtureRequest, tmp_path: Path, postgres_url: str) -> Iterator[list[ServerProcess]]:
    keys = {KEY_ID: secrets.token_urlsafe(32)}
    env = {
        **backend_env(request.param, tmp_path),
        "UPDOWN_UPLOADS__PART_SIZE": str(PART),
        "UPDOWN_UPLOADS__LEASE": "3",
        "UPDOWN_MAX_UPLOAD_SIZE": str(1024 * MiB),
        "UPDOWN_ACCESS_LOG": "false",
    }
    servers = [
        make_server(tmp_path / f"app{i}", tls=False, database_url=postgres_url, extra_env=env, keys=keys)
        for i in range(2)
    ]
    for srv in servers:
        srv.start()
    yield servers
    for srv in servers:
        srv.stop()


async def _expire_sessions(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute("UPDATE upload_sessions SET expires_at = now() - interval '1 hour'")
    finally:
        await conn.close()


def _patch_then_die(srv: ServerProcess, url: str, offset: int, data: bytes) -> None:
    """A PATCH that sends part of its chunk, then the process handling it is killed (SIGKILL)."""

    def body() -> Iterator[bytes]:
        yield data[: PART + MiB]  # one whole part stored (not committed), then a partial one
        time.sleep(1.0)
        srv.kill()
        yield data[PART + MiB :]

    headers = {**TUS, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"}
    headers |= {"Content-Length": str(len(data)), "X-Forwarded-Proto": "https"}
    with pytest.raises(httpx.TransportError):
        httpx.patch(url, content=body(), headers=headers, timeout=30)


@pytest.mark.parametrize(
    ("pair", "size"),
    [("swift", 200 * MiB + 12345), ("s3", 40 * MiB + 7), ("local", 40 * MiB + 3)],
    indirect=["pair"],
    ids=["swift", "s3", "local"],
)
def test_tuspy_across_two_processes_with_a_kill(pair: list[ServerProcess], size: int, tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    with path.open("wb") as f:
        for _ in range(0, size, CHUNK):
            f.write(os.urandom(CHUNK))
        f.truncate(size)
    fields = fields_for(path, package="tus-cluster")
    up = uploader(pair[0], path, fields, CHUNK)
    up.client.headers["X-Forwarded-Proto"] = "https"
    up.set_url(up.create_url())
    upload_path = up.url.removeprefix(pair[0].base_url)
    chunk = 0
    killed = False
    while up.offset < size:
        srv = pair[chunk % 2]
        if srv.proc is None:
            srv.start()
        up.url = srv.base_url + upload_path
        if chunk == 3 and not killed:
            up.file_stream = None
            with path.open("rb") as f:
                f.seek(up.offset)
                data = f.read(CHUNK)
            _patch_then_die(srv, up.url, up.offset, data)
            killed = True
            chunk += 1
            continue
        for _attempt in range(20):  # the killed process's lease lapses after uploads.lease seconds
            try:
                up.offset = up.get_offset()
                up.upload_chunk()
                break
            except TusCommunicationError as exc:
                if exc.status_code != 409:
                    raise
                time.sleep(0.5)
        else:
            pytest.fail("the upload stayed locked")
        chunk += 1
    assert killed
    r = httpx.head(pair[1].base_url + upload_path, headers={**TUS, "X-Forwarded-Proto": "https"})
    file_id = r.headers["updown-file-id"]
    live = next(s for s in pair if s.proc is not None)
    with live.client() as c:
        record = c.info(file_id)
        assert record["sha256"] == fields["sha256"] and record["size"] == size
        c.publish(file_id)
    digest = hashlib.sha256()
    with live.http() as http, http.stream("GET", "/tus-cluster/1/big.tar") as got:
        assert got.status_code == 200
        for piece in got.iter_bytes(MiB):
            digest.update(piece)
    assert digest.hexdigest() == fields["sha256"]
    # Purging the finished (now expired) session leaves the file whole.
    asyncio.run(_expire_sessions(live.env["UPDOWN_DATABASE_URL"]))
    out = subprocess.run(
        [sys.executable, "-m", "updown_app", "purge-uploads"],
        env={**os.environ, **live.env},
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    assert json.loads(out)["purged_sessions"] == 1
    with live.http() as http:
        tail = http.get("/tus-cluster/1/big.tar", headers={"Range": f"bytes={size - MiB}-"})
        assert tail.status_code == 206
    with path.open("rb") as f:
        f.seek(size - MiB)
        assert tail.content == f.read()
    assert leftover_parts(live.env, f"sha256/{fields['sha256'][:2]}/{fields['sha256']}") == []
