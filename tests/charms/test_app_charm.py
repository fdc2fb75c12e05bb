"""The updown-app charm with ops.testing: Juju state in, Juju state (and the files it would write) out. The host
is faked only where a test machine can't be a unit (apt, systemctl, pip into /opt, the service's health);
those parts are exercised for real in test_app_workload.py."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from ops import testing

from tests.charms.app_charm import charm as charm_module
from tests.charms.app_charm import context, workload
from updown_app.caches.units import CacheUnits
from updown_app.settings import Settings

UpdownAppCharm = charm_module.UpdownAppCharm
CONFIG = {"public-hostname": "updown.test", "private-hostname": "private.updown.test"}
RELEASE = "1.0.0"


def cache_units(settings: Settings) -> CacheUnits:
    """The cache units the running app sees: what the charm wrote to caches.units_file."""
    assert settings.caches.units_file is not None
    return CacheUnits.from_settings(settings.caches)


@dataclasses.dataclass
class Host:
    """What the charm did to the machine."""

    root: Path
    release: str = RELEASE
    healthy: bool = True
    health_detail: str = "storage failed"
    calls: list[tuple[Any, ...]] = dataclasses.field(default_factory=list)

    def named(self, name: str) -> list[tuple[Any, ...]]:
        return [c for c in self.calls if c[0] == name]

    @property
    def layout(self) -> Any:
        return charm_module.LAYOUT


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Host:
    h = Host(root=tmp_path)
    layout = workload.Layout.under(tmp_path)
    monkeypatch.setattr(charm_module, "LAYOUT", layout)
    monkeypatch.setattr(charm_module, "DRAIN_SETTLE", 0)

    def install_release(wheelhouse: Path, version: str, layout: Any, **_: Any) -> Path:
        h.calls.append(("install", version))
        target = layout.release_dir(version)
        (target / "bin").mkdir(parents=True, exist_ok=True)
        (target / ".installed").write_text(version)
        return target

    def health_check(url: str, timeout: float, interval: float = 0.5) -> tuple[bool, str]:
        return (True, "") if h.healthy else (False, h.health_detail)

    monkeypatch.setattr(workload, "wheelhouse_release", lambda _: h.release)
    monkeypatch.setattr(workload, "install_os", lambda: h.calls.append(("install_os",)))
    monkeypatch.setattr(workload, "prepare_dirs", lambda layout: None)
    monkeypatch.setattr(workload, "install_release", install_release)
    monkeypatch.setattr(
        workload, "restart", lambda layout, unit_changed: h.calls.append(("restart", workload.current_release(layout)))
    )
    monkeypatch.setattr(workload, "health_check", health_check)
    monkeypatch.setattr(
        workload, "migrate", lambda version, layout: h.calls.append(("migrate", version)) or '{"revision": "0003"}'
    )
    return h


@pytest.fixture
def ctx() -> testing.Context[Any]:
    return context()


def hmac_secret(**keys: str) -> testing.Secret:
    return testing.Secret(tracked_content=keys or {"store-2024": "k1"})


def database(*, tls: str = "False") -> tuple[testing.Relation, list[testing.Secret]]:
    """The postgresql charm's answer, as its v0 provider writes it."""
    user = testing.Secret(tracked_content={"username": "relation-7", "password": "pw"})
    tls_secret = testing.Secret(tracked_content={"tls": tls, "tls-ca": ""})
    relation = testing.Relation(
        endpoint="database",
        remote_app_name="postgresql",
        remote_app_data={
            "database": "updown",
            "endpoints": "10.0.0.5:5432",
            "version": "16.10",
            "secret-user": user.id,
            "secret-tls": tls_secret.id,
        },
    )
    return relation, [user, tls_secret]


def frontends(*units: int) -> testing.Relation:
    return testing.Relation(
        endpoint="frontend-cache",
        remote_app_name="cache-frontend",
        remote_units_data={u: {"role": "frontend", "address": f"10.0.0.{u + 1}", "port": "6081"} for u in units},
    )


def ready(*relations: testing.RelationBase, leader: bool = True, **config: Any) -> testing.State:
    secret = hmac_secret()
    db, db_secrets = database()
    return testing.State(
        leader=leader,
        config={**CONFIG, "hmac-keys": secret.id, **config},
        relations=[testing.PeerRelation("rollout"), db, *relations],
        secrets=[secret, *db_secrets],
    )


def peer_of(out: testing.State) -> testing.PeerRelation:
    return next(r for r in out.relations if r.endpoint == "rollout")  # type: ignore[return-value]


def test_install_installs_os_packages_and_blocks_on_config(ctx, host):
    out = ctx.run(ctx.on.install(), testing.State())
    assert ("install_os",) in host.calls
    assert out.unit_status == testing.BlockedStatus("invalid config: public-hostname and private-hostname are required")


def test_blocked_without_hmac_key_secret(ctx, host):
    db, db_secrets = database()
    state = testing.State(config=CONFIG, relations=[testing.PeerRelation("rollout"), db], secrets=db_secrets)
    out = ctx.run(ctx.on.config_changed(), state)
    assert out.unit_status == testing.BlockedStatus(
        "no HMAC key secret: set hmac-keys to a Juju secret of {key-id: secret}"
    )


def test_blocked_without_database(ctx, host):
    secret = hmac_secret()
    state = testing.State(
        config={**CONFIG, "hmac-keys": secret.id}, relations=[testing.PeerRelation("rollout")], secrets=[secret]
    )
    out = ctx.run(ctx.on.config_changed(), state)
    assert out.unit_status == testing.BlockedStatus(
        "no database: integrate with postgresql (juju integrate updown-app postgresql)"
    )
    assert host.named("restart") == []


def test_leader_requests_the_database_and_waits_for_credentials(ctx, host):
    secret = hmac_secret()
    db = testing.Relation(endpoint="database", remote_app_name="postgresql")
    state = testing.State(
        leader=True,
        config={**CONFIG, "hmac-keys": secret.id},
        relations=[testing.PeerRelation("rollout"), db],
        secrets=[secret],
    )
    out = ctx.run(ctx.on.relation_created(db), state)
    requested = out.get_relation(db.id).local_app_data
    assert requested["database"] == "updown"
    assert json.loads(requested["requested-secrets"])[:2] == ["username", "password"]
    assert out.unit_status == testing.WaitingStatus("waiting for the database credentials")


def test_invalid_key_id_and_bad_options_block(ctx, host):
    secret = testing.Secret(tracked_content={"Store_Key": "k"})
    db, db_secrets = database()
    state = testing.State(
        config={**CONFIG, "hmac-keys": secret.id},
        relations=[testing.PeerRelation("rollout"), db],
        secrets=[secret, *db_secrets],
    )
    out = ctx.run(ctx.on.config_changed(), state)
    assert out.unit_status == testing.BlockedStatus("hmac-keys: invalid key id(s): Store_Key")
    out = ctx.run(ctx.on.config_changed(), ready(**{"storage-backend": "swift"}))
    assert out.unit_status.message.startswith("invalid config:") and "swift-auth-url" in out.unit_status.message
    out = ctx.run(
        ctx.on.config_changed(),
        ready(**{"storage-backend": "swift", "swift-auth-url": "https://k.test/v3", "swift-username": "u"}),
    )
    assert out.unit_status.message.startswith("storage-credentials: storage-backend=swift needs a secret")


def test_first_start_single_unit(ctx, host):
    out = ctx.run(ctx.on.config_changed(), ready(frontends(0, 1)))
    # the leader migrated with the new release's code before the unit started on it
    assert host.named("migrate") == [("migrate", RELEASE)]
    assert host.calls.index(("migrate", RELEASE)) < host.calls.index(("restart", RELEASE))
    assert out.unit_status == testing.ActiveStatus(f"running {RELEASE}")
    assert out.app_status == testing.ActiveStatus(f"{RELEASE} on 1 units")
    settings = Settings.load(host.layout.config)
    assert settings.database_url == "postgresql+asyncpg://relation-7:pw@10.0.0.5:5432/updown"
    assert cache_units(settings).frontends == ["http://10.0.0.1:6081", "http://10.0.0.2:6081"]
    assert settings.trusted_proxies == ["10.0.0.1", "10.0.0.2", "127.0.0.1"]
    assert settings.signing_keys() == {"store-2024": b"k1"}
    assert (host.layout.hmac_keys.stat().st_mode & 0o777) == 0o640
    peer = peer_of(out)
    assert peer.local_app_data["target"] == RELEASE and json.loads(peer.local_app_data["migrated"]) == [RELEASE]
    assert peer.local_unit_data["running"] == RELEASE and peer.local_unit_data["phase"] == "idle"
    cache = out.get_relations("frontend-cache")[0].local_unit_data
    assert {k: cache[k] for k in ("address", "port", "health-path", "draining")} == {
        "address": "192.0.2.0",
        "port": "8000",
        "health-path": "/readyz",
        "draining": "False",
    }
    # the same state again: nothing restarts
    host.calls.clear()
    again = ctx.run(ctx.on.update_status(), out)
    assert host.named("restart") == [] and again.unit_status.name == "active"


def test_cache_units_joining_and_leaving_restart_nothing(ctx, host):
    """The app re-reads caches.units_file: scaling the cache tier rewrites it, and no unit restarts or drains."""
    network = testing.Network(
        "frontend-cache",
        bind_addresses=[testing.BindAddress([testing.Address("10.0.0.9", cidr="10.0.0.0/24")])],
    )
    out = ctx.run(ctx.on.config_changed(), dataclasses.replace(ready(frontends(0)), networks={network}))
    assert out.unit_status.name == "active"
    config_before = host.layout.config.read_text()
    host.calls.clear()
    joined = frontends(0, 1)
    state = dataclasses.replace(out, relations=[r for r in out.relations if r.endpoint != "frontend-cache"] + [joined])
    out = ctx.run(ctx.on.relation_changed(joined, remote_unit=1), state)
    assert cache_units(Settings.load(host.layout.config)).frontends == ["http://10.0.0.1:6081", "http://10.0.0.2:6081"]
    assert host.layout.config.read_text() == config_before  # the restart-staged config did not change
    assert host.named("restart") == [] and out.unit_status.name == "active"
    assert out.get_relations("frontend-cache")[0].local_unit_data["draining"] == "False"


def test_database_tls_and_secret_rotation_restart(ctx, host):
    out = ctx.run(ctx.on.config_changed(), ready())
    host.calls.clear()
    # HMAC key rotation: a new key id is added to the secret; the unit restarts onto a config with both
    secret = hmac_secret(**{"store-2024": "k1", "store-2025": "k2"})
    state = dataclasses.replace(out, config={**CONFIG, "hmac-keys": secret.id}, secrets=[*out.secrets, secret])
    out = ctx.run(ctx.on.secret_changed(secret), state)
    assert host.named("restart") == [("restart", RELEASE)]
    assert Settings.load(host.layout.config).signing_keys() == {"store-2024": b"k1", "store-2025": b"k2"}
    assert host.named("migrate") == []  # once per release


def test_storage_unreachable_is_reported(ctx, host):
    host.healthy = False
    out = ctx.run(ctx.on.config_changed(), ready())
    assert out.unit_status == testing.BlockedStatus(
        f"{RELEASE} failed its health check: storage unreachable (readiness: storage failed); kept drained"
    )
    # it is not restarted again for the same attempt, but update-status retries a first start
    host.calls.clear()
    out = ctx.run(ctx.on.config_changed(), out)
    assert host.named("restart") == []
    host.healthy = True
    out = ctx.run(ctx.on.update_status(), out)
    assert host.named("restart") == [("restart", RELEASE)] and out.unit_status.name == "active"


def test_backend_cache_needs_presignable_storage(ctx, host):
    backend = testing.Relation(
        endpoint="backend-cache",
        remote_app_name="cache-backend",
        remote_units_data={0: {"role": "backend", "address": "10.0.1.1", "port": "8080"}},
    )
    out = ctx.run(ctx.on.relation_changed(backend, remote_unit=0), ready(backend))
    assert out.unit_status == testing.BlockedStatus(
        "backend-cache needs storage-backend swift (with a temp-url-key) or s3"
    )
    out = ctx.run(ctx.on.relation_changed(backend, remote_unit=0), ready(backend, **{"storage-backend": "s3"}))
    assert out.unit_status.name == "active"
    assert cache_units(Settings.load(host.layout.config)).backends == {"cache-backend/0": "http://10.0.1.1:8080"}


def test_a_frontend_unit_on_the_backend_endpoint_is_ignored(ctx, host):
    wrong = testing.Relation(
        endpoint="backend-cache",
        remote_app_name="cache-frontend",
        remote_units_data={0: {"role": "frontend", "address": "10.0.0.1", "port": "6081"}},
    )
    ctx.run(ctx.on.relation_changed(wrong, remote_unit=0), ready(wrong))
    assert cache_units(Settings.load(host.layout.config)).backends == {}


def test_non_leader_waits_for_the_migration(ctx, host):
    out = ctx.run(ctx.on.config_changed(), ready(leader=False))
    assert host.named("restart") == [] and host.named("migrate") == []
    assert out.unit_status == testing.WaitingStatus("waiting for the leader to choose the release")
    peer = testing.PeerRelation("rollout", local_app_data={"target": RELEASE, "bundled": RELEASE, "migrated": "[]"})
    others = [r for r in out.relations if r.endpoint != "rollout"]
    out = ctx.run(ctx.on.update_status(), dataclasses.replace(out, relations=[peer, *others]))
    assert out.unit_status == testing.WaitingStatus(f"waiting for the leader to migrate the database for {RELEASE}")
    peer = dataclasses.replace(peer, local_app_data={**peer.local_app_data, "migrated": json.dumps([RELEASE])})
    out = ctx.run(ctx.on.update_status(), dataclasses.replace(out, relations=[peer, *others]))
    assert host.named("restart") == [("restart", RELEASE)] and out.unit_status.name == "active"


# --- actions ------------------------------------------------------------------------------------------------------


def test_show_config_redacts_secrets(ctx, host):
    storage = testing.Secret(tracked_content={"password": "swift-pw", "temp-url-key": "tuk"})
    state = ready(
        **{"storage-backend": "swift", "swift-auth-url": "https://k.test/v3", "swift-username": "u"},
    )
    state = dataclasses.replace(
        state, config={**state.config, "storage-credentials": storage.id}, secrets=[*state.secrets, storage]
    )
    ctx.run(ctx.on.action("show-config"), state)
    results = ctx.action_results or {}
    text = results["config"]
    assert "swift-pw" not in text and "tuk" not in text and "k1" not in text and ":pw@" not in text
    shown = json.loads(text)
    assert shown["storage"]["swift"]["password"] == "<redacted>"
    assert shown["database_url"] == "postgresql+asyncpg://relation-7:<redacted>@10.0.0.5:5432/updown"
    assert results["hmac-key-ids"] == "store-2024"


def test_leader_only_actions_fail_elsewhere(ctx, host):
    for action in ("resume-refresh", "rollback"):
        with pytest.raises(testing.ActionFailed) as failed:
            ctx.run(ctx.on.action(action), ready(leader=False))
        assert failed.value.message == f"run it on the leader: juju run updown-app/leader {action}"


def test_resume_without_a_paused_refresh_fails(ctx, host):
    out = ctx.run(ctx.on.config_changed(), ready())
    with pytest.raises(testing.ActionFailed) as failed:
        ctx.run(ctx.on.action("resume-refresh"), out)
    assert failed.value.message == "no refresh is waiting to be resumed"
    with pytest.raises(testing.ActionFailed) as failed:
        ctx.run(ctx.on.action("rollback"), out)
    assert failed.value.message == "there is no previous release to roll back to"


def test_unpublish_and_purge_uploads_actions(ctx, host, monkeypatch):
    out = ctx.run(ctx.on.config_changed(), ready())
    seen: list[tuple[str, str]] = []

    def unpublish(state: Any, layout: Any, file_id: str, key_id: str | None = None) -> str:
        seen.append((file_id, sorted(state.secrets.hmac_keys)[0]))
        return f'{{"id": "{file_id}", "state": "unpublished"}}'

    monkeypatch.setattr(workload, "unpublish", unpublish)
    monkeypatch.setattr(workload, "purge_uploads", lambda layout: '{"purged": 2}')
    ctx.run(ctx.on.action("unpublish", params={"id": "f-123"}), out)
    assert seen == [("f-123", "store-2024")]
    assert json.loads((ctx.action_results or {})["result"])["state"] == "unpublished"
    monkeypatch.setattr(workload, "find_published", lambda layout, name: "f-9" if name == "/a/1/a.snap" else None)
    ctx.run(ctx.on.action("unpublish", params={"name": "/a/1/a.snap"}), out)
    assert seen[-1] == ("f-9", "store-2024") and (ctx.action_results or {})["id"] == "f-9"
    with pytest.raises(testing.ActionFailed) as failed:
        ctx.run(ctx.on.action("unpublish", params={"name": "/a/1/gone.snap"}), out)
    assert failed.value.message == "no published file at /a/1/gone.snap"
    with pytest.raises(testing.ActionFailed) as failed:
        ctx.run(ctx.on.action("unpublish", params={"id": "f-1", "name": "/a/1/a.snap"}), out)
    assert failed.value.message == "give either id or name (/<package>/<revision>/<filename>)"
    ctx.run(ctx.on.action("purge-uploads"), out)
    assert (ctx.action_results or {})["result"] == '{"purged": 2}'


def test_a_failed_migration_blocks_the_leader_and_is_retried(ctx, host, monkeypatch, caplog):
    import subprocess

    def fail(version: str, layout: object) -> str:
        host.calls.append(("migrate", version))
        raise subprocess.CalledProcessError(
            1, ["updown", "db", "upgrade"], stderr="invalid: postgresql+asyncpg://relation-7:pw@10.0.0.5/updown"
        )

    monkeypatch.setattr(workload, "migrate", fail)
    out = ctx.run(ctx.on.config_changed(), ready())
    assert out.unit_status == testing.BlockedStatus(f"the database migration for {RELEASE} failed: see juju debug-log")
    logged = [r.getMessage() for r in caplog.records if "migration" in r.getMessage()]
    assert logged and all(":pw@" not in m for m in logged) and "relation-7:<redacted>@" in logged[0]
    assert host.named("restart") == []
    monkeypatch.setattr(workload, "migrate", lambda version, layout: host.calls.append(("migrate", version)) or "{}")
    out = ctx.run(ctx.on.update_status(), out)
    assert host.named("migrate") == [("migrate", RELEASE)] * 2 and out.unit_status.name == "active"
    assert "migration-failed" not in peer_of(out).local_app_data


def test_the_carried_release_is_installed_ahead_of_its_turn(ctx, host):
    ctx.run(ctx.on.config_changed(), ready(leader=False))  # no target yet: the leader has not chosen
    assert host.named("install") == [("install", RELEASE)] and host.named("restart") == []


def test_install_and_restart_failures_are_statuses_not_hook_errors(ctx, host, monkeypatch):
    import subprocess

    def broken_install(*args: object, **kwargs: object) -> None:
        raise subprocess.CalledProcessError(1, ["pip"], stderr="No matching distribution")

    real_install = workload.install_release
    monkeypatch.setattr(workload, "install_release", broken_install)
    out = ctx.run(ctx.on.config_changed(), ready())
    assert out.unit_status == testing.BlockedStatus(
        f"installing {RELEASE} from the wheelhouse failed: see juju debug-log"
    )
    monkeypatch.setattr(workload, "install_release", real_install)

    def broken_restart(layout: object, unit_changed: bool) -> None:
        host.calls.append(("broken-restart",))
        raise subprocess.CalledProcessError(1, ["systemctl", "restart", "updown"], stderr="Job failed")

    recording_restart = workload.restart
    monkeypatch.setattr(workload, "restart", broken_restart)
    out = ctx.run(ctx.on.config_changed(), out)
    assert out.unit_status == testing.BlockedStatus(
        f"{RELEASE} failed its health check: the service is not ready (systemctl restart failed); kept drained"
    )
    assert peer_of(out).local_unit_data["phase"] == "failed"
    out = ctx.run(ctx.on.config_changed(), out)  # the same attempt is not retried on any event
    assert out.unit_status.name == "blocked" and len(host.named("broken-restart")) == 1

    monkeypatch.setattr(workload, "restart", recording_restart)
    out = ctx.run(ctx.on.update_status(), out)  # a first start that failed is retried at update-status
    assert host.named("restart") == [("restart", RELEASE)]
    assert out.unit_status == testing.ActiveStatus(f"running {RELEASE}")
    assert peer_of(out).local_unit_data["phase"] == "idle"


def test_a_unit_that_cannot_run_still_acknowledges_a_peers_drain(ctx, host):
    peer = testing.PeerRelation(
        "rollout",
        peers_data={2: {"running": "1.0.0", "phase": "draining", "drain-id": "updown-app/2>1.1.0#f"}},
    )
    out = ctx.run(ctx.on.relation_changed(peer, remote_unit=2), testing.State(config=CONFIG, relations=[peer]))
    assert out.unit_status.name == "blocked"  # no HMAC key secret, no database
    assert out.get_relation(peer.id).local_unit_data["drain-seen"] == "updown-app/2>1.1.0#f"


def test_a_new_port_is_published_when_the_unit_runs_it(ctx, host):
    peer = testing.PeerRelation("rollout", peers_data={1: {"running": RELEASE, "phase": "idle"}})
    state = ready(frontends(0), **{"storage-backend": "s3"})
    state = dataclasses.replace(state, relations=[peer, *(r for r in state.relations if r.endpoint != "rollout")])
    out = ctx.run(ctx.on.config_changed(), state)
    assert out.get_relations("frontend-cache")[0].local_unit_data["port"] == "8000"
    # the unit drains first: meanwhile the caches keep the port it serves on
    out = ctx.run(ctx.on.config_changed(), dataclasses.replace(out, config={**out.config, "port": 8080}))
    assert host.named("restart") == [("restart", RELEASE)]
    cache = out.get_relations("frontend-cache")[0].local_unit_data
    assert (cache["port"], cache["draining"]) == ("8000", "True")
    # the peer acknowledges the drain: the unit restarts on the new port and publishes it
    mine = peer_of(out).local_unit_data
    acked = dataclasses.replace(peer_of(out), peers_data={1: {"running": RELEASE, "drain-seen": mine["drain-id"]}})
    relations = [acked, *(r for r in out.relations if r.endpoint != "rollout")]
    out = ctx.run(ctx.on.relation_changed(acked, remote_unit=1), dataclasses.replace(out, relations=relations))
    assert len(host.named("restart")) == 2
    cache = out.get_relations("frontend-cache")[0].local_unit_data
    assert (cache["port"], cache["draining"]) == ("8080", "False")


def test_trusted_networks(ctx, host):
    network = testing.Network(
        "frontend-cache",
        bind_addresses=[testing.BindAddress([testing.Address("10.0.0.9", cidr="10.0.0.0/24")])],
    )
    out = ctx.run(ctx.on.config_changed(), dataclasses.replace(ready(frontends(0)), networks={network}))
    # auto: the subnet the frontends reach us on (10.0.0.1 is in it), so a joining frontend unit changes nothing
    assert Settings.load(host.layout.config).trusted_proxies == ["10.0.0.0/24", "127.0.0.1"]
    out = ctx.run(ctx.on.config_changed(), dataclasses.replace(out, config={**out.config, "trusted-networks": ""}))
    assert Settings.load(host.layout.config).trusted_proxies == ["10.0.0.1", "127.0.0.1"]
    out = ctx.run(
        ctx.on.config_changed(), dataclasses.replace(out, config={**out.config, "trusted-networks": "10.9.0.0/16"})
    )
    assert Settings.load(host.layout.config).trusted_proxies == ["10.0.0.1", "10.9.0.0/16", "127.0.0.1"]  # outside
    out = ctx.run(ctx.on.config_changed(), dataclasses.replace(out, config={**out.config, "trusted-networks": "x/99"}))
    assert out.unit_status.message.startswith("invalid config: trusted-networks:")


def test_local_storage_with_more_than_one_unit_blocks(ctx, host):
    """Two units on storage-backend=local would each keep their own files: an upload answered by one unit is a 404
    on the other. Blocked, saying what to set; nothing is installed or started."""
    peer = testing.PeerRelation("rollout", peers_data={1: {}})
    state = ready(frontends(0))
    state = dataclasses.replace(state, relations=[peer, *(r for r in state.relations if r.endpoint != "rollout")])
    out = ctx.run(ctx.on.config_changed(), state)
    assert out.unit_status == testing.BlockedStatus(
        "storage-backend=local stores files on one unit but there are 2: set storage-backend to swift or s3 "
        "(with storage-credentials), or scale to one unit"
    )
    assert host.named("restart") == []
    out = ctx.run(ctx.on.config_changed(), dataclasses.replace(state, config={**state.config, "storage-backend": "s3"}))
    assert out.unit_status == testing.ActiveStatus(f"running {RELEASE}")
    # one unit on local storage is fine (the single-node deployment)
    out = ctx.run(ctx.on.config_changed(), ready(frontends(0)))
    assert out.unit_status == testing.ActiveStatus(f"running {RELEASE}")
