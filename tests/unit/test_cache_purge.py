"""Unpublishing purges the frontend caches before it answers; an unreachable unit is retried and reported.

A small HTTP server records the BAN requests a cache unit would get (the real Varnish answering them is in
tests/stack/test_cache_stack.py); this module checks the app's side: what is sent, when, and the retries."""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.support.server import ServerProcess, free_port, make_server
from updown_app.caches.purge import ban_expression


class BanRecorder:
    def __init__(self, port: int = 0) -> None:
        self.bans: list[tuple[float, str, str]] = []  # (time, Host, X-Ban-Url)
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_BAN(self) -> None:
                recorder.bans.append((time.monotonic(), self.headers["Host"], self.headers["X-Ban-Url"]))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_ban_expression_matches_the_path_however_encoded() -> None:
    rx = re.compile(ban_expression("/app+x/1.0~1/my file ü.snap"))
    for url in (
        "/app+x/1.0~1/my file ü.snap",
        "/app%2Bx/1.0%7E1/my%20file%20%C3%BC.snap",
        "/app%2bx/1.0~1/my%20file%20%c3%bc.snap",
        "/app+x/1.0~1/my%20file%20ü.snap?cachebust=1",
    ):
        assert rx.search(url), url
    for url in ("/app+x/1.0~1/my file ü.snapX", "/other/app+x/1.0~1/my file ü.snap", "/appxx/1.0~1/my file ü.snap"):
        assert not rx.search(url), url


@pytest.fixture
def recorder() -> Iterator[BanRecorder]:
    rec = BanRecorder()
    yield rec
    rec.close()


@pytest.fixture
def purging_server(tmp_path: Path, recorder: BanRecorder) -> Iterator[tuple[ServerProcess, int]]:
    dead_port = free_port()  # nothing listens here until the test starts a recorder on it
    srv = make_server(
        tmp_path,
        extra_env={
            "UPDOWN_CACHES__FRONTENDS": json.dumps(
                [f"http://127.0.0.1:{recorder.port}", f"http://127.0.0.1:{dead_port}"]
            ),
            "UPDOWN_CACHES__PURGE_RETRIES": "1",
            "UPDOWN_CACHES__PURGE_TIMEOUT": "0.5",
            "UPDOWN_LOOKUP_CACHE_TTL": "0",
        },
    ).start()
    yield srv, dead_port
    srv.stop()


def metric(srv: ServerProcess, name: str, endpoint: str | None = None) -> float:
    text = httpx.get(f"{srv.base_url}/metrics", verify=srv.verify).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (endpoint is None or f'endpoint="{endpoint}"' in line):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_unpublish_bans_on_every_unit_before_answering_and_retries_the_unreachable(
    purging_server: tuple[ServerProcess, int], recorder: BanRecorder, tmp_path: Path
) -> None:
    srv, dead_port = purging_server
    f = tmp_path / "tool 1.snap"
    f.write_bytes(secrets.token_bytes(1000))
    with srv.client() as client:
        record = client.upload(f, package="tool", revision="7", visibility="public")
        client.publish(record["id"])
        assert recorder.bans == []  # publishing purges nothing
        client.unpublish(record["id"])
        answered = time.monotonic()

    assert len(recorder.bans) == 1
    at, host, expression = recorder.bans[0]
    assert at <= answered and host == "localhost"
    assert re.search(expression, "/tool/7/tool%201.snap") and not re.search(expression, "/tool/7/tool%202.snap")

    dead = f"http://127.0.0.1:{dead_port}"
    assert metric(srv, "updown_cache_purge_failures_total", dead) >= 2  # first try + one retry in the request
    assert metric(srv, "updown_cache_purge_pending") == 1
    assert metric(srv, "updown_cache_purges_total", f"http://127.0.0.1:{recorder.port}") == 1

    late = BanRecorder(dead_port)  # the unit comes back: the background retry reaches it
    try:
        deadline = time.monotonic() + 15
        while not late.bans and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [b[2] for b in late.bans] == [expression]
        assert metric(srv, "updown_cache_purge_pending") == 0
    finally:
        late.close()
    failures = [line for line in srv.log().splitlines() if "cache purge failed" in line]
    assert failures and all(dead in line for line in failures)


def test_units_file_follows_cache_units_joining_and_leaving_without_restart(tmp_path: Path) -> None:
    """The charm rewrites caches.units_file as frontend units come and go; purges follow it at once."""
    first, second = BanRecorder(), BanRecorder()
    units_file = tmp_path / "cache-units.json"
    srv = make_server(tmp_path / "srv", extra_env={"UPDOWN_CACHES__UNITS_FILE": str(units_file)}).start()
    try:
        with srv.client() as client:

            def takedown(name: str) -> None:
                f = tmp_path / name
                f.write_bytes(secrets.token_bytes(100))
                record = client.upload(f, package="units", revision="1", visibility="public")
                client.publish(record["id"])
                client.unpublish(record["id"])

            def bans(recorder: BanRecorder) -> list[str]:
                return [b[2] for b in recorder.bans]

            takedown("a.bin")  # no file yet: no unit to purge, and the unpublish still works
            units_file.write_text(json.dumps({"frontends": [f"http://127.0.0.1:{first.port}"]}))
            time.sleep(1.1)  # looked at again at most once a second
            takedown("b.bin")
            assert len(bans(first)) == 1 and re.search(bans(first)[0], "/units/1/b.bin")
            units_file.write_text(json.dumps({"frontends": [f"http://127.0.0.1:{second.port}"], "backends": {}}))
            time.sleep(1.1)
            takedown("c.bin")
            assert len(bans(first)) == 1 and len(bans(second)) == 1  # the departed unit is no longer purged
            units_file.write_text("{not json")
            time.sleep(1.1)
            takedown("d.bin")  # a broken file keeps the last good units
            assert len(bans(second)) == 2 and "cache units file is invalid" in srv.log()
    finally:
        srv.stop()
        first.close()
        second.close()
