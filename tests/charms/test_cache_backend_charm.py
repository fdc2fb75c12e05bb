"""The cache charm's backend role with ops.testing: config and the `app` relation in, nginx.conf and the
commands it would run out."""

from __future__ import annotations

import dataclasses
import re

import pytest
from ops import testing
from scripts.throwaway_ca import make_tls

import charm as charm_module
import workload
from updown_app.storage.read_cache import READ_TIMEOUT

UPSTREAM = "https://swift.example.test"
CONFIG = {"role": "backend", "upstream-url": UPSTREAM}


def nginx_conf() -> str:
    return charm_module.LAYOUT.nginx_conf.read_text()


def allowed() -> list[str]:
    return [line.split()[1].rstrip(";") for line in nginx_conf().splitlines() if line.strip().startswith("allow ")]


def app_relation(*units: int, store: dict[str, str] | None = None) -> testing.Relation:
    """updown-app's units; `store`: what its leader published in the application data (upstream-url, -ca)."""
    return testing.Relation(
        endpoint="app",
        remote_app_name="updown-app",
        remote_app_data=store or {},
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


# --- the store from updown-app (its application data on the relation) ------------------------------------------


def ca_of(tls_pair: tuple[str, str]) -> str:
    chain, _key = tls_pair
    return chain[chain.rindex("-----BEGIN CERTIFICATE-----") :]


def test_the_store_updown_app_publishes_is_read_without_upstream_options(cache_ctx, cache_host, tls_pair):
    ca = ca_of(tls_pair)
    app = app_relation(0, store={"upstream-url": "https://swift.deploy.test:8443", "upstream-ca": ca})
    out = cache_ctx.run(cache_ctx.on.relation_changed(app), ready_state(app, **{"upstream-url": ""}))
    assert out.unit_status == testing.ActiveStatus("backend: 1 app units, upstream swift.deploy.test")
    cfg = nginx_conf()
    assert "server swift.deploy.test:8443;" in cfg and "proxy_set_header Host swift.deploy.test:8443;" in cfg
    assert "proxy_ssl_name swift.deploy.test;" in cfg
    layout = charm_module.LAYOUT
    assert f"proxy_ssl_trusted_certificate {layout.nginx_ca};" in cfg
    assert layout.nginx_ca.read_text().strip() == ca.strip()
    assert ["systemctl", "reload-or-restart", "nginx"] in cache_host


def test_the_store_moving_follows_and_an_empty_ca_means_the_system_cas(cache_ctx, cache_host, tls_pair):
    app = app_relation(0, store={"upstream-url": "https://s3.one.test", "upstream-ca": ca_of(tls_pair)})
    cache_ctx.run(cache_ctx.on.relation_changed(app), ready_state(app, **{"upstream-url": ""}))
    cache_host.clear()
    app = dataclasses.replace(app, remote_app_data={"upstream-url": "https://s3.two.test:9443"})
    out = cache_ctx.run(cache_ctx.on.relation_changed(app), ready_state(app, **{"upstream-url": ""}))
    assert out.unit_status == testing.ActiveStatus("backend: 1 app units, upstream s3.two.test")
    cfg = nginx_conf()
    assert "server s3.two.test:9443;" in cfg and "s3.one.test" not in cfg
    assert f"proxy_ssl_trusted_certificate {workload.SYSTEM_CA_BUNDLE};" in cfg
    assert ["systemctl", "reload-or-restart", "nginx"] in cache_host


def test_upstream_options_override_the_published_store(cache_ctx, cache_host, tls_pair):
    """An operator's upstream-url wins; the app's CA is not trusted for another store (system CAs), an own
    upstream-ca wins over the app's for the app's store."""
    ca = ca_of(tls_pair)
    app = app_relation(0, store={"upstream-url": "https://s3.internal.test", "upstream-ca": ca})
    out = cache_ctx.run(cache_ctx.on.relation_changed(app), ready_state(app))  # upstream-url: swift.example.test
    assert out.unit_status == testing.ActiveStatus("backend: 1 app units, upstream swift.example.test")
    cfg = nginx_conf()
    assert "server swift.example.test:443;" in cfg and "s3.internal.test" not in cfg
    assert f"proxy_ssl_trusted_certificate {workload.SYSTEM_CA_BUNDLE};" in cfg

    # the same store named by the operator: the app's CA still applies to it
    cache_ctx.run(cache_ctx.on.relation_changed(app), ready_state(app, **{"upstream-url": "https://s3.internal.test"}))
    assert charm_module.LAYOUT.nginx_ca.read_text().strip() == ca.strip()
    assert f"proxy_ssl_trusted_certificate {charm_module.LAYOUT.nginx_ca};" in nginx_conf()

    other_chain, _ = make_tls("store.test", ["store.test"])
    own_ca = other_chain[other_chain.rindex("-----BEGIN CERTIFICATE-----") :]
    cache_ctx.run(
        cache_ctx.on.config_changed(),
        ready_state(app, **{"upstream-url": "", "upstream-ca": own_ca}),
    )
    assert "server s3.internal.test:443;" in nginx_conf()
    assert charm_module.LAYOUT.nginx_ca.read_text().strip() == own_ca.strip()


def test_neither_option_nor_relation_blocks_naming_both_ways(cache_ctx, cache_host):
    state = dataclasses.replace(ready_state(**{"upstream-url": ""}), relations=[])
    out = cache_ctx.run(cache_ctx.on.config_changed(), state)
    assert out.unit_status == testing.BlockedStatus(
        "no upstream: integrate with updown-app (endpoint app), which publishes its store, or set upstream-url"
    )
    assert not charm_module.LAYOUT.nginx_conf.exists() and cache_host == []


def test_related_app_without_a_store_blocks(cache_ctx, cache_host):
    """Local storage, Swift through the Keystone catalog, AWS without an endpoint: the app publishes none."""
    app = app_relation(0)
    out = cache_ctx.run(cache_ctx.on.relation_changed(app), ready_state(app, **{"upstream-url": ""}))
    assert out.unit_status.name == "blocked"
    assert out.unit_status.message.startswith("no upstream: updown-app publishes no store endpoint")
    assert out.unit_status.message.endswith("set upstream-url")
    assert not charm_module.LAYOUT.nginx_conf.exists() and cache_host == []


@pytest.mark.parametrize(
    ("store", "problem"),
    [
        (
            {"upstream-url": "http://swift.deploy.test:8080"},
            "updown-app's store http://swift.deploy.test:8080 is plain HTTP: the backend cache reads the store over "
            "HTTPS only; give the store an HTTPS endpoint by host name, or set upstream-url",
        ),
        (
            {"upstream-url": "https://10.0.0.5:8443"},
            "updown-app's store https://10.0.0.5:8443: name the store by its host name, not an IP address (its "
            "certificate is checked); set upstream-url",
        ),
        (
            {"upstream-url": "https://s3.test", "upstream-ca": "not a certificate"},
            "updown-app's store CA: must be PEM certificates only (-----BEGIN CERTIFICATE----- ...); set upstream-ca",
        ),
    ],
)
def test_an_unusable_published_store_blocks_and_renders_nothing(cache_ctx, cache_host, store, problem):
    cache_ctx.run(cache_ctx.on.config_changed(), ready_state())  # a working config first
    before = nginx_conf()
    cache_host.clear()
    app = app_relation(0, store=store)
    out = cache_ctx.run(cache_ctx.on.relation_changed(app), ready_state(app, **{"upstream-url": ""}))
    assert out.unit_status == testing.BlockedStatus(problem)
    assert nginx_conf() == before and cache_host == []


def test_an_override_unblocks_a_plain_http_store(cache_ctx, cache_host):
    app = app_relation(0, store={"upstream-url": "http://swift.deploy.test:8080"})
    out = cache_ctx.run(
        cache_ctx.on.relation_changed(app), ready_state(app, **{"upstream-url": "https://swift.tls.test"})
    )
    assert out.unit_status == testing.ActiveStatus("backend: 1 app units, upstream swift.tls.test")


def test_two_apps_with_different_stores_block(cache_ctx, cache_host):
    one = app_relation(0, store={"upstream-url": "https://s3.one.test"})
    two = dataclasses.replace(app_relation(0, store={"upstream-url": "https://s3.two.test"}), remote_app_name="other")
    out = cache_ctx.run(cache_ctx.on.relation_changed(one), ready_state(one, two, **{"upstream-url": ""}))
    assert out.unit_status == testing.BlockedStatus(
        "the related updown-app applications read different stores (https://s3.one.test, https://s3.two.test): "
        "set upstream-url"
    )
