"""Plain-HTTP downloads from the local store are sent by the kernel (sendfile, the ASGI zero-copy extension of our
protocol): exact bytes for whole files, ranges and HEAD on one kept-alive connection, the same metrics as
streaming, the send timeout for a client that stops reading, and a stored file cut short never becomes wrong
bytes. (TLS downloads are streamed: test_download.py checks they never take this path.)"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import ServerProcess, make_server, raw_connect

TIMEOUT = 2.0  # the server's send timeout
MARGIN = 1.5  # scheduling slack on a loaded 2-core machine
DATA = os.urandom(3 * 1024 * 1024 + 17)
BIG = os.urandom(16 * 1024 * 1024)  # more than every socket buffer between the server and a client
ROUTE = "/{package}/{revision}/{filename}"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = make_server(
        tmp_path_factory.mktemp("zerocopy"), tls=False, extra_env={"UPDOWN_LIMITS__SEND_TIMEOUT": str(TIMEOUT)}
    ).start()
    yield server
    server.stop()


def publish(srv: ServerProcess, tmp: Path, data: bytes, name: str) -> str:
    path = tmp / name
    path.write_bytes(data)
    with srv.client() as c:
        c.publish(c.upload(path, package="zc", revision="1", visibility="public")["id"])
    return f"/zc/1/{name}"


@pytest.fixture(scope="module")
def files(srv: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("files")
    return {"data": publish(srv, tmp, DATA, "data.bin"), "big": publish(srv, tmp, BIG, "big.bin")}


def metric(srv: ServerProcess, name: str, labels: str = "") -> float:
    with srv.http() as http:
        text = http.get("/metrics").text
    pattern = rf"^{re.escape(name)}{re.escape('{' + labels + '}') if labels else ''} (\S+)$"
    found = re.search(pattern, text, re.M)
    return float(found.group(1)) if found else 0.0


def zerocopy_bytes(srv: ServerProcess) -> float:
    return metric(srv, "updown_zerocopy_sent_bytes_total")


def sent_bytes(srv: ServerProcess) -> float:
    return metric(srv, "updown_http_sent_bytes_total", f'route="{ROUTE}"')


def connect(srv: ServerProcess, rcvbuf: int | None = None) -> socket.socket:
    return raw_connect(srv, rcvbuf, timeout=20)


def request(path: str, method: str = "GET", **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost", "X-Forwarded-Proto: https"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_one(sock: socket.socket, buf: bytes, head_only: bool = False) -> tuple[int, dict[str, str], bytes, bytes]:
    """One response from a kept-alive connection: status, headers, body, and what followed it."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {buf[:200]!r}"
        buf += chunk
    head, _, buf = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = 0 if head_only else int(headers.get("content-length", "0"))
    while len(buf) < length:
        chunk = sock.recv(1 << 20)
        assert chunk, "connection closed in the body"
        buf += chunk
    return int(lines[0].split(" ")[1]), headers, buf[:length], buf[length:]


def test_whole_ranged_and_head_responses_are_sent_from_the_file_on_one_connection(
    srv: ServerProcess, files: dict[str, str]
) -> None:
    path, size = files["data"], len(DATA)
    etag = f'"{hashlib.sha256(DATA).hexdigest()}"'
    zc_before, sent_before = zerocopy_bytes(srv), sent_bytes(srv)
    cases = [
        (request(path), 200, DATA, None),
        (request(path, Range="bytes=0-99"), 206, DATA[:100], f"bytes 0-99/{size}"),
        (request(path, Range="bytes=1048570-2097160"), 206, DATA[1048570:2097161], f"bytes 1048570-2097160/{size}"),
        (request(path, Range="bytes=-17"), 206, DATA[-17:], f"bytes {size - 17}-{size - 1}/{size}"),
        (request(path, Range="bytes=3000000-"), 206, DATA[3000000:], f"bytes 3000000-{size - 1}/{size}"),
        (request(path, "HEAD"), 200, b"", None),
        (request(path, If_None_Match=etag), 304, b"", None),
        (request(path, Range="bytes=5-9", If_Range='"other"'), 200, DATA, None),  # If-Range mismatch: all of it
        (request(path), 200, DATA, None),
    ]
    with connect(srv) as sock:
        buf = b""
        for raw, status, body, content_range in cases:
            sock.sendall(raw)
            got_status, headers, got_body, buf = read_one(sock, buf, head_only=raw.startswith(b"HEAD"))
            assert (got_status, headers.get("content-range")) == (status, content_range), raw
            assert got_body == body, f"wrong bytes for {raw!r}"
            assert headers.get("connection") != "close"
            if status != 304:
                assert headers["content-length"] == str(len(body) if body or status != 200 else size)
        assert buf == b""
    body_bytes = sum(len(body) for _, _, body, _ in cases)
    assert zerocopy_bytes(srv) - zc_before == body_bytes, "the bodies did not go through sendfile"
    # The metrics and access log count what they counted when the body was streamed.
    assert sent_bytes(srv) - sent_before == body_bytes


def test_a_client_that_stops_reading_is_closed_by_the_send_timeout(srv: ServerProcess, files: dict[str, str]) -> None:
    before = zerocopy_bytes(srv)
    with connect(srv, rcvbuf=64 * 1024) as sock:
        sock.sendall(request(files["big"]))
        time.sleep(TIMEOUT + MARGIN)  # reads nothing
        sock.settimeout(0.2)
        out, closed = b"", False
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(1 << 20)
            except TimeoutError:
                continue
            except ConnectionError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            out += chunk
    assert out.startswith(b"HTTP/1.1 200") and closed, "the connection was not closed"
    assert len(out) < len(BIG), "the whole file was sent to a client that read nothing"
    assert out.partition(b"\r\n\r\n")[2] == BIG[: len(out.partition(b"\r\n\r\n")[2])]
    assert zerocopy_bytes(srv) > before
    with srv.http() as http:  # the server goes on serving
        assert http.get(files["data"]).content == DATA


def stored_object(srv: ServerProcess, data: bytes) -> Path:
    (key,) = [k for k in srv.objects() if (srv.data_dir / "objects" / k).stat().st_size == len(data)]
    path = srv.data_dir / "objects" / key
    assert path.read_bytes() == data
    return path


def test_a_stored_file_of_the_wrong_size_is_refused(srv: ServerProcess, tmp_path: Path) -> None:
    data = os.urandom(200_000)
    path = publish(srv, tmp_path, data, "shrunk.bin")
    obj = stored_object(srv, data)
    with obj.open("r+b") as f:
        f.truncate(len(data) - 1)
    with srv.http() as http:
        r = http.get(path)
    assert r.status_code == 500 and r.json()["error"]["code"] == "object_missing"


def test_a_stored_file_cut_short_during_the_send_closes_the_connection(srv: ServerProcess, tmp_path: Path) -> None:
    data = os.urandom(12 * 1024 * 1024 + 3)
    path = publish(srv, tmp_path, data, "cut.bin")
    obj = stored_object(srv, data)
    with connect(srv, rcvbuf=64 * 1024) as sock:
        sock.sendall(request(path))
        out = sock.recv(65536)
        with obj.open("r+b") as f:  # the file loses its second half while the response is under way
            f.truncate(6 * 1024 * 1024)
        while chunk := sock.recv(1 << 20):
            out += chunk
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and f"content-length: {len(data)}".encode() in head.lower()
    assert len(body) < len(data), "the response went on past the end of the file"
    assert body == data[: len(body)], "bytes that are not the stored object's were sent"
    with httpx.Client(base_url=srv.base_url, headers={"x-forwarded-proto": "https"}) as http:
        assert http.get("/healthz").status_code == 200
