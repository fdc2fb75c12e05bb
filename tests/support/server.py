"""Run a real ``updown serve`` process on a free loopback port and talk to it."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from updown_app.client import UpdownClient
from updown_app.core import signing

KEY_ID = "store-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    data_dir: Path
    env: dict[str, str]
    port: int
    http_port: int | None
    tls: bool
    keys: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.data_dir / "server.log"

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://localhost:{self.port}"

    @property
    def cert(self) -> Path:
        return self.data_dir / "tls" / "cert.pem"

    @property
    def verify(self) -> ssl.SSLContext | bool:
        return ssl.create_default_context(cafile=str(self.cert)) if self.tls else False

    def start(self, timeout: float = 30.0, *, ready: bool = True) -> ServerProcess:
        """Start and wait until /readyz answers 200 (``ready=False``: answers at all, e.g. 503 with its store
        unusable)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "updown_app", "serve"],
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"updown exited early:\n{self.log()}")
            try:
                # The certificate may not exist before the first start has made it.
                r = httpx.get(f"{self.base_url}/readyz", verify=False, timeout=2)
                if r.status_code == 200 or not ready:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"updown did not become ready:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # Clients -------------------------------------------------------------------------------------------------------

    def client(self, key_id: str = KEY_ID) -> UpdownClient:
        verify = str(self.cert) if self.tls else False
        return UpdownClient(self.base_url, key_id=key_id, secret=self.keys[key_id].encode(), verify=verify)

    def http(self, host: str | None = None, **kw: Any) -> httpx.Client:
        headers = {"host": host} if host else {}
        if not self.tls:
            headers["x-forwarded-proto"] = "https"
        return httpx.Client(base_url=self.base_url, verify=self.verify, headers=headers, timeout=30, **kw)

    def sign(self, method: str, path: str, fields: Mapping[str, str], key_id: str = KEY_ID) -> str:
        return signing.authorization_header(key_id, self.keys[key_id].encode(), method, path, fields)

    def objects(self) -> list[str]:
        """Every file in the local object store, partial writes included."""
        root = self.data_dir / "objects"
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def make_server(
    tmp: Path,
    *,
    tls: bool = True,
    database_url: str | None = None,
    extra_env: Mapping[str, str] | None = None,
    keys: Mapping[str, str] | None = None,
) -> ServerProcess:
    keys = dict(keys or {KEY_ID: secrets.token_urlsafe(32), "store-old": secrets.token_urlsafe(32)})
    port = free_port()
    http_port = free_port() if tls else None
    env = {
        "UPDOWN_DATA_DIR": str(tmp),
        "UPDOWN_PORT": str(port),
        "UPDOWN_TLS": "true" if tls else "false",
        "UPDOWN_HMAC_KEYS": json.dumps(keys),
        "UPDOWN_PUBLIC_HOST": "localhost",
        "UPDOWN_PRIVATE_HOST": "private.localhost",
        "UPDOWN_MAX_UPLOAD_SIZE": str(64 * 1024 * 1024),
        "UPDOWN_LOG_LEVEL": "info",
    }
    if http_port:
        env["UPDOWN_HTTP_PORT"] = str(http_port)
    if not tls:
        env["UPDOWN_TRUSTED_PROXIES"] = '["127.0.0.1/32"]'
    if database_url:
        env["UPDOWN_DATABASE_URL"] = database_url
    env.update(extra_env or {})
    return ServerProcess(tmp, env, port, http_port, tls, keys)


def db_file_count(srv: ServerProcess) -> int:
    """Rows in the files table of a single-node server's SQLite database."""
    import sqlite3

    with sqlite3.connect(srv.data_dir / "updown.db") as conn:
        return int(conn.execute("SELECT count(*) FROM files").fetchone()[0])


def raw_connect(srv: ServerProcess, rcvbuf: int | None = None, timeout: float = 10.0) -> socket.socket:
    """A plain TCP connection to the server's main port (``rcvbuf``: a small receive buffer, for slow readers)."""
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", srv.port))
    return sock


def read_response(sock: socket.socket) -> tuple[str, dict[str, str], bytes]:
    """One HTTP/1.1 response (status line, headers, body by Content-Length) from a raw socket."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed after {buf!r}")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed in the body")
        rest += chunk
    sock_buffer = rest[length:]
    if sock_buffer:
        raise AssertionError("read_response got more than one response; use read_responses")
    return lines[0], headers, rest[:length]
