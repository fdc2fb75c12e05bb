"""The `storage-ca` option: the CA of an object store behind a private CA (Swift native, or S3 set by the s3-*
options), written to one file the app's settings name (Swift: for Keystone too), published to the backend caches
on `backend-cache`, and second to s3-integrator's `tls-ca-chain` when the integrator gives one."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from ops import testing
from scripts.throwaway_ca import make_tls

from tests.charms import s3_integrator_data as integrator
from tests.charms import test_app_charm as app_tests
from tests.charms.test_app_backend_store import backend, backend_unit_reads, published
from tests.charms.test_app_s3_integrator import two_units
from updown_app.settings import Settings

RELEASE, ready = app_tests.RELEASE, app_tests.ready
ctx, host = app_tests.ctx, app_tests.host  # the charm's fixtures: a Context, and the unit's files under tmp_path

SWIFT = {
    "storage-backend": "swift",
    "swift-auth-url": "https://keystone.example.test/v3",
    "swift-username": "updown",
    "swift-storage-url": "https://swift.example.test:8443/v1/AUTH_updown",
}
S3 = {"storage-backend": "s3", "s3-endpoint-url": "https://s3.example.test", "s3-addressing-style": "path"}


def a_ca() -> str:
    """The PEM of a new throwaway CA (the last certificate of make_tls's chain)."""
    chain, _key = make_tls("store.test", ["store.test"])
    return chain[chain.rindex("-----BEGIN CERTIFICATE-----") :].strip()


def with_swift_credentials(state: testing.State) -> testing.State:
    """storage-credentials for Swift: the password, and the temp-url-key backend caches need."""
    storage = testing.Secret(tracked_content={"password": "swift-pw", "temp-url-key": "tuk"})
    return dataclasses.replace(
        state, config={**state.config, "storage-credentials": storage.id}, secrets=[*state.secrets, storage]
    )


def trusted_ca(host: Any, backend_name: str) -> str:
    """The CA file the rendered settings tell the app's store client to verify with."""
    settings = Settings.load(host.layout.config)
    store = getattr(settings.storage, backend_name)
    assert store is not None and isinstance(store.verify_tls, str), store
    return Path(store.verify_tls).read_text()


@pytest.mark.parametrize("store", ["swift", "s3"])
def test_the_option_is_the_file_the_app_verifies_the_store_with(ctx, host, store):
    ca = a_ca()
    config = SWIFT if store == "swift" else S3
    rel = backend()
    # the option as `juju config updown-app storage-ca="$(cat ca.pem)"` gives it: with its trailing newline
    state = with_swift_credentials(ready(rel, **config, **{"storage-ca": ca + "\n"}))
    out = ctx.run(ctx.on.config_changed(), two_units(state))
    assert out.unit_status == testing.ActiveStatus(f"running {RELEASE}")
    assert trusted_ca(host, store) == ca + "\n"
    # the backend caches fetch from the same endpoint: they are told the same CA
    assert published(out, rel)["upstream-ca"] == ca + "\n"


def test_without_the_option_the_system_cas(ctx, host):
    out = ctx.run(ctx.on.config_changed(), with_swift_credentials(ready(**SWIFT)))
    assert out.unit_status == testing.ActiveStatus(f"running {RELEASE}")
    swift = Settings.load(host.layout.config).storage.swift
    assert swift is not None and swift.verify_tls is True
    assert not host.layout.store_ca.exists()


def test_a_ca_that_is_not_pem_blocks_saying_so(ctx, host):
    state = with_swift_credentials(ready(**SWIFT, **{"storage-ca": "MIIBszCCAVmgAwIBAgIU (base64 DER, no PEM)"}))
    out = ctx.run(ctx.on.config_changed(), state)
    assert out.unit_status == testing.BlockedStatus(
        "invalid config: storage-ca: must be PEM certificates only (-----BEGIN CERTIFICATE----- ...)"
    )
    assert host.named("restart") == [] and not host.layout.config.exists()


@pytest.mark.parametrize("integrator_gives_a_chain", [True, False])
def test_s3_integrators_chain_wins_over_the_option(ctx, host, integrator_gives_a_chain):
    """Both given: the integrator's chain describes the store it hands out; without one, the option applies."""
    own, integrators = a_ca(), a_ca()
    rel = backend()
    chain = [integrators] if integrator_gives_a_chain else None
    s3 = integrator.stable("AKIA1", "s3cr3t", endpoint="https://s3.deploy.test", uri_style="path", ca_chain=chain)
    out = ctx.run(ctx.on.relation_changed(s3), two_units(ready(), rel, s3, **{"storage-ca": own}))
    assert out.unit_status == testing.ActiveStatus(f"running {RELEASE}")
    expected = (integrators if integrator_gives_a_chain else own) + "\n"
    assert trusted_ca(host, "s3") == expected
    assert published(out, rel) == {"upstream-url": "https://s3.deploy.test", "upstream-ca": expected}


def test_a_backend_cache_trusts_the_swift_ca_the_app_publishes(ctx, host, cache_ctx, cache_host):
    """Both charms on one relation: the app on Swift with storage-ca, the backend unit without upstream options
    reads the store over HTTPS verified with that CA."""
    ca = a_ca()
    rel = backend()
    out = ctx.run(ctx.on.config_changed(), with_swift_credentials(ready(rel, **SWIFT, **{"storage-ca": ca})))
    cfg, trusted = backend_unit_reads(cache_ctx, published(out, rel), "swift.example.test")
    assert "server swift.example.test:8443;" in cfg
    assert trusted == ca + "\n"
