"""The client comes back after a 503 that says when (Retry-After), as a frontend without a ready app unit or an
app with its store briefly down answers, and stops otherwise. Against a small real HTTP server that answers 503
a given number of times before it answers like the service."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from updown_app.client import UpdownClient, UpdownError


class Flaky(ThreadingHTTPServer):
    """503 (with `retry_after` unless None) for the first `failures` requests, then 201/200 with JSON."""

    def __init__(self, failures: int, retry_after: str | None = "1") -> None:
        self.failures, self.retry_after = failures, retry_after
        self.seen: list[dict[str, Any]] = []
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Flaky

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        self.server.seen.append(
            {"at": time.monotonic(), "path": self.path, "auth": self.headers.get("authorization"), "size": len(body)}
        )
        if len(self.server.seen) <= self.server.failures:
            out = json.dumps({"error": {"code": "unavailable", "message": "retry later"}}).encode()
            self.send_response(503)
            if self.server.retry_after is not None:
                self.send_header("Retry-After", self.server.retry_after)
        else:
            out = json.dumps({"id": "f" * 32, "state": "unpublished"}).encode()
            self.send_response(201 if self.command == "POST" else 200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_POST = do_GET = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def flaky(request: pytest.FixtureRequest) -> Iterator[Flaky]:
    server = Flaky(*request.param)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def client(url: str) -> UpdownClient:
    return UpdownClient(url, key_id="k1", secret=b"s" * 32)


@pytest.mark.parametrize("flaky", [(2, "1")], indirect=True)
def test_upload_retried_after_503_with_retry_after(flaky: Flaky, tmp_path: Path) -> None:
    payload = tmp_path / "a.snap"
    payload.write_bytes(b"x" * 300_000)
    with client(flaky.url) as c:
        record = c.upload(payload, package="a", revision="1")
    assert record["id"] == "f" * 32
    assert len(flaky.seen) == 3
    # the whole body each time, signed afresh (a nonce is good once), and no sooner than Retry-After said
    assert all(s["size"] > 300_000 for s in flaky.seen)
    assert len({s["auth"] for s in flaky.seen}) == 3
    gaps = [b["at"] - a["at"] for a, b in zip(flaky.seen, flaky.seen[1:], strict=False)]
    assert all(g >= 0.95 for g in gaps), gaps


@pytest.mark.parametrize("flaky", [(1, "1")], indirect=True)
def test_signed_requests_retried(flaky: Flaky) -> None:
    with client(flaky.url) as c:
        assert c.publish("f" * 32)["id"] == "f" * 32
    assert [s["path"] for s in flaky.seen] == [f"/v1/files/{'f' * 32}/publish"] * 2


@pytest.mark.parametrize("flaky", [(1, None)], indirect=True)
def test_503_without_retry_after_is_final(flaky: Flaky) -> None:
    with client(flaky.url) as c, pytest.raises(UpdownError) as err:
        c.info("f" * 32)
    assert err.value.status == 503 and len(flaky.seen) == 1


@pytest.mark.parametrize("flaky", [(1, "120")], indirect=True)
def test_retry_after_longer_than_the_client_waits_is_final(flaky: Flaky) -> None:
    start = time.monotonic()
    with client(flaky.url) as c, pytest.raises(UpdownError) as err:
        c.info("f" * 32)
    assert err.value.retry_after == 120 and len(flaky.seen) == 1
    assert time.monotonic() - start < 5


@pytest.mark.parametrize("flaky", [(100, "0")], indirect=True)
def test_retries_are_bounded(flaky: Flaky) -> None:
    with UpdownClient(flaky.url, key_id="k1", secret=b"s" * 32, retries=3) as c, pytest.raises(UpdownError):
        c.info("f" * 32)
    assert len(flaky.seen) == 4
