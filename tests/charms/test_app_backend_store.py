"""updown-app tells the backend caches which store to read: its leader writes `upstream-url` (the origin of the
URLs it presigns) and `upstream-ca` in its application data on `backend-cache`, from its config or from
s3-integrator, and rewrites them when the store changes. What the cache charm does with them:
test_cache_backend_charm.py."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from ops import testing

from tests.charms import s3_integrator_data as integrator
from tests.charms import test_app_charm as app_tests
from tests.charms.test_app_s3_integrator import two_units

ready = app_tests.ready
ctx, host = app_tests.ctx, app_tests.host  # the charm's fixtures: a Context, and the unit's files under tmp_path

SWIFT = {
    "storage-backend": "swift",
    "swift-auth-url": "https://keystone.test/v3",
    "swift-username": "updown",
}


def backend() -> testing.Relation:
    return testing.Relation(
        endpoint="backend-cache",
        remote_app_name="cache-backend",
        remote_units_data={0: {"role": "backend", "address": "10.0.1.1", "port": "6081"}},
    )


def published(out: testing.State, relation: testing.Relation) -> dict[str, str]:
    return dict(out.get_relation(relation.id).local_app_data)


def backend_unit_reads(cache_ctx: Any, app_data: dict[str, str], upstream_host: str) -> tuple[str, str]:
    """A backend cache unit, without upstream options, on the other end of ``backend-cache`` with ``app_data``
    (what the app's leader published): active with that upstream; returns its nginx.conf and the CA it trusts."""
    import charm as cache_charm  # the cache charm's module (tests/charms/conftest.py puts it on the path)

    app = testing.Relation(
        endpoint="app",
        remote_app_name="updown-app",
        remote_app_data=app_data,
        remote_units_data={0: {"address": "10.1.0.1", "port": "8000"}},
    )
    installed = testing.StoredState(owner_path="CacheCharm", content={"installed": True, "role": "backend"})
    state = testing.State(config={"role": "backend"}, relations=[app], stored_states=[installed])
    result = cache_ctx.run(cache_ctx.on.relation_changed(app), state)
    assert result.unit_status == testing.ActiveStatus(f"backend: 1 app units, upstream {upstream_host}")
    layout = cache_charm.LAYOUT
    cfg = layout.nginx_conf.read_text()
    assert f"proxy_ssl_trusted_certificate {layout.nginx_ca};" in cfg
    return cfg, layout.nginx_ca.read_text()


def ca_of(tls_pair: tuple[str, str]) -> str:
    chain, _key = tls_pair
    return chain[chain.rindex("-----BEGIN CERTIFICATE-----") :]


@pytest.mark.parametrize(
    ("config", "url"),
    [
        ({"storage-backend": "s3", "s3-endpoint-url": "https://S3.Example.test:8443/"}, "https://s3.example.test:8443"),
        ({"storage-backend": "s3", "s3-endpoint-url": "https://s3.example.test", "s3-addressing-style": "path"},
         "https://s3.example.test"),
        # virtual-hosted: the SDK presigns on <bucket>.<endpoint host>
        ({"storage-backend": "s3", "s3-endpoint-url": "https://s3.example.test", "s3-addressing-style": "virtual",
          "s3-bucket": "pkgs"}, "https://pkgs.s3.example.test"),
        ({**SWIFT, "swift-storage-url": "https://swift.example.test:8080/v1/AUTH_updown"},
         "https://swift.example.test:8080"),
        # a test Swift over plain HTTP is published as it is: the cache charm refuses it, saying so
        ({**SWIFT, "swift-storage-url": "http://swift.example.test:8080/v1/AUTH_updown"},
         "http://swift.example.test:8080"),
    ],
)  # fmt: skip
def test_the_leader_publishes_the_store_from_config(ctx, host, config, url):
    rel = backend()
    out = ctx.run(ctx.on.config_changed(), ready(rel, **config))
    assert published(out, rel) == {"upstream-url": url}  # no upstream-ca: the system's CAs


@pytest.mark.parametrize(
    "config",
    [
        {},  # local storage
        SWIFT,  # the storage URL comes from the Keystone catalog, at run time
        {"storage-backend": "s3"},  # AWS: the SDK picks the host by region and bucket
    ],
)
def test_no_store_endpoint_publishes_nothing(ctx, host, config):
    rel = backend()
    out = ctx.run(ctx.on.config_changed(), ready(rel, **config))
    assert published(out, rel) == {}


def test_the_leader_publishes_s3_integrators_endpoint_and_ca(ctx, host, tls_pair):
    ca = ca_of(tls_pair)
    rel = backend()
    s3 = integrator.stable(
        "AKIA1", "s3cr3t", endpoint="https://swift.deploy.test:8443", uri_style="path", ca_chain=[ca]
    )
    state = two_units(ready(), rel, s3, **{"s3-endpoint-url": "https://old.test"})
    out = ctx.run(ctx.on.relation_changed(s3), state)
    assert published(out, rel) == {"upstream-url": "https://swift.deploy.test:8443", "upstream-ca": ca.strip() + "\n"}


def test_the_store_follows_config_and_the_integrator(ctx, host, tls_pair):
    """config-changed, s3-credentials changed and broken: the published store is the one the app uses."""
    rel = backend()
    state = ready(rel, **{"storage-backend": "s3", "s3-endpoint-url": "https://mine.test"})
    out = ctx.run(ctx.on.config_changed(), state)
    assert published(out, rel) == {"upstream-url": "https://mine.test"}

    out = ctx.run(
        ctx.on.config_changed(),
        dataclasses.replace(out, config={**out.config, "s3-endpoint-url": "https://moved.test:9000"}),
    )
    assert published(out, rel) == {"upstream-url": "https://moved.test:9000"}

    ca = ca_of(tls_pair)
    s3 = integrator.stable("AKIA1", "s3cr3t", endpoint="https://integrated.test", ca_chain=[ca])
    out = ctx.run(ctx.on.relation_changed(s3), dataclasses.replace(out, relations=[*out.relations, s3]))
    assert published(out, rel) == {"upstream-url": "https://integrated.test", "upstream-ca": ca.strip() + "\n"}

    out = ctx.run(ctx.on.relation_broken(out.get_relation(s3.id)), out)
    # back on its own options; the integrator's CA is gone with it
    assert published(out, rel) == {"upstream-url": "https://moved.test:9000"}


def test_a_new_leader_publishes_the_store(ctx, host):
    rel = backend()
    state = ready(rel, leader=True, **{"storage-backend": "s3", "s3-endpoint-url": "https://s3.example.test"})
    out = ctx.run(ctx.on.leader_elected(), state)
    assert published(out, rel) == {"upstream-url": "https://s3.example.test"}


def test_a_non_leader_writes_nothing(ctx, host):
    rel = backend()
    state: Any = ready(rel, leader=False, **{"storage-backend": "s3", "s3-endpoint-url": "https://s3.example.test"})
    out = ctx.run(ctx.on.config_changed(), state)
    assert published(out, rel) == {}


def test_an_unusable_store_config_keeps_the_last_published(ctx, host):
    """Invalid config blocks the unit; the caches keep reading the store the units still run on."""
    rel = backend()
    out = ctx.run(
        ctx.on.config_changed(), ready(rel, **{"storage-backend": "s3", "s3-endpoint-url": "https://s3.test"})
    )
    out = ctx.run(
        ctx.on.config_changed(), dataclasses.replace(out, config={**out.config, "s3-endpoint-url": "s3.test"})
    )
    assert out.unit_status.name == "blocked"
    assert published(out, rel) == {"upstream-url": "https://s3.test"}


def test_what_the_app_publishes_is_what_the_backend_cache_reads(ctx, host, cache_ctx, cache_host, tls_pair):
    """Both charms on one relation: the app's leader on s3-integrator (Swift's s3api over HTTPS by host name,
    a private CA, as the deployment rehearsal has it), the backend unit without upstream options."""
    ca = ca_of(tls_pair)
    rel = backend()
    s3 = integrator.stable(
        "AKIA1", "s3cr3t", endpoint="https://swift.deploy.test:8443", uri_style="path", ca_chain=[ca]
    )
    out = ctx.run(ctx.on.relation_changed(s3), two_units(ready(), rel, s3))
    cfg, trusted = backend_unit_reads(cache_ctx, published(out, rel), "swift.deploy.test")
    assert "server swift.deploy.test:8443;" in cfg
    assert trusted.strip() == ca.strip()
