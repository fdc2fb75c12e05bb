"""Staged rollouts: the pure state machine (rollout.py), then three units of the real charm driven through
ops.testing, their databags carried from hook to hook as Juju would: first deployment, a refresh with a canary
and the pause, resume-refresh, a failing release that halts the rollout, rollback, and pause=all/none."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from ops import testing

from tests.charms.app_charm import charm as charm_module
from tests.charms.app_charm import context, models, rollout, workload

Action = rollout.Action
Phase = rollout.Phase
U = rollout.UnitRollout
A = rollout.AppRollout


# --- the state machine --------------------------------------------------------------------------------------------


def units(running: str, *names: str, **overrides: dict[str, Any]) -> list[Any]:
    out = []
    for name in names:
        out.append(U(unit_name=name, running=running, pending=True, **overrides.get(name.replace("/", "_"), {})))
    return out


def test_order_is_highest_unit_first() -> None:
    assert rollout.order(["app/0", "app/10", "app/2"]) == ["app/10", "app/2", "app/0"]


def test_plan_grants_the_canary_then_pauses() -> None:
    app = A(target="2", previous="1", migrated=["1", "2"], allowed=1)
    us = units("1", "app/0", "app/1", "app/2")
    app = rollout.plan(app, us)
    assert app.grant == "app/2"
    # app/2 is done: the grant is released and nobody else goes (paused after the canary)
    us[2] = us[2].model_copy(update={"running": "2", "pending": False})
    app = rollout.plan(app, us)
    assert app.grant == "" and rollout.paused(app, us)
    app = rollout.resume(app, models.PauseAfter.FIRST, us)
    app = rollout.plan(app, us)
    assert app.grant == "app/1" and not rollout.paused(app, us)


def test_pause_all_lets_one_more_unit_per_resume() -> None:
    app = A(target="2", migrated=["2"], allowed=1)
    us = [U(unit_name="app/2", running="2"), *units("1", "app/0", "app/1")]
    app = rollout.resume(app, models.PauseAfter.ALL, us)
    assert app.allowed == 2
    assert rollout.plan(app, us).grant == "app/1"


def test_no_grant_before_the_migration_and_none_while_a_unit_works() -> None:
    us = units("1", "app/0", "app/1")
    assert rollout.plan(A(target="2", migrated=["1"]), us).grant == ""
    busy = A(target="2", migrated=["2"], grant="app/1")
    us[1] = us[1].model_copy(update={"phase": Phase.DRAINING})
    assert rollout.plan(busy, us).grant == "app/1"


def test_a_failed_unit_halts_the_rollout_until_it_recovers() -> None:
    app = A(target="2", previous="1", migrated=["1", "2"], grant="app/1")
    us = units("1", "app/0", "app/1", app_1={"phase": Phase.FAILED, "failed": "2#x"})
    assert rollout.plan(app, us).grant == "app/1"
    back = rollout.rollback(app)
    assert (back.target, back.previous) == ("1", "2")
    # the failed unit retries onto the new target (it is still drained)
    assert rollout.unit_step(us[1], back, [us[0]], attempt="1#y") is Action.RESTART
    assert rollout.unit_step(us[1], app, [us[0]], attempt="2#x") is Action.NONE


def test_a_departed_holder_frees_the_grant() -> None:
    app = A(target="2", migrated=["2"], grant="app/5")
    assert rollout.plan(app, units("1", "app/0")).grant == "app/0"


def test_unit_step_drains_then_restarts_on_a_peer_ack() -> None:
    app = A(target="2", migrated=["2"], grant="app/1")
    me = units("1", "app/1")[0]
    peer = U(unit_name="app/0", running="1")
    assert rollout.unit_step(me, app, [peer], "2#f") is Action.DRAIN
    me = me.model_copy(update={"phase": Phase.DRAINING, "drain_id": rollout.drain_id(me, "2", "f")})
    assert rollout.unit_step(me, app, [peer], "2#f") is Action.NONE  # nobody has seen the drain yet
    stale = peer.model_copy(update={"drain_seen": "app/1>1#old"})
    assert rollout.unit_step(me, app, [stale], "2#f") is Action.NONE  # an ack of an older drain does not count
    acked = peer.model_copy(update={"drain_seen": me.drain_id})
    assert rollout.unit_step(me, app, [acked], "2#f") is Action.RESTART
    alone = units("1", "app/1")[0]
    assert rollout.unit_step(alone, app, [], "2#f") is Action.RESTART  # nobody else serves: no drain
    assert rollout.unit_step(me, app, [], "2#f") is Action.RESTART  # draining, and the peers left meanwhile


def test_first_start_needs_no_grant() -> None:
    me = U(unit_name="app/3", pending=True)
    assert rollout.unit_step(me, A(target="2", migrated=["2"]), [], "2#f") is Action.START
    assert rollout.unit_step(me, A(target="2", migrated=[]), [], "2#f") is Action.NONE


def test_unit_transitions_fail_retry_and_recover() -> None:
    app = A(target="2", migrated=["2"], grant="app/1")
    me = U(unit_name="app/1", running="1", fingerprint="f")
    me = rollout.with_pending(me, app, "f")
    assert me.pending  # a new target
    me = rollout.failed(rollout.draining(me, "2", "f"), "2#f", "database failed")
    assert (me.phase, me.drain_id, me.failure) == (Phase.FAILED, "app/1>2#f", "database failed")
    # still pending while failed, even once `running` is the target (it runs the release that failed)
    assert rollout.with_pending(me.model_copy(update={"running": "2"}), app, "f").pending
    assert rollout.unit_step(me, app, [], "2#f") is Action.NONE  # the same attempt is not retried
    assert rollout.unit_step(me, app, [], "2#g") is Action.RESTART  # a config change is a new attempt
    me = rollout.restarted(me, "2", "g")
    assert (me.phase, me.pending, me.drain_id, me.failed, me.failure) == (Phase.IDLE, False, "", "", "")
    assert not rollout.with_pending(me, app, "g").pending
    # no target yet: nothing is pending
    assert not rollout.with_pending(U(unit_name="app/1"), A(), "f").pending


def test_observe_acks_a_peers_drain_and_retries_only_a_failed_first_start() -> None:
    peer = U(unit_name="app/2", running="1", phase=Phase.DRAINING, drain_id="app/2>2#f")
    me = rollout.observe(U(unit_name="app/1", failed="2#f"), [peer], retry_failed_start=False)
    assert (me.drain_seen, me.failed) == ("app/2>2#f", "2#f")
    assert rollout.observe(me, [peer], retry_failed_start=True).failed == ""
    running = U(unit_name="app/1", running="1", failed="2#f")
    assert rollout.observe(running, [], retry_failed_start=True).failed == "2#f"  # a refresh failure waits


def test_databags_round_trip() -> None:
    bag: dict[str, str] = {}
    U(unit_name="app/0", running="1", pending=True, phase=Phase.DRAINING, drain_id="x").dump(bag)
    assert bag == {"running": "1", "pending": "true", "phase": "draining", "drain-id": "x"}
    assert U.load(bag, unit_name="app/0").phase is Phase.DRAINING
    A(target="2", migrated=["1", "2"], allowed=1).dump(bag := {})
    assert json.loads(bag["migrated"]) == ["1", "2"] and A.load(bag).allowed == 1


# --- three units of the real charm --------------------------------------------------------------------------------


@dataclasses.dataclass
class Cluster:
    """Three updown-app units and one frontend cache unit. Juju's part: each hook sees the databags as the
    previous hooks left them; a unit's hook only sees what the others wrote in hooks that have ended."""

    root: Path
    monkeypatch: pytest.MonkeyPatch
    names: tuple[str, ...] = ("updown-app/0", "updown-app/1", "updown-app/2")
    release: str = "1.0.0"
    broken: set[str] = dataclasses.field(default_factory=set)  # releases that fail their health check
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    app: dict[str, str] = dataclasses.field(default_factory=dict)
    bags: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    cache_bags: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    restarts: list[tuple[str, str, list[str]]] = dataclasses.field(default_factory=list)
    migrations: list[str] = dataclasses.field(default_factory=list)
    current: str = ""
    statuses: dict[str, testing.StatusBase] = dataclasses.field(default_factory=dict)
    app_status: testing.StatusBase | None = None

    def __post_init__(self) -> None:
        self.hmac = testing.Secret(tracked_content={"store-2024": "k1"})
        self.user = testing.Secret(tracked_content={"username": "relation-7", "password": "pw"})
        self.tls = testing.Secret(tracked_content={"tls": "False"})
        self.bags = {n: {} for n in self.names}
        self.cache_bags = {n: {} for n in self.names}
        mp = self.monkeypatch
        mp.setattr(charm_module, "DRAIN_SETTLE", 0)
        mp.setattr(workload, "wheelhouse_release", lambda _: self.release)
        mp.setattr(workload, "install_os", lambda: None)
        mp.setattr(workload, "prepare_dirs", lambda layout: None)
        mp.setattr(workload, "install_release", self._install)
        mp.setattr(workload, "restart", self._restart)
        mp.setattr(workload, "health_check", self._health)
        mp.setattr(workload, "migrate", lambda version, layout: self.migrations.append(version) or "{}")

    def _install(self, wheelhouse: Path, version: str, layout: Any, **_: Any) -> Path:
        target = layout.release_dir(version)
        (target / "bin").mkdir(parents=True, exist_ok=True)
        (target / ".installed").write_text(version)
        return target

    def _restart(self, layout: Any, unit_changed: bool) -> None:
        draining = sorted(n for n, b in self.cache_bags.items() if b.get("draining") == "True")
        self.restarts.append((self.current, str(workload.current_release(layout)), draining))

    def _health(self, url: str, timeout: float, interval: float = 0.5) -> tuple[bool, str]:
        running = workload.current_release(charm_module.LAYOUT)
        return (False, "database failed") if running in self.broken else (True, "")

    def run(self, name: str, event: str = "update_status", **params: Any) -> testing.State:
        self.current = name
        self.monkeypatch.setattr(charm_module, "LAYOUT", workload.Layout.under(self.root / name.replace("/", "-")))
        number = int(name.rsplit("/", 1)[1])
        peer = testing.PeerRelation(
            "rollout",
            local_app_data=dict(self.app),
            local_unit_data=dict(self.bags[name]),
            peers_data={int(o.rsplit("/", 1)[1]): dict(self.bags[o]) for o in self.names if o != name},
        )
        db = testing.Relation(
            "database",
            remote_app_name="postgresql",
            remote_app_data={
                "database": "updown",
                "endpoints": "10.0.0.5:5432",
                "secret-user": self.user.id,
                "secret-tls": self.tls.id,
            },
        )
        cache = testing.Relation(
            "frontend-cache",
            remote_app_name="cache-frontend",
            local_unit_data=dict(self.cache_bags[name]),
            remote_units_data={0: {"role": "frontend", "address": "10.0.0.1", "port": "6081"}},
        )
        state = testing.State(
            leader=number == 0,
            config={
                "public-hostname": "updown.test",
                "private-hostname": "private.updown.test",
                "hmac-keys": self.hmac.id,
                "storage-backend": "s3",  # shared storage: local storage refuses a second unit
                **self.config,
            },
            relations=[peer, db, cache],
            secrets=[self.hmac, self.user, self.tls],
        )
        ctx = context(unit_id=number)
        trigger = ctx.on.action(event, params=params) if event.startswith(("resume", "rollback")) else None
        out = ctx.run(trigger or getattr(ctx.on, event)(), state)
        got = out.get_relation(peer.id)
        self.bags[name] = dict(got.local_unit_data)
        if number == 0:
            self.app = dict(got.local_app_data)
            self.app_status = out.app_status
        self.cache_bags[name] = dict(out.get_relation(cache.id).local_unit_data)
        self.statuses[name] = out.unit_status
        return out

    def settle(self, event: str = "update_status", rounds: int = 12) -> None:
        """Every unit runs a hook, in turn, until nothing changes (the leader first, as is likely)."""
        for n in self.names:
            self.run(n, event)
        for _ in range(rounds):
            before = json.dumps([self.app, self.bags, self.cache_bags], sort_keys=True)
            for n in self.names:
                self.run(n)
            if json.dumps([self.app, self.bags, self.cache_bags], sort_keys=True) == before:
                return
        raise AssertionError("the rollout did not settle")

    def running(self) -> dict[str, str]:
        return {n: self.bags[n].get("running", "") for n in self.names}


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cluster:
    c = Cluster(root=tmp_path, monkeypatch=monkeypatch)
    c.settle("config_changed")
    return c


def test_first_deployment_starts_every_unit_after_the_migration(cluster: Cluster) -> None:
    assert cluster.migrations == ["1.0.0"]
    assert cluster.running() == dict.fromkeys(cluster.names, "1.0.0")
    assert sorted(r[0] for r in cluster.restarts) == sorted(cluster.names)
    assert all(r[2] == [] for r in cluster.restarts)  # nothing to drain on a first start
    assert all(s == testing.ActiveStatus("running 1.0.0") for s in cluster.statuses.values())
    assert cluster.app_status == testing.ActiveStatus("1.0.0 on 3 units")


def test_refresh_canary_pause_resume(cluster: Cluster) -> None:
    cluster.restarts.clear()
    cluster.release = "1.1.0"  # `juju refresh`: every unit now carries the new wheelhouse
    cluster.settle("upgrade_charm")
    assert cluster.migrations == ["1.0.0", "1.1.0"]
    # the canary (highest unit) went alone, drained while it restarted; then the rollout paused
    assert cluster.restarts == [("updown-app/2", "1.1.0", ["updown-app/2"])]
    assert cluster.running() == {"updown-app/0": "1.0.0", "updown-app/1": "1.0.0", "updown-app/2": "1.1.0"}
    assert cluster.cache_bags["updown-app/2"]["draining"] == "False"  # healthy: back in service
    status = cluster.app_status
    assert status is not None and status.name == "blocked"
    assert status.message.startswith("refresh to 1.1.0 paused after updown-app/2: check it")
    assert "`juju run updown-app/leader resume-refresh`" in status.message
    assert "`juju run updown-app/leader rollback`" in status.message and "--revision" in status.message
    assert cluster.statuses["updown-app/1"] == testing.WaitingStatus(
        "refresh to 1.1.0 paused: waiting for resume-refresh"
    )

    cluster.run("updown-app/0", "resume-refresh")
    cluster.settle()
    # one at a time, in order, each drained (and only it) while it restarted
    assert cluster.restarts[1:] == [
        ("updown-app/1", "1.1.0", ["updown-app/1"]),
        ("updown-app/0", "1.1.0", ["updown-app/0"]),
    ]
    assert cluster.running() == dict.fromkeys(cluster.names, "1.1.0")
    assert all(b["draining"] == "False" for b in cluster.cache_bags.values())
    assert cluster.app_status == testing.ActiveStatus("1.1.0 on 3 units")


def test_failed_health_check_halts_then_rollback(cluster: Cluster) -> None:
    cluster.restarts.clear()
    cluster.release = "1.1.0"
    cluster.broken = {"1.1.0"}
    cluster.settle("upgrade_charm")
    assert [r[:2] for r in cluster.restarts] == [("updown-app/2", "1.1.0")]
    assert cluster.cache_bags["updown-app/2"]["draining"] == "True"  # stays out of service
    assert cluster.statuses["updown-app/2"] == testing.BlockedStatus(
        "1.1.0 failed its health check: database unreachable (readiness: database failed); kept drained"
    )
    status = cluster.app_status
    assert status is not None and status.name == "blocked"
    assert status.message.startswith("refresh to 1.1.0 stopped: updown-app/2 failed its health check")
    cluster.settle()  # nothing else moves while it is failed
    assert len(cluster.restarts) == 1 and cluster.running()["updown-app/1"] == "1.0.0"

    cluster.run("updown-app/0", "rollback")
    cluster.settle()
    assert cluster.restarts[1][:2] == ("updown-app/2", "1.0.0")  # the previous release, still installed
    assert cluster.running() == dict.fromkeys(cluster.names, "1.0.0")
    assert all(b["draining"] == "False" for b in cluster.cache_bags.values())
    assert cluster.app_status == testing.ActiveStatus("1.0.0 on 3 units")
    assert cluster.migrations == ["1.0.0", "1.1.0"]  # no migration back down


def test_pause_none_and_config_changes_roll_without_pausing(cluster: Cluster) -> None:
    cluster.restarts.clear()
    cluster.config = {"pause-after-unit-refresh": "none"}
    cluster.release = "1.1.0"
    cluster.settle("upgrade_charm")
    assert [r[0] for r in cluster.restarts] == ["updown-app/2", "updown-app/1", "updown-app/0"]
    assert all(r[2] == [r[0]] for r in cluster.restarts)
    cluster.restarts.clear()
    cluster.config = {"pause-after-unit-refresh": "first", "max-upload-size": 1024}  # a config change: no pause
    cluster.settle("config_changed")
    # each unit once, one at a time, each drained (and only it) while it restarted
    assert sorted(r[0] for r in cluster.restarts) == sorted(cluster.names)
    assert all(r[2] == [r[0]] for r in cluster.restarts)
    assert cluster.app_status == testing.ActiveStatus("1.1.0 on 3 units")


def test_pause_all_waits_after_every_unit(cluster: Cluster) -> None:
    cluster.restarts.clear()
    cluster.config = {"pause-after-unit-refresh": "all"}
    cluster.release = "1.1.0"
    cluster.settle("upgrade_charm")
    assert [r[0] for r in cluster.restarts] == ["updown-app/2"]
    cluster.run("updown-app/0", "resume-refresh")
    cluster.settle()
    assert [r[0] for r in cluster.restarts] == ["updown-app/2", "updown-app/1"]
    cluster.run("updown-app/0", "resume-refresh")
    cluster.settle()
    assert cluster.running() == dict.fromkeys(cluster.names, "1.1.0")
