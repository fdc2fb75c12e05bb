"""The cache charm's backend role with ops.testing: config and the `app` relation in, nginx.conf and the
commands it would run out."""

from __future__ import annotations

import dataclasses
import re

import pytest
from ops import testing

import charm as charm_module
import workload
from updown_app.storage.read_cache import READ_TIMEOUT

UPSTREAM = "https://swift.example.test"
CONFIG = {"role": "backend", "upstream-url": UPSTREAM}


def nginx_conf() -> str:
    return charm_module.LAYOUT.nginx_conf.read_text()


def allowed() -> list[str]:
    return [line.split()[1].rstrip(";") for line in nginx_conf().splitlines() if line.strip().startswith("allow ")]


def app_relation(*units: int) -> testing.Relation:
    return testing.Relation(
        endpoint="app",
        remote_app_name="updown-app",
        remote_units_data={u: {"address": f"10.1.0.{u + 1}", "port": "8000"} for u in units},
    )


def installed(role: str) -> testing.StoredState:
    return testing.StoredState(owner_path="CacheCharm", content={"installed": True, "role": role})


def ready_state(*relations: testing.RelationBase, **config: object) -> testing.State:
    return testing.State(
        config={**CONFIG, **config},
        relations=list(relations) or [app_relation(0)],
        stored_states=[installed("backend")],
    )


def test_install_installs_nginx_only(cache_ctx, cache_host):
    out = cache_ctx.run(cache_ctx.on.install(), testing.State(config=CONFIG, relations=[app_relation(0)]))
    install = [c for c in cache_host if c[0] == "apt-get" and "install" in c]
    assert len(install) == 1 and install[0][-2:] == ["nginx", "prometheus-nginx-exporter"]
    # bounded: a stalled mirror fails the hook (Juju retries it) instead of holding the unit for ever
    assert {"Acquire::http::Timeout=30", "Acquire::Retries=3"} <= set(install[0])
    assert not any("varnish" in c or "haproxy" in c for c in cache_host)
    stored = out.get_stored_state("_stored", owner_path="CacheCharm")
    assert stored.content["role"] == "backend"
    assert out.unit_status == testing.ActiveStatus("backend: 1 app units, upstream swift.example.test")


def test_config_renders_checks_and_reloads_nginx(cache_ctx, cache_host):
    out = cache_ctx.run(cache_ctx.on.config_changed(), ready_state(**{"slice-size": "4M", "cache-size": "20G"}))
    assert out.unit_status == testing.ActiveStatus("backend: 1 app units, upstream swift.example.test")
    cfg = nginx_conf()
    assert "slice 4194304;" in cfg
    assert f"max_size={20 * 1024**3}" in cfg
    assert "proxy_cache_key $updown_object_path|$slice_range;" in cfg
    assert "proxy_set_header Range $slice_range;" in cfg
    assert "server swift.example.test:443;" in cfg and "proxy_set_header Host swift.example.test;" in cfg
    assert "proxy_ssl_verify on;" in cfg and "proxy_ssl_name swift.example.test;" in cfg
    assert f"proxy_ssl_trusted_certificate {workload.SYSTEM_CA_BUNDLE};" in cfg
    assert "proxy_cache_valid 200 206 " in cfg and "proxy_cache_lock on;" in cfg
    # A request waiting behind another's fetch of its slice gives up before the app takes the unit for sick.
    lock = re.search(r"proxy_cache_lock_timeout (\d+)s;", cfg)
    assert lock is not None and int(lock.group(1)) < READ_TIMEOUT, lock
    assert "listen 0.0.0.0:6081;" in cfg and "user www-data;" in cfg
    # no frontend config is written, no frontend service touched
    assert not charm_module.LAYOUT.haproxy_cfg.exists() and not charm_module.LAYOUT.vcl.exists()
    conf = str(charm_module.LAYOUT.nginx_conf)
    assert cache_host.index(["nginx", "-t", "-q", "-c", conf]) < cache_host.index(
        ["systemctl", "reload-or-restart", "nginx"]
    )
    assert not any("haproxy" in c or "varnish" in c for cmd in cache_host for c in cmd)
    # the same state again changes nothing and reloads nothing
    cache_host.clear()
    cache_ctx.run(cache_ctx.on.config_changed(), ready_state(**{"slice-size": "4M", "cache-size": "20G"}))
    assert cache_host == []


def test_upstream_ca_is_written_and_trusted(cache_ctx, cache_host, tls_pair):
    chain, _key = tls_pair
    ca = chain[chain.rindex("-----BEGIN CERTIFICATE-----") :]
    cache_ctx.run(
        cache_ctx.on.config_changed(), ready_state(**{"upstream-ca": ca, "upstream-url": "https://s3.test:8443/"})
    )
    layout = charm_module.LAYOUT
    assert layout.nginx_ca.read_text().strip() == ca.strip()
    cfg = nginx_conf()
    assert f"proxy_ssl_trusted_certificate {layout.nginx_ca};" in cfg
    assert "server s3.test:8443;" in cfg and "proxy_set_header Host s3.test:8443;" in cfg


def test_unit_publishes_its_cache_to_the_app(cache_ctx, cache_host):
    out = cache_ctx.run(cache_ctx.on.config_changed(), ready_state(**{"cache-port": 21080}))
    app = out.get_relations("app")[0]
    assert {k: app.local_unit_data[k] for k in ("role", "address", "port")} == {
        "role": "backend",
        "address": "192.0.2.0",
        "port": "21080",
    }


def test_app_units_join_and_depart_change_the_allow_list(cache_ctx, cache_host):
    app = app_relation(0, 1)
    out = cache_ctx.run(cache_ctx.on.relation_joined(app, remote_unit=1), ready_state(app))
    assert allowed() == ["127.0.0.1", "::1", "192.0.2.0", "10.1.0.1", "10.1.0.2"]
    assert out.unit_status == testing.ActiveStatus("backend: 2 app units, upstream swift.example.test")

    cache_host.clear()
    app = dataclasses.replace(app, remote_units_data={1: {"address": "10.1.0.2", "port": "8000"}})
    out = cache_ctx.run(cache_ctx.on.relation_departed(app, remote_unit=0, departing_unit=0), ready_state(app))
    assert allowed() == ["127.0.0.1", "::1", "192.0.2.0", "10.1.0.2"]  # the departed unit may no longer read
    assert ["systemctl", "reload-or-restart", "nginx"] in cache_host
    assert out.unit_status == testing.ActiveStatus("backend: 1 app units, upstream swift.example.test")


def test_no_app_related_blocks(cache_ctx, cache_host):
    state = dataclasses.replace(ready_state(), relations=[])
    out = cache_ctx.run(cache_ctx.on.config_changed(), state)
    assert out.unit_status == testing.BlockedStatus("no client: integrate with updown-app (endpoint app)")
    assert not charm_module.LAYOUT.nginx_conf.exists()


def test_app_related_without_data_waits(cache_ctx, cache_host):
    app = testing.Relation(endpoint="app", remote_app_name="updown-app", remote_units_data={0: {}})
    out = cache_ctx.run(cache_ctx.on.relation_joined(app, remote_unit=0), ready_state(app))
    assert out.unit_status == testing.WaitingStatus("waiting for the updown-app units to publish their address")


def test_frontend_requirements_do_not_block_a_backend(cache_ctx, cache_host):
    """No public-hostname, no TLS, ports that would clash for a frontend: a backend unit is still active."""
    out = cache_ctx.run(cache_ctx.on.config_changed(), ready_state(**{"http-port": 6081, "https-port": 6081}))
    assert out.unit_status.name == "active"


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"upstream-url": ""}, "invalid config: upstream-url is required for role=backend"),
        ({"upstream-url": "http://swift.example.test"}, "invalid config: upstream-url: "),
        ({"upstream-url": "https://swift.example.test/v1/AUTH_x"}, "invalid config: upstream-url: "),
        ({"upstream-url": "https://bad host"}, "invalid config: upstream-url: "),
        ({"upstream-url": "https://10.0.0.5:8080"}, "invalid config: upstream-url: name the store by its host name"),
        ({"slice-size": "16"}, "invalid config: slice-size: "),
        ({"slice-size": "2G"}, "invalid config: slice-size: "),
        ({"cache-size": "lots"}, "invalid config: cache-size: "),
        ({"upstream-ca": "not a certificate"}, "invalid config: upstream-ca: "),
    ],
)
def test_invalid_config_blocks_and_changes_nothing(cache_ctx, cache_host, config, problem):
    cache_ctx.run(cache_ctx.on.config_changed(), ready_state())
    before = nginx_conf()
    cache_host.clear()
    out = cache_ctx.run(cache_ctx.on.config_changed(), ready_state(**config))
    assert out.unit_status.name == "blocked"
    assert out.unit_status.message.startswith(problem), out.unit_status.message
    assert nginx_conf() == before and cache_host == []


def test_role_switch_refused(cache_ctx, cache_host):
    cache_ctx.run(cache_ctx.on.config_changed(), ready_state())
    before = nginx_conf()
    cache_host.clear()
    state = ready_state(role="frontend", **{"public-hostname": "updown.test"})
    out = cache_ctx.run(cache_ctx.on.config_changed(), state)
    assert out.unit_status.name == "blocked"
    assert out.unit_status.message.startswith("role cannot change after deployment (deployed as backend)")
    assert nginx_conf() == before and cache_host == []
    assert not charm_module.LAYOUT.haproxy_cfg.exists()
