"""updown-app related to s3-integrator (`s3-credentials`), with the data both tracks of the real charm write
(tests/charms/s3_integrator_data.py): what the leader asks for, the block until `sync-s3-credentials`, and the
app's S3 settings, CA file and keys rendered from the relation in place of the s3-* options."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from ops import testing

from tests.charms import s3_integrator_data as integrator
from tests.charms import test_app_charm as app_tests
from updown_app.settings import Settings

RELEASE, ready = app_tests.RELEASE, app_tests.ready
ctx, host = app_tests.ctx, app_tests.host  # the charm's fixtures: a Context, and the unit's files under tmp_path

WAITING = (
    "waiting for s3-integrator credentials "
    "(juju run s3-integrator/leader sync-s3-credentials access-key=<key> secret-key=<secret>)"
)


def two_units(state: testing.State, *relations: testing.RelationBase, **config: Any) -> testing.State:
    """Two app units (local storage would block) with the given extra relations and config."""
    peer = testing.PeerRelation("rollout", peers_data={1: {}})
    others = [r for r in state.relations if r.endpoint != "rollout"]
    return dataclasses.replace(state, relations=[peer, *others, *relations], config={**state.config, **config})


def environment(host: Any) -> dict[str, str]:
    lines = host.layout.environment.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if not line.startswith("#"))


def test_the_leader_asks_for_its_bucket_and_the_keys_as_secrets(ctx, host):
    """1/stable publishes nothing before the requirer's `bucket`; 2/edge moves the keys into a secret only when
    they are in `requested-secrets`. Until the keys come: blocked, saying the one command to run."""
    s3 = testing.Relation(endpoint="s3-credentials", interface="s3", remote_app_name="s3-integrator")
    out = ctx.run(ctx.on.relation_created(s3), two_units(ready(), s3, **{"s3-bucket": "pkgs"}))
    asked = out.get_relation(s3.id).local_app_data
    assert asked["bucket"] == "pkgs"
    assert json.loads(asked["requested-secrets"]) == ["access-key", "secret-key"]
    assert out.unit_status == testing.BlockedStatus(WAITING)
    assert host.named("restart") == []


def test_blocked_until_sync_s3_credentials(ctx, host):
    """1/stable configured (endpoint, bucket) but the keys not synced yet: the unit says what to run."""
    s3 = integrator.stable(None, None, endpoint="https://s3.test")
    out = ctx.run(ctx.on.relation_changed(s3), two_units(ready(), s3))
    assert out.unit_status == testing.BlockedStatus(WAITING)
    assert host.named("restart") == []
    synced = integrator.stable("AKIA1", "s3cr3t", endpoint="https://s3.test")
    out = ctx.run(ctx.on.relation_changed(synced), two_units(ready(), synced))
    assert out.unit_status == testing.ActiveStatus(f"running {RELEASE}")


def test_stable_integrator_data_overrides_the_s3_options(ctx, host, tls_pair):
    """Two units, no storage option set: the integrator's store is the S3 backend, its values replace the
    s3-* options, its CA chain is the file the app verifies the endpoint with, its keys go to the AWS chain."""
    ca = tls_pair[0].split("-----END CERTIFICATE-----")[-2] + "-----END CERTIFICATE-----"
    ca = ca[ca.index("-----BEGIN CERTIFICATE-----") :]
    s3 = integrator.stable(
        "AKIA1", "s3cr3t", endpoint="https://s3.test:8443", bucket="store-pkgs", region="eu-1", uri_style="path",
        ca_chain=[ca],
    )  # fmt: skip
    config = {"s3-bucket": "old", "s3-endpoint-url": "https://old.test", "s3-region": "us-east-1"}
    out = ctx.run(ctx.on.relation_changed(s3), two_units(ready(), s3, **config))
    assert out.unit_status == testing.ActiveStatus(f"running {RELEASE}")
    settings = Settings.load(host.layout.config)
    assert settings.storage.backend == "s3" and settings.storage.s3 is not None
    s3_settings = settings.storage.s3
    assert (s3_settings.endpoint_url, s3_settings.bucket, s3_settings.region) == (
        "https://s3.test:8443", "store-pkgs", "eu-1",
    )  # fmt: skip
    assert s3_settings.addressing_style == "path"
    assert s3_settings.verify_tls == str(host.layout.store_ca)
    assert host.layout.store_ca.read_text() == ca + "\n"
    assert environment(host) == {"AWS_ACCESS_KEY_ID": '"AKIA1"', "AWS_SECRET_ACCESS_KEY": '"s3cr3t"'}
    assert "s3cr3t" not in host.layout.config.read_text()  # the keys never go into the config file


def test_edge_integrator_keys_come_from_its_secret_and_follow_a_rotation(ctx, host):
    """2/edge: the keys in the `secret-extra` secret; a new revision of it (secret-changed) restarts the unit
    (one unit here: no drain to wait for)."""
    s3, secret = integrator.edge("AKIA2", "k2", endpoint="http://10.1.0.9:7480", uri_style="host")
    state = ready(s3)
    state = dataclasses.replace(state, secrets=[*state.secrets, secret])
    out = ctx.run(ctx.on.relation_changed(s3), state)
    assert out.unit_status == testing.ActiveStatus(f"running {RELEASE}")
    s3_settings = Settings.load(host.layout.config).storage.s3
    assert s3_settings is not None
    assert s3_settings.endpoint_url == "http://10.1.0.9:7480" and s3_settings.addressing_style == "virtual"
    assert s3_settings.bucket == "updown" and s3_settings.verify_tls is True  # no CA chain: the system's CAs
    assert environment(host)["AWS_SECRET_ACCESS_KEY"] == '"k2"'
    rotated = dataclasses.replace(secret, latest_content={"access-key": "AKIA2", "secret-key": "k3"})
    out = dataclasses.replace(out, secrets=[*(s for s in out.secrets if s.id != secret.id), rotated])
    out = ctx.run(ctx.on.secret_changed(rotated), out)
    assert environment(host)["AWS_SECRET_ACCESS_KEY"] == '"k3"'
    assert out.unit_status == testing.ActiveStatus(f"running {RELEASE}")


def test_what_updown_cannot_use_blocks_with_the_fix(ctx, host):
    swift = {"storage-backend": "swift", "swift-auth-url": "https://k.test/v3", "swift-username": "u"}
    s3 = integrator.stable("AKIA1", "s3cr3t", endpoint="https://s3.test")
    out = ctx.run(ctx.on.relation_changed(s3), two_units(ready(), s3, **swift))
    assert out.unit_status == testing.BlockedStatus(
        "storage-backend=swift but related to s3-integrator (s3-credentials): remove the relation or set "
        "storage-backend=s3"
    )
    cases = {
        "path": (
            integrator.stable("AKIA1", "s3cr3t", path="/backups"),
            "s3-integrator path='/backups': updown keeps its objects at the root of its own bucket; unset it "
            "(juju config s3-integrator path=)",
        ),
        "endpoint": (
            integrator.stable("AKIA1", "s3cr3t", endpoint="s3.test"),
            "s3-credentials: not an http(s) URL: 's3.test'",
        ),
        "ca": (
            integrator.stable("AKIA1", "s3cr3t", ca_chain=["not a certificate"]),
            "s3-integrator tls-ca-chain: not a list of PEM certificates",
        ),
    }
    for name, (relation, message) in cases.items():
        out = ctx.run(ctx.on.relation_changed(relation), two_units(ready(), relation))
        assert out.unit_status == testing.BlockedStatus(message), name
    assert host.named("restart") == []


def test_without_the_relation_the_options_and_storage_credentials_apply(ctx, host):
    """Removed (relation-broken), the s3-* options and storage-credentials are the store again."""
    s3 = integrator.stable("AKIA1", "s3cr3t", endpoint="https://s3.test")
    keys = testing.Secret(tracked_content={"access-key-id": "AKIA9", "secret-access-key": "own"})
    state = ready(s3, **{"storage-backend": "s3", "s3-endpoint-url": "https://mine.test"})
    state = dataclasses.replace(
        state, config={**state.config, "storage-credentials": keys.id}, secrets=[*state.secrets, keys]
    )
    out = ctx.run(ctx.on.relation_changed(s3), state)
    assert Settings.load(host.layout.config).storage.s3.endpoint_url == "https://s3.test"  # type: ignore[union-attr]
    out = ctx.run(ctx.on.relation_broken(out.get_relation(s3.id)), out)
    assert Settings.load(host.layout.config).storage.s3.endpoint_url == "https://mine.test"  # type: ignore[union-attr]
    assert environment(host)["AWS_SECRET_ACCESS_KEY"] == '"own"'
