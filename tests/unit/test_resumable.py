"""Resumable uploads (tus 1.0) on one node: SQLite + local storage, with tuspy and raw requests."""

from __future__ import annotations

import base64
import hashlib
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import ServerProcess, db_file_count, make_server
from tests.support.tus import TUS, creation_headers, fields_for, uploader

CHUNK = 256 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = make_server(
        tmp_path_factory.mktemp("updown"), extra_env={"UPDOWN_UPLOADS__PART_SIZE": str(CHUNK // 2)}
    ).start()
    yield srv
    srv.stop()


def _parts(srv: ServerProcess) -> list[str]:
    return [o for o in srv.objects() if o.startswith("uploads/")]


def _create(srv: ServerProcess, data: bytes, **over: str) -> str:
    fields = fields_for(data, **over)
    with srv.http() as http:
        r = http.post("/v1/uploads", headers=creation_headers(srv, fields))
    assert r.status_code == 201, r.text
    assert r.headers["upload-offset"] == "0" and r.headers["upload-expires"].endswith("GMT")
    assert "?" not in r.headers["location"]
    return r.headers["location"]


def _patch(http: httpx.Client, url: str, offset: int, body: bytes, **headers: str) -> httpx.Response:
    return http.patch(
        url,
        content=body,
        headers={**TUS, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream", **headers},
    )


def test_options_advertises_the_extensions(server: ServerProcess) -> None:
    with server.http() as http:
        r = http.options("/v1/uploads")
    assert r.status_code == 204
    assert r.headers["tus-version"] == "1.0.0"
    assert set(r.headers["tus-extension"].split(",")) == {
        "creation",
        "creation-with-upload",
        "termination",
        "checksum",
        "expiration",
    }
    assert set(r.headers["tus-checksum-algorithm"].split(",")) == {"md5", "sha1", "sha256"}


def test_tuspy_upload_publish_download(server: ServerProcess, tmp_path: Path) -> None:
    data = os.urandom(3 * CHUNK + 1234)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    fields = fields_for(data, package="tusapp")
    up = uploader(server, path, fields, CHUNK, upload_checksum=True)
    up.upload()
    with server.http() as http:
        r = http.head(up.url.removeprefix(server.base_url), headers=TUS)
        assert r.headers["upload-offset"] == str(len(data))
        file_id = r.headers["updown-file-id"]
    with server.client() as c:
        record = c.info(file_id)
        assert record["sha256"] == hashlib.sha256(data).hexdigest()
        assert record["state"] == "unpublished"
        published = c.publish(file_id)  # SHA-1/SHA-512 were completed from the assembled object by now
        assert published["sha1"] == hashlib.sha1(data).hexdigest()
        assert published["sha512"] == hashlib.sha512(data).hexdigest()
    with server.http() as http:
        got = http.get("/tusapp/1/big.tar")
    assert got.status_code == 200 and got.content == data
    assert _parts(server) == []


def test_creation_with_upload_and_resume(server: ServerProcess) -> None:
    data = os.urandom(CHUNK + 77)
    fields = fields_for(data, package="withbody")
    headers = {**creation_headers(server, fields), "Content-Type": "application/offset+octet-stream"}
    with server.http() as http:
        r = http.post("/v1/uploads", headers=headers, content=data[:1000])
        assert r.status_code == 201, r.text
        assert r.headers["upload-offset"] == "1000"
        url = r.headers["location"]
        assert _patch(http, url, 999, data[999:]).status_code == 409  # offset mismatch
        assert http.head(url, headers=TUS).headers["upload-offset"] == "1000"
        r = _patch(http, url, 1000, data[1000:])
        assert r.status_code == 204, r.text
        assert r.headers["upload-offset"] == str(len(data))
        assert r.headers["updown-file-id"]
        # Termination of a finished upload is refused; more bytes too.
        assert http.delete(url, headers=TUS).status_code == 409
        assert _patch(http, url, len(data), b"x").status_code in (409, 413)
    assert _parts(server) == []


def test_bad_input(server: ServerProcess) -> None:
    data = os.urandom(CHUNK)
    url = _create(server, data, package="bad")
    files_before = db_file_count(server)
    with server.http() as http:
        # Tampered URL: signature, session id, expiry.
        head, sid, expires, kid, sig = url.rsplit("/", 4)
        tampered = [
            f"{head}/{sid}/{expires}/{kid}/{'0' * 64}",
            f"{head}/{'a' * 32}/{expires}/{kid}/{sig}",
            f"{head}/{sid}/{int(expires) + 1}/{kid}/{sig}",
            f"{head}/{sid}/{expires}/store-old/{sig}",
        ]
        for bad in tampered:
            assert http.head(bad, headers=TUS).status_code == 404
            assert _patch(http, bad, 0, data).status_code == 404
        # Checksum mismatch on a chunk: 460, nothing kept.
        wrong = base64.b64encode(hashlib.sha1(b"other").digest()).decode()
        r = _patch(http, url, 0, data[:1000], **{"Upload-Checksum": f"sha1 {wrong}"})
        assert r.status_code == 460, r.text
        assert http.head(url, headers=TUS).headers["upload-offset"] == "0"
        assert _parts(server) == []
        good = base64.b64encode(hashlib.sha256(data[:1000]).digest()).decode()
        r = _patch(http, url, 0, data[:1000], **{"Upload-Checksum": f"sha256 {good}"})
        assert r.status_code == 204
        # More bytes than Upload-Length.
        r = _patch(http, url, 1000, data[1000:] + b"extra")
        assert r.status_code == 413
        assert http.head(url, headers=TUS).headers["upload-offset"] == "1000"
        # Missing Tus-Resumable.
        assert http.head(url).status_code == 412
        # Termination removes the session and its parts.
        assert http.delete(url, headers=TUS).status_code == 204
        assert http.head(url, headers=TUS).status_code == 404
    assert _parts(server) == []
    assert db_file_count(server) == files_before


def test_creation_needs_a_valid_signature(server: ServerProcess) -> None:
    data = os.urandom(100)
    fields = fields_for(data, package="unsigned")
    headers = creation_headers(server, fields)
    with server.http() as http:
        assert (
            http.post("/v1/uploads", headers={k: v for k, v in headers.items() if k != "Authorization"}).status_code
            == 401
        )
        forged = {**headers, "Upload-Metadata": headers["Upload-Metadata"].replace("YmFk", "eHh4")}
        forged["Upload-Metadata"] = forged["Upload-Metadata"].replace(
            base64.b64encode(b"unsigned").decode(), base64.b64encode(b"other").decode()
        )
        assert http.post("/v1/uploads", headers=forged).status_code == 401
        assert http.post("/v1/uploads", headers={**headers, "Upload-Length": "101"}).status_code == 400
        headers = creation_headers(server, fields_for(data, package="unsigned"))
        assert http.post("/v1/uploads", headers=headers).status_code == 201
        assert http.post("/v1/uploads", headers=headers).status_code == 401  # replayed nonce


def test_mismatch_discards_the_session(server: ServerProcess) -> None:
    data = os.urandom(CHUNK)
    url = _create(server, data, package="mismatch", sha256="0" * 64)
    files_before = db_file_count(server)
    with server.http() as http:
        r = _patch(http, url, 0, data)
        assert r.status_code == 400 and r.json()["error"]["code"] == "sha256_mismatch"
        assert http.head(url, headers=TUS).status_code == 404
    assert _parts(server) == []
    assert db_file_count(server) == files_before
    assert not [o for o in server.objects() if o.startswith("sha256/") and o.endswith(hashlib.sha256(data).hexdigest())]


def test_expired_sessions_are_purged(tmp_path: Path) -> None:
    srv = make_server(tmp_path, extra_env={"UPDOWN_UPLOADS__EXPIRY": "60"}).start()
    try:
        data = os.urandom(1000)
        url = _create(srv, data, package="stale")
        with srv.http() as http:
            assert _patch(http, url, 0, data[:500]).status_code == 204
        assert len(_parts(srv)) == 1
        with sqlite3.connect(srv.data_dir / "updown.db") as conn:
            conn.execute("UPDATE upload_sessions SET expires_at = '2000-01-01 00:00:00.000000'")
        env = {**os.environ, **srv.env}
        out = subprocess.run(
            [sys.executable, "-m", "updown_app", "purge-uploads"], env=env, capture_output=True, check=True, text=True
        ).stdout
        assert '"purged_sessions": 1' in out and '"purged_bytes": 500' in out
        assert _parts(srv) == []
        with srv.http() as http:
            assert http.head(url, headers=TUS).status_code == 404
            metrics = http.get("/metrics").text
        assert "updown_upload_sessions_live" in metrics
    finally:
        srv.stop()


def test_expired_url_is_refused(server: ServerProcess) -> None:
    data = os.urandom(10)
    url = _create(server, data, package="old")
    _head, sid, _expires, kid, _sig = url.rsplit("/", 4)
    from updown_app.auth import upload_urls

    past = int(time.time()) - 10
    old = upload_urls.upload_path(server.keys[kid].encode(), sid, past, kid)
    with server.http() as http:
        assert http.head(old, headers=TUS).status_code == 410


def test_concurrent_patches_one_wins(server: ServerProcess) -> None:
    import threading

    data = os.urandom(CHUNK)
    url = _create(server, data, package="race")
    started = threading.Event()
    release = threading.Event()
    result: dict[str, int] = {}

    def slow_body() -> Iterator[bytes]:
        yield data[:1000]
        started.set()
        release.wait(10)
        yield data[1000:]

    def first_streaming() -> None:
        with server.http() as http:
            headers = {**TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
            headers["Content-Length"] = str(len(data))
            result["first"] = http.patch(url, content=slow_body(), headers=headers).status_code

    t = threading.Thread(target=first_streaming)
    t.start()
    assert started.wait(10)
    time.sleep(0.3)
    with server.http() as http:
        second = _patch(http, url, 0, data)
    release.set()
    t.join(20)
    assert second.status_code == 409
    assert result["first"] == 204
    with server.http() as http:
        r = http.head(url, headers=TUS)
    assert r.headers["upload-offset"] == str(len(data)) and r.headers["updown-file-id"]
    assert _parts(server) == []


def test_empty_file_is_complete_at_creation(server: ServerProcess) -> None:
    fields = fields_for(b"", package="empty")
    with server.http() as http:
        r = http.post("/v1/uploads", headers=creation_headers(server, fields))
        assert r.status_code == 201, r.text
        assert r.headers["upload-offset"] == "0" and r.headers["updown-file-id"]
