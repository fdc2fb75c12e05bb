"""The cache units' metrics endpoints: HAProxy's built-in exporter and the certificate's expiry served by a real
HAProxy on loopback only, the exporters' systemd drop-ins, and the charm running them."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from ops import testing

import charm as charm_module
import workload
from models import CacheConfig, CacheState, Origin, RingMember, Telemetry, TLSMaterial
from tests.charms.test_cache_backend_charm import ready_state as backend_ready_state
from tests.charms.test_cache_charm import ready_state
from tests.charms.test_cache_rendered_configs import make_state, need
from updown_charms.values import Role


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture
def haproxy(tmp_path: Path, tls_pair: tuple[str, str]) -> Iterator[tuple[CacheState, str]]:
    """A frontend unit's HAProxy from its rendered config (ports of its own), listening on every address as on
    a unit (bind_address 0.0.0.0)."""
    need("haproxy")
    state = CacheState(
        unit_name="updown-cache/0",
        address="127.0.0.1",
        config=CacheConfig(
            public_hostname="updown.test", http_port=free_port(), https_port=free_port(), cache_port=free_port()
        ),
        ring=(RingMember(unit_name="updown-cache/0", address="127.0.0.1", port=free_port()),),
        origins=(Origin(unit_name="updown-app/0", address="127.0.0.1", port=free_port()),),
        tls=TLSMaterial(chain=tls_pair[0], key=tls_pair[1]),
        telemetry=Telemetry(haproxy=free_port()),
    )
    layout = workload.Layout.under(tmp_path)
    workload.write_files(workload.rendered_files(state, layout))
    layout.haproxy_socket.parent.mkdir(parents=True, exist_ok=True)
    pid_file = tmp_path / "haproxy.pid"
    subprocess.run(["haproxy", "-D", "-p", str(pid_file), "-f", str(layout.haproxy_cfg)], check=True)
    base = f"http://127.0.0.1:{state.telemetry.haproxy}"
    deadline = time.monotonic() + 10
    while True:
        try:
            get(base + "/")
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    try:
        yield state, base
    finally:
        for pid in pid_file.read_text().split():
            subprocess.run(["kill", pid], check=False)


def test_haproxy_serves_its_metrics_and_the_certificate_expiry(haproxy: tuple[CacheState, str]) -> None:
    state, base = haproxy
    status, body = get(base + workload.HAPROXY_METRICS_PATH)
    assert status == 200
    assert 'haproxy_frontend_http_responses_total{proxy="https_in",code="5xx"}' in body
    assert 'haproxy_backend_active_servers{proxy="app"}' in body
    status, body = get(base + workload.TLS_METRICS_PATH)
    assert state.tls is not None
    leaf = x509.load_pem_x509_certificate(state.tls.chain.encode())
    expiry = int(leaf.not_valid_after_utc.timestamp())
    assert status == 200
    assert f"updown_tls_certificate_expiry_timestamp_seconds {expiry}\n" in body
    assert get(base + "/other")[0] == 404


def test_the_metrics_listen_on_loopback_only(haproxy: tuple[CacheState, str]) -> None:
    """HAProxy serves the public on every address, its metrics on 127.0.0.1 alone (the COS agent is local)."""
    state, _ = haproxy
    cfg = workload.render_haproxy(state, workload.Layout())
    assert f"bind 0.0.0.0:{state.config.https_port} ssl" in cfg
    assert f"bind 127.0.0.1:{state.telemetry.haproxy}\n" in cfg
    outside = next(  # an address of this machine that is not loopback, if it has one
        (a for a in {i[4][0] for i in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
         if not a.startswith("127.")),
        None,
    )  # fmt: skip
    if outside is not None:
        with pytest.raises(OSError):
            socket.create_connection((outside, state.telemetry.haproxy), timeout=2).close()


def test_the_public_frontend_never_routes_metrics(tls_pair: tuple[str, str]) -> None:
    cfg = workload.render_haproxy(make_state(tls_pair, "one-unit"), workload.Layout())
    https_in = cfg[cfg.index("frontend https_in") : cfg.index("backend ring")]
    assert "http-request return status 404 content-type application/json string" in https_in
    assert "if { path /metrics } || { path_beg /metrics/ }" in https_in


def test_the_exporters_listen_on_loopback(tls_pair: tuple[str, str]) -> None:
    state = make_state(tls_pair, "one-unit")
    assert workload.varnish_exporter_args(state.telemetry) == ["-web.listen-address", "127.0.0.1:9131", "-raw"]
    backend = CacheState(
        unit_name="b/0", address="10.0.0.1", config=CacheConfig(role="backend", upstream_url="https://s.test")
    )
    assert workload.nginx_exporter_args(backend.telemetry) == [
        "-nginx.scrape-uri", "http://127.0.0.1:9112/stub_status", "-web.listen-address", "127.0.0.1:9113"
    ]  # fmt: skip
    assert "listen 127.0.0.1:9112;" in workload.render_nginx(backend, workload.Layout())
    assert [j["job_name"] for j in workload.scrape_jobs(Role.FRONTEND, Telemetry())] == [
        "haproxy",
        "haproxy-tls",
        "varnish",
    ]
    assert [j["static_configs"] for j in workload.scrape_jobs(Role.BACKEND, Telemetry())] == [
        [{"targets": ["localhost:9113"]}]
    ]


def test_the_charm_runs_the_varnish_exporter(cache_ctx, cache_host, tls_pair) -> None:
    cache_ctx.run(cache_ctx.on.config_changed(), ready_state(tls_pair))
    dropin = charm_module.LAYOUT.varnish_exporter_dropin.read_text()
    assert "ExecStart=\nExecStart=/usr/bin/prometheus-varnish-exporter -web.listen-address 127.0.0.1:9131" in dropin
    assert ["systemctl", "restart", "prometheus-varnish-exporter"] in cache_host
    assert ["systemctl", "enable", "--now", "haproxy", "varnish", "prometheus-varnish-exporter"] in cache_host
    assert charm_module.LAYOUT.tls_metrics.read_text().startswith("# HELP updown_tls_certificate_expiry")


def test_the_charm_runs_the_nginx_exporter(cache_ctx, cache_host) -> None:
    cache_ctx.run(cache_ctx.on.config_changed(), backend_ready_state())
    dropin = charm_module.LAYOUT.nginx_exporter_dropin.read_text()
    assert "-nginx.scrape-uri http://127.0.0.1:9112/stub_status -web.listen-address 127.0.0.1:9113" in dropin
    assert ["systemctl", "restart", "prometheus-nginx-exporter"] in cache_host
    assert ["systemctl", "enable", "--now", "nginx", "prometheus-nginx-exporter"] in cache_host


def test_the_exporter_listens_on_loopback_from_its_installation(
    cache_ctx, cache_host, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its package starts it at once: the drop-in is there before apt-get installs it."""
    dropin = charm_module.LAYOUT.varnish_exporter_dropin
    at_install: list[bool] = []

    def run(argv: list[str], **_: object) -> None:
        if "install" in argv:
            at_install.append(dropin.is_file() and "127.0.0.1:9131" in dropin.read_text())

    monkeypatch.setattr(workload, "run", run)
    cache_ctx.run(cache_ctx.on.install(), testing.State(config={"public-hostname": "updown.test"}))
    assert at_install == [True]
