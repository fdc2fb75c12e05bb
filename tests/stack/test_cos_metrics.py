"""Every metric the charms' dashboards and alert rules read (charms/*/src/grafana_dashboards, .../
prometheus_alert_rules) is in a real scrape of the local stack (scripts/stack.sh) after real traffic: the app
units' /metrics, HAProxy's built-in exporter and the certificate expiry it serves, prometheus-varnish-exporter
and prometheus-nginx-exporter, each on the loopback port the charms' cos-agent scrape jobs name."""

from __future__ import annotations

import os
import re
import secrets
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from tests.conftest import need_service
from tests.cos.queries import referenced_metrics
from updown_app.client import UpdownClient

_SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(?:\{| )", re.M)
_DECLARED = re.compile(r"^# TYPE ([a-zA-Z_:][\w:]*) (\w+)", re.M)

# Counters with a label only an incident gives a value (a backend cache unit failing, a frontend unit unreachable
# during a purge, an upstream fetch): the endpoint declares them from the start (`# TYPE`), the traffic here
# cannot give them a sample without breaking the stack the other tests share.
INCIDENT_ONLY = {
    "updown_read_cache_fallbacks_total",
    "updown_read_cache_breaker_opens_total",
    "updown_cache_purge_failures_total",
    "updown_pull_through_total",
}


@pytest.fixture(scope="module")
def stack() -> dict[str, str]:
    need_service("the local stack (scripts/stack.sh)", os.environ.get("UPDOWN_TEST_STACK_METRICS"))
    return {
        k.removeprefix("UPDOWN_TEST_STACK_"): v for k, v in os.environ.items() if k.startswith("UPDOWN_TEST_STACK_")
    }


@pytest.fixture(scope="module")
def http(stack: dict[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(verify=ssl.create_default_context(cafile=stack["CA"]), timeout=60) as client:
        yield client


def traffic(stack: dict[str, str], http: httpx.Client, directory: Path) -> None:
    """What users do: uploads (one refused), downloads through every frontend (misses, then hits), a private
    download without a token, a takedown (purges and bans on every frontend unit)."""
    frontends = stack["FRONTENDS"].split(",")
    with UpdownClient(frontends[0], key_id=stack["KEY_ID"], secret=stack["KEY"].encode(), verify=stack["CA"]) as c:
        package = "cos" + secrets.token_hex(4)
        records = []
        for i in range(6):
            f = directory / f"f{i}.deb"
            f.write_bytes(secrets.token_bytes(4096 + i))
            records.append(c.upload(f, package=package, revision="1", visibility="public"))
            c.publish(records[-1]["id"])
        for frontend in [*frontends, *frontends]:
            for record in records:
                assert http.get(frontend + record["path"]).status_code == 200
        assert http.get(frontends[0] + "/" + package + "/1/missing.deb").status_code == 404
        private = http.get(frontends[1] + records[0]["path"], headers={"Host": "private.localhost"})
        assert private.status_code in (401, 403, 404)
        refused = http.post(frontends[0] + "/v1/files", content=b"x", headers={"content-type": "multipart/form-data"})
        assert refused.status_code >= 400
        c.unpublish(records[0]["id"])


@pytest.fixture(scope="module")
def scrapes(stack: dict[str, str], http: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Every endpoint's exposition, after the traffic (and one health-check round of HAProxy and Varnish)."""
    traffic(stack, http, tmp_path_factory.mktemp("cos-traffic"))
    time.sleep(2)
    out = {}
    for item in stack["METRICS"].split(","):
        name, url = item.split("=", 1)
        r = httpx.get(url, timeout=10)
        assert r.status_code == 200, (name, url, r.status_code)
        out[name] = r.text
    return out


def test_every_tier_is_scraped(scrapes: dict[str, str]) -> None:
    kinds = {re.sub(r"\d+$", "", name) for name in scrapes}
    assert kinds == {"app", "haproxy", "haproxy-tls", "varnish", "nginx"}
    for name, text in scrapes.items():
        assert _SAMPLE.search(text), f"{name} answered no samples"


def test_every_metric_of_every_panel_and_alert_is_scraped(scrapes: dict[str, str]) -> None:
    text = "\n".join(scrapes.values())
    sampled = set(_SAMPLE.findall(text))
    declared = {name for name, _kind in _DECLARED.findall(text)}
    histograms = {name for name, kind in _DECLARED.findall(text) if kind == "histogram"}
    declared |= {f"{h}_bucket" for h in histograms}
    wanted = referenced_metrics()
    assert len(wanted) > 40
    missing = {name: sorted(where) for name, where in wanted.items() if name not in declared and name not in sampled}
    assert not missing, f"read by a panel or an alert but in no scrape: {missing}"
    unsampled = {name: sorted(where) for name, where in wanted.items() if name not in sampled}
    assert set(unsampled) <= INCIDENT_ONLY, f"declared but without a sample after the traffic: {unsampled}"


def test_the_traffic_is_what_the_metrics_show(scrapes: dict[str, str]) -> None:
    app = scrapes["app0"] + scrapes["app1"]
    assert re.search(r'^updown_downloads_total\{host="public",status="200"\} [1-9]', app, re.M)
    assert re.search(
        r'^updown_read_cache_reads_total\{cache="(HIT|MISS)",unit="updown-cache-backend/0"\} [1-9]', app, re.M
    )
    assert re.search(r'^updown_cache_purges_total\{endpoint="[^"]+"\} [1-9]', app, re.M)
    assert re.search(r'^updown_readiness_check_ok\{check="storage"\} 1\.0$', app, re.M)
    for i in (0, 1):
        varnish, haproxy = scrapes[f"varnish{i}"], scrapes[f"haproxy{i}"]
        assert re.search(r"^varnish_main_cache_hit [1-9]", varnish, re.M)
        assert re.search(r"^varnish_main_bans_added [1-9]", varnish, re.M) or re.search(
            r"^varnish_main_n_purges [1-9]", varnish, re.M
        )
        assert re.search(r'^haproxy_frontend_http_responses_total\{proxy="https_in",code="2xx"\} [1-9]', haproxy, re.M)
        assert re.search(r'^haproxy_backend_active_servers\{proxy="app"\} 2$', haproxy, re.M)
    assert re.search(r"^nginx_up 1$", scrapes["nginx0"], re.M)
    assert re.search(r"^nginx_http_requests_total [1-9]", scrapes["nginx0"], re.M)


def test_the_certificate_expiry_is_the_served_certificate(stack: dict[str, str], scrapes: dict[str, str]) -> None:
    leaf = x509.load_pem_x509_certificate(Path(stack["CA"]).read_bytes())
    expiry = int(leaf.not_valid_after_utc.timestamp())
    for i in (0, 1):
        assert f"updown_tls_certificate_expiry_timestamp_seconds {expiry}\n" in scrapes[f"haproxy-tls{i}"]


def test_metrics_are_not_served_to_the_public(stack: dict[str, str], http: httpx.Client) -> None:
    """Through the frontends (what the public reaches) /metrics is a 404 on either hostname; the exporters only
    listen on loopback (the scrape jobs' localhost targets)."""
    for frontend in stack["FRONTENDS"].split(","):
        for host in ("localhost", "private.localhost"):
            for path in ("/metrics", "/metrics/tls", "/metrics/"):
                r = http.get(frontend + path, headers={"Host": host})
                assert r.status_code == 404, (frontend, host, path, r.status_code)
                assert "updown_" not in r.text
    for item in stack["METRICS"].split(","):
        assert item.split("=", 1)[1].startswith("http://127.0.0.1:")
