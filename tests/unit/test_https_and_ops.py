"""HTTPS only, trusted proxies, health, readiness, metrics and logs."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import updown_app
from tests.support.server import KEY_ID, ServerProcess, make_server
from updown_app.client import UpdownError


def test_plain_http_is_redirected_with_308(server: ServerProcess) -> None:
    assert server.http_port is not None
    r = httpx.get(f"http://127.0.0.1:{server.http_port}/pkg/1/a.snap?x=1", headers={"host": "localhost"})
    assert r.status_code == 308
    assert r.headers["location"] == f"https://localhost:{server.port}/pkg/1/a.snap?x=1"
    assert r.json()["error"]["code"] == "https_required"
    bad = httpx.get(f"http://127.0.0.1:{server.http_port}/x", headers={"host": "evil.example/path"})
    assert bad.status_code == 400


def test_https_responses_send_hsts(server: ServerProcess) -> None:
    with server.http() as http:
        assert http.get("/healthz").headers["strict-transport-security"].startswith("max-age=")


def test_health_readiness_and_metrics(server: ServerProcess) -> None:
    with server.http() as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        ready = http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok", "storage": "ok"}
        http.get("/nothing/here/at-all")
        http.post("/v1/files", content=b"x", headers={"content-type": "multipart/form-data; boundary=b"})
        text = http.get("/metrics").text
    assert 'updown_http_requests_total{method="GET",route="/{package}/{revision}/{filename}",status="404"}' in text
    assert 'updown_upload_failures_total{reason="missing_signature"}' in text
    assert "updown_http_sent_bytes_total" in text


def test_metrics_the_dashboards_and_alerts_read(server: ServerProcess) -> None:
    """Downloads by hostname, the readiness of each dependency, the release (a rollout shows two)."""
    with server.http() as http:
        assert http.get("/readyz").status_code == 200
        http.get("/nothing/here/at-all")
        http.get("/nothing/here/at-all", headers={"host": "private.localhost"})
        http.get("/v1/files/" + "0" * 32)  # not a download
        text = http.get("/metrics").text
    assert 'updown_downloads_total{host="public",status="404"}' in text
    assert 'updown_downloads_total{host="private",status="401"}' in text
    assert 'updown_downloads_total{host="other"' not in text
    assert 'updown_readiness_check_ok{check="storage"} 1.0' in text
    assert 'updown_readiness_check_ok{check="database"} 1.0' in text
    assert 'updown_readiness_check_failures_total{check="storage"} 0.0' in text
    assert f'updown_build_info{{version="{updown_app.__version__}"}} 1.0' in text


def test_logs_are_json_and_hold_no_secrets(server: ServerProcess) -> None:
    with server.client() as c:
        with pytest.raises(UpdownError):
            c.info("0" * 32)
    deadline = time.monotonic() + 5
    while True:  # the access log line is written just after the response went out
        log = server.log()
        lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
        if any(entry.get("route") == "/v1/files/{file_id}" for entry in lines) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert any(entry.get("route") == "/v1/files/{file_id}" for entry in lines)
    for secret in server.keys.values():
        assert secret not in log
    assert "nonce=" not in log and "Signature=" not in log


@pytest.fixture
def behind_proxy(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = make_server(tmp_path, tls=False, extra_env={"UPDOWN_TRUSTED_PROXIES": '["127.0.0.0/8"]'})
    srv.start()
    yield srv
    srv.stop()


def test_forwarded_proto_only_from_trusted_proxies(behind_proxy: ServerProcess, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{behind_proxy.port}/healthz"
    # Health stays reachable over plain HTTP for load balancers; everything else needs HTTPS at the proxy.
    assert httpx.get(url).status_code == 200
    r = httpx.get(f"http://127.0.0.1:{behind_proxy.port}/a/b/c", headers={"host": "localhost"})
    assert r.status_code == 308 and r.headers["location"] == "https://localhost/a/b/c"
    ok = httpx.get(
        f"http://127.0.0.1:{behind_proxy.port}/a/b/c",
        headers={"host": "localhost", "x-forwarded-proto": "https"},
    )
    assert ok.status_code == 404  # passed the HTTPS check, then: no such file


def test_untrusted_peer_cannot_claim_https(tmp_path: Path) -> None:
    srv = make_server(tmp_path, tls=False, extra_env={"UPDOWN_TRUSTED_PROXIES": '["10.9.9.9/32"]'}).start()
    try:
        r = httpx.get(f"http://127.0.0.1:{srv.port}/a/b/c", headers={"host": "localhost", "x-forwarded-proto": "https"})
        assert r.status_code == 308
    finally:
        srv.stop()


def test_key_rotation_without_restart_of_clients(tmp_path: Path) -> None:
    """Both key ids work at once; a server configured with only the new one refuses the old."""
    srv = make_server(tmp_path).start()
    try:
        for kid in (KEY_ID, "store-old"):
            with srv.client(kid) as c:
                with pytest.raises(UpdownError) as err:
                    c.info("0" * 32)
                assert getattr(err.value, "status", None) == 404  # authenticated, then unknown id
    finally:
        srv.stop()
    new_only = make_server(tmp_path / "b", keys={KEY_ID: "new-secret-value-0123456789"}).start()
    try:
        with new_only.client() as c:
            with pytest.raises(UpdownError) as err:
                c.info("0" * 32)
            assert getattr(err.value, "status", None) == 404
    finally:
        new_only.stop()
