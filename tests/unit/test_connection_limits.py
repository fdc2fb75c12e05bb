"""The single node is safe to expose: what one client connection may hold of a real ``updown serve`` is bounded —
head size and field count (431), the time to send a head (408, slowloris), a stalled upload body (408, nothing
left behind), a client that reads nothing, a TLS handshake never started, and connections per process (503)."""

from __future__ import annotations

import json
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import forms
from tests.support.server import KEY_ID, ServerProcess, db_file_count, make_server, raw_connect, read_response

TIMEOUT = 2.0  # header, body, send and handshake timeouts of the server under test
MARGIN = 1.5  # scheduling slack on a loaded 2-core machine


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {
        "UPDOWN_LIMITS__HEADER_TIMEOUT": str(TIMEOUT),
        "UPDOWN_LIMITS__BODY_TIMEOUT": str(TIMEOUT),
        "UPDOWN_LIMITS__SEND_TIMEOUT": str(TIMEOUT),
        "UPDOWN_LIMITS__TLS_HANDSHAKE_TIMEOUT": str(TIMEOUT),
        "UPDOWN_LIMITS__MAX_HEADER_BYTES": str(16 * 1024),
        "UPDOWN_LIMITS__MAX_HEADER_COUNT": "50",
    }
    server = make_server(tmp_path_factory.mktemp("limits"), extra_env=env).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def published(srv: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, bytes]:
    """A published 16 MiB public file: bigger than every socket buffer between the server and a client."""
    data = bytes(range(256)) * (64 * 1024)
    path = tmp_path_factory.mktemp("files") / "big.bin"
    path.write_bytes(data)
    with srv.client() as c:
        record = c.upload(path, package="limits", revision="1", visibility="public")
        c.publish(record["id"])
    return "/limits/1/big.bin", data


def tls_connect(srv: ServerProcess, rcvbuf: int | None = None) -> ssl.SSLSocket:
    sock = raw_connect(srv, rcvbuf)
    ctx = ssl.create_default_context(cafile=str(srv.cert))
    return ctx.wrap_socket(sock, server_hostname="localhost")


def drain(sock: socket.socket, limit: float) -> tuple[bytes, float | None]:
    """Everything the server sends until it closes (and when), or until ``limit`` seconds passed (None)."""
    start, out = time.monotonic(), b""
    sock.settimeout(0.2)
    while time.monotonic() - start < limit:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except (ConnectionError, ssl.SSLError):
            return out, time.monotonic() - start
        if not chunk:
            return out, time.monotonic() - start
        out += chunk
    return out, None


def answer_code(raw: bytes) -> tuple[int, str]:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), raw[:300]
    return int(head.split(b" ", 2)[1]), json.loads(body)["error"]["code"]


def rss(srv: ServerProcess) -> int:
    assert srv.proc is not None
    status = Path(f"/proc/{srv.proc.pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) * 1024


def test_a_huge_header_is_refused_without_the_process_growing(srv: ServerProcess) -> None:
    before = rss(srv)
    socks, answers = [], []
    for _ in range(8):  # eight unfinished 4 MiB headers: 32 MiB if they were buffered
        sock = tls_connect(srv)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: ")
        try:
            for _ in range(64):
                sock.sendall(b"a" * 65536)
        except (ConnectionError, ssl.SSLError):
            pass  # refused and closed part way: that is the point
        socks.append(sock)
    grown = rss(srv) - before
    for sock in socks:
        answers.append(drain(sock, 5)[0])
        sock.close()
    assert all(answer_code(a) == (431, "headers_too_large") for a in answers), answers[0][:300]
    assert grown < 8 * 1024 * 1024, f"the server grew by {grown / 2**20:.1f} MiB for 8 refused headers"


def test_too_many_header_fields_is_431(srv: ServerProcess) -> None:
    with tls_connect(srv) as sock:
        fields = b"".join(b"X-%d: y\r\n" % i for i in range(60))
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n" + fields + b"\r\n")
        assert answer_code(drain(sock, 5)[0]) == (431, "headers_too_large")
    with tls_connect(srv) as sock:  # a usual request with a long token still passes
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer " + b"t" * 8000 + b"\r\n\r\n")
        assert read_response(sock)[0].startswith("HTTP/1.1 200")


def test_slowloris_connections_are_closed_at_the_header_deadline_while_downloads_go_on(
    srv: ServerProcess, published: tuple[str, bytes]
) -> None:
    path, data = published
    results: list[tuple[int, float, bool]] = []
    stop = threading.Event()

    def download() -> None:
        with httpx.Client(base_url=srv.base_url, verify=srv.verify, timeout=10) as http:
            while not stop.is_set():
                t = time.monotonic()
                r = http.get(path, headers={"range": "bytes=0-1048575"})
                results.append((r.status_code, time.monotonic() - t, r.content == data[: 1 << 20]))
                time.sleep(0.05)

    downloader = threading.Thread(target=download)
    downloader.start()
    try:
        opened: dict[ssl.SSLSocket, float] = {}
        refused: dict[ssl.SSLSocket, float] = {}  # when the answer or the close came
        closed: dict[ssl.SSLSocket, float] = {}
        answered: list[bytes] = []
        deadline = time.monotonic() + 30
        next_drip = time.monotonic()
        while (len(opened) < 300 or len(closed) < len(opened)) and time.monotonic() < deadline:
            for _ in range(min(10, 300 - len(opened))):  # opened a few at a time, so closes are seen when they happen
                sock = tls_connect(srv)
                sock.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: localhost\r\n")
                sock.setblocking(False)  # a readable socket may hold only TLS session tickets, not a record to return
                opened[sock] = time.monotonic()
            open_socks = [s for s in opened if s not in closed]
            if time.monotonic() >= next_drip:  # a header field every 0.5 s keeps each one "alive"
                for s in open_socks:
                    if s in refused:  # answered: writing now would wait on the TLS shutdown
                        continue
                    try:
                        s.send(b"X-a: b\r\n")
                    except (ConnectionError, ssl.SSLError, BlockingIOError):
                        pass
                next_drip = time.monotonic() + 0.5
            readable, _, _ = select.select(open_socks, [], [], 0.05)
            for s in readable:
                try:
                    chunk = s.recv(65536)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    continue
                except (ConnectionError, ssl.SSLError):
                    chunk = b""
                if chunk:  # the 408, at the deadline; the close follows once the TLS shutdown is over
                    answered.append(chunk)
                    refused.setdefault(s, time.monotonic())
                else:
                    refused.setdefault(s, time.monotonic())
                    closed[s] = time.monotonic()
        late = [refused.get(s, time.monotonic()) - t for s, t in opened.items()]
        for s in opened:
            s.close()
    finally:
        stop.set()
        downloader.join()
    assert len(closed) == 300, f"{300 - len(closed)} of {len(opened)} slowloris connections still open"
    assert max(late) < TIMEOUT + MARGIN, f"the last one was closed after {max(late):.1f} s"
    assert answered and all(answer_code(a) == (408, "request_timeout") for a in answered)
    assert results and all(status == 206 and ok for status, _, ok in results), results[:3]
    assert max(t for _, t, _ in results) < TIMEOUT, "a download waited behind the slowloris connections"
    assert len(results) >= 5


def test_a_connection_that_sends_nothing_is_closed(srv: ServerProcess) -> None:
    with tls_connect(srv) as sock:
        out, after = drain(sock, TIMEOUT + MARGIN + 2)
    assert out == b"" and after is not None and after < TIMEOUT + MARGIN


def test_a_tls_handshake_never_started_is_closed(srv: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        out, after = drain(sock, TIMEOUT + MARGIN + 2)
    assert out == b"" and after is not None and after < TIMEOUT + MARGIN


def test_a_stalled_upload_body_is_408_and_leaves_nothing(srv: ServerProcess) -> None:
    data = b"x" * (1 << 20)
    fields = forms.upload_fields(data, package="stall", filename="stall.bin")
    body, ctype = forms.multipart(forms.form(fields, data))
    headers = forms.signed_headers(KEY_ID, srv.keys[KEY_ID], fields, ctype)
    objects, rows = srv.objects(), db_file_count(srv)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    with tls_connect(srv) as sock:
        sock.sendall(
            f"POST /v1/files HTTP/1.1\r\nHost: localhost\r\n{head}Content-Length: {len(body)}\r\n\r\n".encode()
            + body[: len(body) // 2]
        )
        out, after = drain(sock, TIMEOUT + MARGIN + 3)
    assert answer_code(out) == (408, "request_timeout") and after is not None
    time.sleep(0.5)  # the app's undo runs once it sees the disconnect
    assert srv.objects() == objects and db_file_count(srv) == rows


def test_a_client_that_reads_nothing_is_closed(srv: ServerProcess, published: tuple[str, bytes]) -> None:
    path, data = published
    with tls_connect(srv, rcvbuf=64 * 1024) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        time.sleep(TIMEOUT + MARGIN)  # reads nothing
        out, after = drain(sock, 10)
    assert out.startswith(b"HTTP/1.1 200") and after is not None
    assert len(out) < len(data), "the whole file was sent to a client that read nothing"


def test_connections_beyond_the_cap_get_a_json_503(tmp_path: Path) -> None:
    srv = make_server(tmp_path, extra_env={"UPDOWN_LIMITS__MAX_CONNECTIONS": "16"}).start()
    try:
        held = [tls_connect(srv) for _ in range(16)]
        with tls_connect(srv) as extra:
            out, _ = drain(extra, 5)
        assert answer_code(out) == (503, "too_many_connections") and b"retry-after: 5" in out.lower()
        for sock in held[:4]:
            sock.close()
        time.sleep(0.3)
        r = httpx.get(f"{srv.base_url}/healthz", verify=srv.verify)
        assert r.status_code == 200
        for sock in held[4:]:
            sock.close()
    finally:
        srv.stop()
