"""RFC 9112 on the single node: strict Host (duplicate or missing: 400), the 308 built from the configured
hostnames only, JSON errors down to the parser's own 400, /metrics only to allowed addresses."""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import ServerProcess, make_server, read_response


def raw(srv: ServerProcess, request: bytes, *, tls: bool = True) -> tuple[str, dict[str, str], bytes]:
    """One request as bytes on a fresh connection, to the HTTPS port or (tls=False) the redirect listener."""
    port = srv.port if tls else srv.http_port
    assert port is not None
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        if tls:
            ctx = ssl.create_default_context(cafile=str(srv.cert))
            with ctx.wrap_socket(sock, server_hostname="localhost") as tls_sock:
                tls_sock.sendall(request)
                return read_response(tls_sock)
        sock.sendall(request)
        return read_response(sock)


def error_code(answer: tuple[str, dict[str, str], bytes]) -> str:
    _, headers, body = answer
    assert headers["content-type"] == "application/json", answer
    return str(json.loads(body)["error"]["code"])


@pytest.mark.parametrize("tls", [True, False], ids=["https", "redirect-listener"])
def test_duplicate_host_is_400(server: ServerProcess, tls: bool) -> None:
    answer = raw(server, b"GET /pkg/1/a.bin HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n\r\n", tls=tls)
    assert answer[0].startswith("HTTP/1.1 400") and error_code(answer) == "duplicate_host"


@pytest.mark.parametrize("tls", [True, False], ids=["https", "redirect-listener"])
def test_missing_host_is_400_in_http_1_1_only(server: ServerProcess, tls: bool) -> None:
    answer = raw(server, b"GET /pkg/1/a.bin HTTP/1.1\r\nConnection: close\r\n\r\n", tls=tls)
    assert answer[0].startswith("HTTP/1.1 400") and error_code(answer) == "missing_host"
    old = raw(server, b"GET /healthz HTTP/1.0\r\n\r\n", tls=True)  # HTTP/1.0 may leave it out
    assert " 200 " in old[0]


def test_redirect_never_echoes_the_clients_host(server: ServerProcess) -> None:
    base = f"http://127.0.0.1:{server.http_port}"
    for host, expected in [
        ("evil.example", "localhost"),
        ("evil.example:8080", "localhost"),
        ("LOCALHOST:8080", "localhost"),
        ("private.localhost", "private.localhost"),
        ("127.0.0.1", "localhost"),
    ]:
        r = httpx.get(f"{base}/pkg/1/a.snap?x=1", headers={"host": host})
        assert r.status_code == 308, host
        assert r.headers["location"] == f"https://{expected}:{server.port}/pkg/1/a.snap?x=1", host
    # The path cannot change the authority either: it is appended after the configured host and port.
    _, headers, _ = raw(server, b"GET //evil.example/x HTTP/1.1\r\nHost: evil.example\r\n\r\n", tls=False)
    assert headers["location"] == f"https://localhost:{server.port}//evil.example/x"


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nBad Header Name: x\r\n\r\n",
        b"POST /v1/files HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
    ids=["request-line", "header-name", "chunk-size"],
)
def test_parser_errors_are_json(server: ServerProcess, request_bytes: bytes) -> None:
    answer = raw(server, request_bytes)
    assert answer[0].startswith("HTTP/1.1 400") and error_code(answer) == "bad_request"


def test_metrics_served_to_loopback_by_default(server: ServerProcess) -> None:
    with server.http() as http:
        r = http.get("/metrics")
        assert r.status_code == 200 and "updown_http_requests_total" in r.text
        assert http.get("/metrics", headers={"host": "private.localhost"}).status_code == 200


@pytest.fixture(scope="module")
def restricted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Metrics allowed to one other network only; behind a trusted proxy on loopback (tls off)."""
    env = {"UPDOWN_METRICS_ALLOWED": '["192.0.2.0/24"]'}
    srv = make_server(Path(tmp_path_factory.mktemp("restricted")), tls=False, extra_env=env).start()
    yield srv
    srv.stop()


def test_metrics_refused_to_other_addresses(restricted: ServerProcess) -> None:
    with restricted.http() as http:
        r = http.get("/metrics")  # from loopback, not allowed here
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        assert "updown_" not in r.text
        # Through the trusted proxy, the forwarded client address decides.
        assert http.get("/metrics", headers={"x-forwarded-for": "192.0.2.9"}).status_code == 200
        spoofed = http.get("/metrics", headers={"x-forwarded-for": "192.0.2.9, 198.51.100.7"})
        assert spoofed.status_code == 403


def test_metrics_refused_through_a_proxy_by_default(tmp_path: Path) -> None:
    srv = make_server(tmp_path, tls=False).start()
    try:
        with srv.http() as http:
            assert http.get("/metrics").status_code == 200
            assert http.get("/metrics", headers={"x-forwarded-for": "198.51.100.7"}).status_code == 403
    finally:
        srv.stop()
