"""A real ``updown serve`` on the Swift backend while its Swift proxy goes away: in the middle of a download, in the
middle of an upload, and with wrong credentials.

Each test runs its own Swift proxy (``scripts/services/swift.sh proxy PORT``) in front of the shared storage
servers, so it can kill that proxy by PID without disturbing the other tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import need_service
from tests.support.forms import form, multipart, signed_headers, upload_fields
from tests.support.server import KEY_ID, ServerProcess, free_port, make_server
from updown_app.http.handlers.health import READY_CACHE_TTL

BREAKER_COOLDOWN = 1.0  # these apps' (swift_env): after a failed call the store is skipped that long
BREAKER_METRIC = "updown_storage_breaker_opens_total"

MiB = 1024 * 1024
SWIFT_URL = os.environ.get("UPDOWN_TEST_SWIFT_URL")
SWIFT_USER = os.environ.get("UPDOWN_TEST_SWIFT_USER", "test:tester")
SWIFT_KEY = os.environ.get("UPDOWN_TEST_SWIFT_KEY", "testing")
SWIFT_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "services" / "swift.sh"


class SwiftProxy:
    """One more Swift proxy on its own port, started and killed by PID."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"swift-proxy-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(SWIFT_SCRIPT), "proxy", str(self.port)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"swift proxy exited:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/healthcheck", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"swift proxy did not start:\n{self.log_path.read_text()}")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[SwiftProxy]:
    need_service("Swift", SWIFT_URL)
    p = SwiftProxy(tmp_path)
    p.start()
    yield p
    p.kill()


def swift_env(auth_url: str, container: str, **over: str) -> dict[str, str]:
    env = {
        "UPDOWN_STORAGE__BACKEND": "swift",
        "UPDOWN_STORAGE__SWIFT__AUTH": "tempauth",
        "UPDOWN_STORAGE__SWIFT__AUTH_URL": auth_url,
        "UPDOWN_STORAGE__SWIFT__USERNAME": SWIFT_USER,
        "UPDOWN_STORAGE__SWIFT__PASSWORD": SWIFT_KEY,
        "UPDOWN_STORAGE__SWIFT__CONTAINER": container,
        "UPDOWN_STORAGE__SWIFT__SLO_THRESHOLD": str(16 * MiB),
        "UPDOWN_STORAGE__SWIFT__SEGMENT_SIZE": str(8 * MiB),
        "UPDOWN_STORAGE__SWIFT__CONNECT_TIMEOUT": "2",
        "UPDOWN_STORAGE__SWIFT__FIRST_BYTE_TIMEOUT": "10",
        "UPDOWN_STORAGE__SWIFT__IDLE_TIMEOUT": "10",
        "UPDOWN_STORAGE__SWIFT__RETRIES": "2",
        "UPDOWN_STORAGE__SWIFT__RETRY_BACKOFF": "0.1",
        "UPDOWN_STORAGE__SWIFT__BREAKER_COOLDOWN": str(BREAKER_COOLDOWN),
    }
    env.update({f"UPDOWN_STORAGE__SWIFT__{k.upper()}": v for k, v in over.items()})
    return env


@pytest.fixture
def app(proxy: SwiftProxy, tmp_path: Path) -> Iterator[ServerProcess]:
    container = f"failures-{uuid.uuid4().hex[:8]}"
    srv = make_server(tmp_path / "app", extra_env=swift_env(f"{proxy.url}/auth/v1.0", container))
    srv.start()
    yield srv
    srv.stop()


class SwiftAdmin:
    """Looks at the store through the main proxy (never the one being killed)."""

    def __init__(self) -> None:
        url = need_service("Swift", SWIFT_URL)
        r = httpx.get(f"{url}/auth/v1.0", headers={"X-Auth-User": SWIFT_USER, "X-Auth-Key": SWIFT_KEY})
        r.raise_for_status()
        self.token = r.headers["x-auth-token"]
        self.account = f"{url}/v1/{r.headers['x-storage-url'].rsplit('/', 1)[1]}"

    def names(self, container: str, prefix: str = "") -> list[str]:
        r = httpx.get(
            f"{self.account}/{container}",
            params={"format": "json", "prefix": prefix},
            headers={"X-Auth-Token": self.token},
        )
        return [] if r.status_code in (204, 404) else [o["name"] for o in r.json()]


def container_of(srv: ServerProcess) -> str:
    return srv.env["UPDOWN_STORAGE__SWIFT__CONTAINER"]


def upload(srv: ServerProcess, tmp: Path, data: bytes, name: str, publish: bool = True) -> dict[str, Any]:
    path = tmp / name
    path.write_bytes(data)
    with srv.client() as c:
        rec = c.upload(path, package="fail", revision="1")
        if publish:
            rec = c.publish(rec["id"])
    return rec


def assert_503(r: httpx.Response) -> None:
    assert r.status_code == 503, r.text
    assert r.headers.get("retry-after", "").isdigit()
    assert r.json()["error"]["code"] == "storage_unavailable"


# Downloads ---------------------------------------------------------------------------------------------------


def test_download_while_swift_is_down_is_503_then_recovers(
    app: ServerProcess, proxy: SwiftProxy, tmp_path: Path
) -> None:
    data = os.urandom(3 * MiB + 5)
    upload(app, tmp_path, data, "down.bin")
    proxy.kill()
    with app.http(host="localhost") as http:
        started = time.monotonic()
        assert_503(http.get("/fail/1/down.bin"))
        assert_503(http.get("/fail/1/down.bin", headers={"range": "bytes=10-19"}))
        assert time.monotonic() - started < 10  # bounded retries, no hang
        time.sleep(READY_CACHE_TTL)  # readiness answers are reused that long
        ready = http.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["storage"] != "ok"
        proxy.start()
        r = back_within(http, "/fail/1/down.bin", BREAKER_COOLDOWN + 2)
        assert r.status_code == 200 and r.content == data
        time.sleep(READY_CACHE_TTL)
        assert http.get("/readyz").status_code == 200


def back_within(http: httpx.Client, path: str, seconds: float, **kw: Any) -> httpx.Response:
    """The first answer that is not 503: the store is skipped for its breaker's cooldown after it failed."""
    deadline = time.monotonic() + seconds
    while True:
        r = http.get(path, **kw)
        if r.status_code != 503 or time.monotonic() > deadline:
            return r
        time.sleep(0.2)


def test_after_the_store_failed_a_call_requests_get_503_at_once_then_it_is_tried_again(
    proxy: SwiftProxy, tmp_path: Path
) -> None:
    """The breaker: while Swift is down, one request pays the store's retries; the next ones answer 503 in
    milliseconds instead of each waiting as long (a resume sent during an outage, a client retrying)."""
    container = f"failures-{uuid.uuid4().hex[:8]}"
    env = swift_env(f"{proxy.url}/auth/v1.0", container, retries="3", retry_backoff="0.3", breaker_cooldown="3")
    srv = make_server(tmp_path / "app", extra_env=env).start()
    try:
        data = os.urandom(MiB + 3)
        upload(srv, tmp_path, data, "guarded.bin")
        proxy.kill()
        with srv.http(host="localhost") as http:
            started = time.monotonic()
            assert_503(http.get("/fail/1/guarded.bin"))
            first = time.monotonic() - started
            assert first > 1.5, first  # this one tried the store: 0.3 + 0.6 + 1.2 s of backoff
            took = []
            for i in range(5):
                started = time.monotonic()
                assert_503(http.get("/fail/1/guarded.bin", headers={"range": f"bytes={i}-"}))
                took.append(time.monotonic() - started)
            assert max(took) < 0.5, took
            opens = [ln for ln in http.get("/metrics").text.splitlines() if ln.startswith(BREAKER_METRIC)]
            assert opens and float(opens[0].split()[-1]) >= 1, opens
            proxy.start()
            r = back_within(http, "/fail/1/guarded.bin", 3 + 2)  # the cooldown, then one request tries the store
            assert r.status_code == 200 and r.content == data
            assert http.get("/fail/1/guarded.bin", headers={"range": "bytes=5-9"}).content == data[5:10]
    finally:
        srv.stop()


def test_proxy_killed_mid_download(app: ServerProcess, proxy: SwiftProxy, tmp_path: Path) -> None:
    data = os.urandom(48 * MiB)
    upload(app, tmp_path, data, "big.bin")
    received = bytearray()
    with app.http(host="localhost") as http:
        with pytest.raises(httpx.HTTPError):  # the body breaks off: never a complete-looking short file
            with http.stream("GET", "/fail/1/big.bin") as r:
                assert r.status_code == 200
                for piece in r.iter_bytes(256 * 1024):
                    received += piece
                    if len(received) >= 2 * MiB and proxy.proc is not None:
                        proxy.kill()
                        time.sleep(0.2)
        assert 0 < len(received) < len(data)
        assert received == data[: len(received)]
        # While Swift is away, a new request (a resume) is answered 503 + Retry-After at once: the download's
        # failure opened the store's breaker.
        started = time.monotonic()
        assert_503(http.get("/fail/1/big.bin", headers={"range": f"bytes={len(received)}-"}))
        assert time.monotonic() - started < 0.5, time.monotonic() - started
        proxy.start()
        r = back_within(http, "/fail/1/big.bin", BREAKER_COOLDOWN + 2, headers={"range": f"bytes={len(received)}-"})
        assert r.status_code == 206
        assert hashlib.sha256(bytes(received) + r.content).digest() == hashlib.sha256(data).digest()
    assert "broke off" in app.log()  # the store stream was retried before giving up
    # One warning says the download broke off; no error, no traceback (the client saw a truncated body).
    entries = [json.loads(line) for line in app.log().splitlines() if line.startswith("{")]
    assert any(e["message"] == "download broke off: the store failed" for e in entries), entries[-5:]
    assert not [e for e in entries if e["level"] == "error"], [e["message"] for e in entries if e["level"] == "error"]


def test_download_resumes_when_proxy_returns_quickly(tmp_path: Path, proxy: SwiftProxy) -> None:
    """A short outage inside the retry window is invisible to the client: the store stream resumes with Range."""
    container = f"failures-{uuid.uuid4().hex[:8]}"
    env = swift_env(f"{proxy.url}/auth/v1.0", container, retries="6", retry_backoff="0.5")
    srv = make_server(tmp_path / "app", extra_env=env).start()
    try:
        data = os.urandom(48 * MiB)
        upload(srv, tmp_path, data, "resume.bin")
        restarted = threading.Event()
        received = bytearray()
        with srv.http(host="localhost") as http, http.stream("GET", "/fail/1/resume.bin") as r:
            assert r.status_code == 200
            for piece in r.iter_bytes(256 * 1024):
                received += piece
                if len(received) >= 2 * MiB and not restarted.is_set():
                    restarted.set()
                    proxy.kill()
                    proxy.start()
        assert hashlib.sha256(received).digest() == hashlib.sha256(data).digest()
    finally:
        srv.stop()


# Uploads -----------------------------------------------------------------------------------------------------


def _paused_upload(
    srv: ServerProcess, data: bytes, filename: str, pause_at: int, resume: threading.Event, paused: threading.Event
) -> httpx.Response:
    fields = upload_fields(data, package="fail", revision="1", filename=filename)
    body, ctype = multipart(form(fields, data))
    headers = signed_headers(KEY_ID, srv.keys[KEY_ID], fields, ctype)
    headers["content-length"] = str(len(body))

    def content() -> Iterator[bytes]:
        step = 256 * 1024
        for i in range(0, len(body), step):
            if i >= pause_at and not paused.is_set():
                paused.set()
                resume.wait(30)
            yield body[i : i + step]

    with srv.http() as http:
        return http.post("/v1/files", content=content(), headers=headers)


@pytest.mark.parametrize("size", [12 * MiB, 40 * MiB], ids=["plain", "slo"])
def test_proxy_killed_mid_upload(app: ServerProcess, proxy: SwiftProxy, tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    key = f"sha256/{hashlib.sha256(data).hexdigest()[:2]}/{hashlib.sha256(data).hexdigest()}"
    resume, paused = threading.Event(), threading.Event()
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["response"] = _paused_upload(app, data, "up.bin", size - 2 * MiB, resume, paused)
        except Exception as exc:
            result["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    assert paused.wait(30)
    time.sleep(0.5)  # the app has streamed what it got to Swift
    proxy.kill()
    resume.set()
    t.join(60)
    assert "error" not in result, result.get("error")
    assert_503(result["response"])
    # No file record: the same name can be uploaded again once Swift is back (not 409 duplicate).
    proxy.start()
    admin = SwiftAdmin()
    container = container_of(app)
    assert admin.names(container) == []
    deadline = time.monotonic() + 60  # SLO segments of the failed upload are deleted once Swift answers again
    while admin.names(f"{container}_segments") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert admin.names(f"{container}_segments") == []
    time.sleep(BREAKER_COOLDOWN)  # the failed upload opened the store's breaker
    r = _paused_upload(app, data, "up.bin", len(data) * 2, threading.Event(), threading.Event())
    assert r.status_code == 201, r.text
    assert admin.names(container) == [key]


# Credentials -------------------------------------------------------------------------------------------------


def test_wrong_credentials_fail_readiness_with_a_clear_log_line(proxy: SwiftProxy, tmp_path: Path) -> None:
    env = swift_env(f"{proxy.url}/auth/v1.0", f"failures-{uuid.uuid4().hex[:8]}", password="not-the-key")
    srv = make_server(tmp_path / "app", extra_env=env)
    srv.data_dir.mkdir(parents=True)
    with srv.log_path.open("ab") as log:  # started by hand: ServerProcess.start waits for /readyz to pass
        srv.proc = subprocess.Popen(
            [sys.executable, "-m", "updown_app", "serve"],
            env={**os.environ, **srv.env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        status = None
        while time.monotonic() < deadline:
            try:
                with srv.http() as http:
                    started = time.monotonic()
                    r = http.get("/readyz")
                    status = r.status_code
                    assert time.monotonic() - started < 10  # answered, not hung
                    break
            except (httpx.TransportError, FileNotFoundError):  # not listening yet / TLS files not written yet
                assert srv.proc.poll() is None, srv.log()
                time.sleep(0.2)
        assert status == 503
        assert r.json()["checks"]["storage"] == "failed"
        with srv.http(host="localhost") as http:
            assert http.get("/healthz").status_code == 200
        lines = [json.loads(line) for line in srv.log().splitlines() if line.startswith("{")]
        errors = [e["message"] for e in lines if e.get("level") == "error"]
        assert any("swift authentication failed" in m and "refused user" in m and "401" in m for m in errors), errors
        assert not any("not-the-key" in line for line in srv.log().splitlines())
    finally:
        srv.stop()
