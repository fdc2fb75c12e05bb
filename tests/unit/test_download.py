"""Publishing and downloading through a real HTTPS server: hosts, headers, Range, conditionals, keep-alive."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import ServerProcess, make_server
from updown_app.client import UpdownError

DATA = os.urandom(3 * 1024 * 1024 + 17)  # several storage chunks
SMALL = b"tiny file\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = make_server(tmp_path_factory.mktemp("download")).start()
    yield srv
    srv.stop()


def _upload(
    srv: ServerProcess, tmp: Path, data: bytes, name: str, visibility: str = "public", publish: bool = True
) -> dict[str, Any]:
    path = tmp / name
    path.write_bytes(data)
    with srv.client() as c:
        rec = c.upload(path, package="dl", revision="7", visibility=visibility)
        if publish:
            rec = c.publish(rec["id"])
    return rec


@pytest.fixture(scope="module")
def files(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("files")
    return {
        "big": _upload(server, tmp, DATA, "big.bin"),
        "small": _upload(server, tmp, SMALL, "small.txt"),
        "private": _upload(server, tmp, b"secret bits", "private.bin", visibility="private"),
        "draft": _upload(server, tmp, b"not yet", "draft.bin", publish=False),
    }


def get(srv: ServerProcess, path: str, host: str = "localhost", method: str = "GET", **headers: str) -> httpx.Response:
    with srv.http(host=host) as http:
        return http.request(method, path, headers={k.replace("_", "-"): v for k, v in headers.items()})


def test_full_download_and_headers(server: ServerProcess, files: dict[str, Any]) -> None:
    r = get(server, "/dl/7/big.bin")
    assert r.status_code == 200
    assert r.content == DATA
    sha256 = hashlib.sha256(DATA).digest()
    assert r.headers["etag"] == f'"{sha256.hex()}"'
    assert r.headers["content-length"] == str(len(DATA))
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert r.headers["content-disposition"] == "attachment; filename*=UTF-8''big.bin"
    assert f"sha-256=:{base64.b64encode(sha256).decode()}:" in r.headers["repr-digest"]
    assert f"sha-512=:{base64.b64encode(hashlib.sha512(DATA).digest()).decode()}:" in r.headers["repr-digest"]
    digest = r.headers["digest"]
    assert f"MD5={base64.b64encode(hashlib.md5(DATA).digest()).decode()}" in digest
    assert f"SHA={base64.b64encode(hashlib.sha1(DATA).digest()).decode()}" in digest
    assert "last-modified" in r.headers


def test_head(server: ServerProcess, files: dict[str, Any]) -> None:
    r = get(server, "/dl/7/big.bin", method="HEAD")
    assert r.status_code == 200 and r.content == b""
    assert r.headers["content-length"] == str(len(DATA))
    r = get(server, "/dl/7/big.bin", method="HEAD", range="bytes=10-19")
    assert r.status_code == 206 and r.headers["content-length"] == "10"


@pytest.mark.parametrize(
    ("spec", "start", "end"),
    [
        ("0-0", 0, 0),
        ("100-", 100, len(DATA) - 1),
        ("-500", len(DATA) - 500, len(DATA) - 1),
        ("1048570-2097160", 1048570, 2097160),
        ("5-99999999", 5, len(DATA) - 1),
    ],
)
def test_ranges(server: ServerProcess, files: dict[str, Any], spec: str, start: int, end: int) -> None:
    r = get(server, "/dl/7/big.bin", range=f"bytes={spec}")
    assert r.status_code == 206
    assert r.content == DATA[start : end + 1]
    assert r.headers["content-range"] == f"bytes {start}-{end}/{len(DATA)}"


@pytest.mark.parametrize(
    ("spec", "code"),
    [
        ("bytes=99999999-", "range_not_satisfiable"),
        ("bytes=x-y", "invalid_range"),
        ("bytes=0-10,5-20", "overlapping_ranges"),
        ("bytes=9-1", "invalid_range"),
    ],
)
def test_bad_ranges(server: ServerProcess, files: dict[str, Any], spec: str, code: str) -> None:
    r = get(server, "/dl/7/big.bin", range=spec)
    assert r.status_code == 416
    assert r.headers["content-range"] == f"bytes */{len(DATA)}"
    assert r.json()["error"]["code"] == code


def test_conditionals(server: ServerProcess, files: dict[str, Any]) -> None:
    first = get(server, "/dl/7/small.txt")
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    r = get(server, "/dl/7/small.txt", if_none_match=etag)
    assert r.status_code == 304 and r.content == b"" and r.headers["etag"] == etag
    assert get(server, "/dl/7/small.txt", if_modified_since=modified).status_code == 304
    assert get(server, "/dl/7/small.txt", if_none_match='"nope"').status_code == 200
    assert get(server, "/dl/7/small.txt", range="bytes=0-3", if_range=etag).status_code == 206
    stale = get(server, "/dl/7/small.txt", range="bytes=0-3", if_range='"stale"')
    assert stale.status_code == 200 and stale.content == SMALL


def test_public_host_hides_everything_else(server: ServerProcess, files: dict[str, Any]) -> None:
    missing = get(server, "/dl/7/nothing.bin")
    for path in ("/dl/7/private.bin", "/dl/7/draft.bin", "/dl/8/big.bin"):
        r = get(server, path)
        assert r.status_code == 404
        assert r.json() == missing.json()  # no hint whether it exists


def test_private_host_fails_closed(server: ServerProcess, files: dict[str, Any]) -> None:
    for path in ("/dl/7/private.bin", "/dl/7/big.bin", "/dl/7/nothing.bin"):
        r = get(server, path, host="private.localhost")
        assert r.status_code == 401
        assert r.headers["cache-control"] == "private, no-store"
    assert get(server, "/dl/7/big.bin", host="elsewhere.example").status_code == 404


def test_unpublish_takes_effect_at_once(server: ServerProcess, tmp_path: Path) -> None:
    rec = _upload(server, tmp_path, b"short lived", "flip.bin")
    assert get(server, "/dl/7/flip.bin").status_code == 200
    with server.client() as c:
        assert c.unpublish(rec["id"])["state"] == "unpublished"
        assert c.unpublish(rec["id"])["state"] == "unpublished"  # idempotent
        assert get(server, "/dl/7/flip.bin").status_code == 404
        c.publish(rec["id"])
        assert get(server, "/dl/7/flip.bin").status_code == 200
        history = [(e["action"], e["key_id"]) for e in c.info(rec["id"])["events"]]
    assert history == [
        ("upload", "store-test"),
        ("publish", "store-test"),
        ("unpublish", "store-test"),
        ("publish", "store-test"),
    ]


def test_publish_unknown_id(server: ServerProcess) -> None:
    with server.client() as c:
        with pytest.raises(UpdownError) as err:
            c.publish("0" * 32)
    assert getattr(err.value, "status", None) == 404 and getattr(err.value, "code", None) == "unknown_file"


def test_publish_requires_a_signature(server: ServerProcess, files: dict[str, Any]) -> None:
    with server.http() as http:
        r = http.post(f"/v1/files/{files['draft']['id']}/publish")
    assert r.status_code == 401
    assert get(server, "/dl/7/draft.bin").status_code == 404


def _tls_socket(srv: ServerProcess) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=str(srv.cert))
    raw = socket.create_connection(("127.0.0.1", srv.port))
    return ctx.wrap_socket(raw, server_hostname="localhost")


def _read_all(sock: ssl.SSLSocket, count: int) -> list[tuple[str, dict[str, str], bytes]]:
    """``count`` responses from a keep-alive connection, split by Content-Length."""
    buf = b""
    out = []
    while len(out) < count:
        while b"\r\n\r\n" not in buf:
            buf += sock.recv(65536)
        head, _, buf = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(buf) < length:
            buf += sock.recv(65536)
        out.append((lines[0], headers, buf[:length]))
        buf = buf[length:]
    return out


def test_pipelined_requests_on_one_connection(server: ServerProcess, files: dict[str, Any]) -> None:
    requests = (
        b"GET /dl/7/small.txt HTTP/1.1\r\nHost: localhost\r\n\r\n"
        b"GET /dl/7/big.bin HTTP/1.1\r\nHost: localhost\r\nRange: bytes=0-9\r\n\r\n"
        b"HEAD /dl/7/big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n"
        b"GET /dl/7/missing HTTP/1.1\r\nHost: localhost\r\n\r\n"
        b"GET /dl/7/big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n"
    )
    with _tls_socket(server) as sock:
        sock.sendall(requests)  # all at once: pipelined
        sock.settimeout(20)
        responses = []
        for expect_body in (True, True, False, True, True):
            if expect_body:
                responses += _read_all(sock, 1)
            else:  # HEAD: headers only, whatever Content-Length says
                buf = b""
                while b"\r\n\r\n" not in buf:
                    buf += sock.recv(1)
                responses.append((buf.split(b"\r\n")[0].decode(), {}, b""))
    statuses = [r[0].split(" ")[1] for r in responses]
    assert statuses == ["200", "206", "200", "404", "200"]
    assert responses[0][2] == SMALL
    assert responses[1][2] == DATA[:10]
    assert responses[4][2] == DATA


def test_persistent_connection_serves_many_requests(server: ServerProcess, files: dict[str, Any]) -> None:
    with _tls_socket(server) as sock:
        sock.settimeout(10)
        for i in range(20):
            sock.sendall(f"GET /dl/7/big.bin HTTP/1.1\r\nHost: localhost\r\nRange: bytes={i}-{i + 99}\r\n\r\n".encode())
            ((status, headers, body),) = _read_all(sock, 1)
            assert status.endswith("206 Partial Content") and body == DATA[i : i + 100]
            assert headers.get("connection", "keep-alive") != "close"


def test_tls_downloads_are_streamed_not_sent_from_the_file(server: ServerProcess, files: dict[str, Any]) -> None:
    """sendfile would put plaintext on a TLS connection: over HTTPS the body is streamed (the zero-copy path of
    plain HTTP is test_zerocopy.py), whole and ranged."""
    assert get(server, "/dl/7/big.bin").content == DATA
    r = get(server, "/dl/7/big.bin", range="bytes=1048570-2097160")
    assert r.status_code == 206 and r.content == DATA[1048570:2097161]
    metrics = get(server, "/metrics").text
    assert "updown_zerocopy_sent_bytes_total 0.0" in metrics
    assert 'updown_http_sent_bytes_total{route="/{package}/{revision}/{filename}"}' in metrics
