"""Staged rollouts: one unit at a time, in a fixed order, each drained, restarted, health-checked and put back;
a pause for the operator after the canary (`pause-after-unit-refresh`); a halt when a unit fails its health check.
Pure functions over the peer relation's data (no Juju imports): the charm reads the databags into these models,
calls `plan` (leader) and `unit_step` (every unit), and carries out what they say.

Why not charmlibs-rollingops: its peer backend hands the lock out by priority (held retries, then first-time
requests, then released retries), not in a fixed unit order; it has no gate where the rollout waits for an
operator after the canary; and a failed operation is retried (RETRY_RELEASE/RETRY_HOLD) where we must stop the
rollout and keep the failed unit out of service. The same lock discipline is kept here: only the leader grants,
and to one unit at a time.

The protocol, all through the `rollout` peer relation:

- app databag (leader): `target` release every unit should run, `previous` (what `rollback` returns to),
  `bundled` (the release the leader's charm carries, to notice a refresh), `migrated` (releases the database
  schema was migrated for), `grant` (the unit allowed to restart), `allowed` (how many units may run the target
  before the rollout pauses for `resume-refresh`).
- unit databag (each unit): `running` release and `fingerprint` of the config it runs, `pending` (it has a
  change to apply), `phase` (idle | draining | failed), `drain-id` while draining, `drain-seen` (the peer's
  drain this unit has seen: the ack that wakes the draining unit up in its next hook), `failed` (the attempt
  that failed, so it is not retried until the target or config changes).

A unit that has never run starts at once (nothing to drain). A running unit with a change waits for the grant,
then publishes `draining` to the caches (their HAProxy and Varnish stop sending it new requests) and ends its
hook, since relation data is only seen by others once a hook ends; a peer's ack starts its next hook, in which it
switches release/config and restarts (SIGTERM: in-flight transfers finish within drain-timeout), then polls its
health check. Healthy: it is put back and the leader grants the next unit. Unhealthy: it stays drained and
`failed`; the leader grants nobody else until the unit recovers (rollback, or a refresh to another revision).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, MutableMapping
from enum import StrEnum
from typing import Self

from pydantic import BaseModel, ConfigDict, Field

from models import PauseAfter

UNLIMITED = 1_000_000


class Phase(StrEnum):
    IDLE = "idle"
    DRAINING = "draining"
    FAILED = "failed"


class Action(StrEnum):
    NONE = "none"
    START = "start"  # first start: no traffic to drain
    DRAIN = "drain"  # publish draining, end the hook, wait for a peer's ack
    RESTART = "restart"  # switch release/config, restart, health-check


def unit_number(name: str) -> int:
    return int(name.rsplit("/", 1)[1])


def order(names: Iterable[str]) -> list[str]:
    """Refresh order: highest unit number first (as the data-platform charms do), so the canary is the newest
    unit and the leader, usually unit 0, comes late."""
    return sorted(names, key=unit_number, reverse=True)


class _Bag(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    @classmethod
    def load(cls, databag: Mapping[str, str], **extra: str) -> Self:
        data: dict[str, object] = {**databag, **extra}
        for key, field in cls.model_fields.items():
            alias = field.alias or key
            if alias in data and field.annotation in (list[str], tuple[str, ...]):
                data[alias] = json.loads(str(data[alias]))
            if alias in data and field.annotation is bool:
                data[alias] = data[alias] == "true"
        return cls.model_validate(data)

    def dump(self, databag: MutableMapping[str, str]) -> None:
        for key, value in self.model_dump(by_alias=True, exclude={"unit_name"}).items():
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, list | tuple):
                text = json.dumps(list(value))
            else:
                text = str(value)
            if text:
                databag[key] = text
            else:
                databag.pop(key, None)


class UnitRollout(_Bag):
    unit_name: str
    running: str = ""
    fingerprint: str = ""
    pending: bool = False
    phase: Phase = Phase.IDLE
    drain_id: str = Field("", alias="drain-id")
    drain_seen: str = Field("", alias="drain-seen")
    failed: str = ""
    failure: str = ""  # what the failed health check said (e.g. "storage failed")


class AppRollout(_Bag):
    target: str = ""
    previous: str = ""
    bundled: str = ""
    migrated: list[str] = Field(default_factory=list)
    grant: str = ""
    allowed: int = UNLIMITED
    migration_failed: str = Field("", alias="migration-failed")  # the release whose migration failed last

    def is_migrated(self, release: str) -> bool:
        return release in self.migrated


def allowed_for(pause: PauseAfter) -> int:
    """How many units may run a new target before the rollout pauses."""
    return UNLIMITED if pause is PauseAfter.NONE else 1


def resume(app: AppRollout, pause: PauseAfter, units: Iterable[UnitRollout]) -> AppRollout:
    """`resume-refresh`: after the canary, `first` lets every remaining unit go; `all` lets one more go."""
    on_target = sum(1 for u in units if u.running == app.target and not u.pending)
    allowed = UNLIMITED if pause is not PauseAfter.ALL else on_target + 1
    return app.model_copy(update={"allowed": max(app.allowed, allowed)})


def new_target(app: AppRollout, release: str, pause: PauseAfter) -> AppRollout:
    """A refresh brought a new release (or the first install): roll onto it."""
    previous = app.target if app.target and app.target != release else app.previous
    first = not app.target
    return app.model_copy(
        update={
            "target": release,
            "previous": previous,
            "bundled": release,
            "allowed": UNLIMITED if first else allowed_for(pause),
        }
    )


def rollback(app: AppRollout) -> AppRollout:
    """`rollback`: back to the previous release, every unit, without pausing."""
    if not app.previous:
        raise ValueError("there is no previous release to roll back to")
    return app.model_copy(update={"target": app.previous, "previous": app.target, "allowed": UNLIMITED})


def is_refresh(unit: UnitRollout, app: AppRollout) -> bool:
    """The unit's pending change is a release change (not only a config change)."""
    return bool(unit.running) and unit.running != app.target


def plan(app: AppRollout, units: Iterable[UnitRollout]) -> AppRollout:
    """The leader's step: release a finished grant, keep a failed one (halt), or grant the next unit in order."""
    by_name = {u.unit_name: u for u in units}
    if app.grant:
        holder = by_name.get(app.grant)
        if holder is not None and (holder.phase is not Phase.IDLE or holder.pending):
            return app  # still working, or failed: the rollout stays halted on it
        app = app.model_copy(update={"grant": ""})
    if not app.is_migrated(app.target):
        return app
    on_target = sum(1 for u in by_name.values() if u.running == app.target and not u.pending)
    for name in order(by_name):
        unit = by_name[name]
        if not unit.running or not (unit.pending or is_refresh(unit, app)):
            # Not started yet (it starts without a grant), or up to date. A unit on another release needs the
            # target even before it has said so (its `pending` may predate the new target). A config change is
            # only known to the unit itself (the workers are sized to its machine): it says so with `pending`.
            continue
        if is_refresh(unit, app) and on_target >= app.allowed:
            return app  # paused: waiting for resume-refresh
        return app.model_copy(update={"grant": name})
    return app


def drain_id(me: UnitRollout, target: str, fingerprint: str) -> str:
    return f"{me.unit_name}>{target}#{fingerprint}"


# --- the unit's own transitions (what the charm writes back after observing or acting) --------------------------


def observe(me: UnitRollout, peers: Iterable[UnitRollout], *, retry_failed_start: bool) -> UnitRollout:
    """What this unit writes whatever its own state: the ack of a peer's drain (our change of data is what wakes
    the draining unit up; a unit that cannot run must still give it, or the rollout would wait forever), and, when
    asked (update-status), the retry of a first start that failed (such a unit serves nothing)."""
    draining = [p.drain_id for p in peers if p.phase is Phase.DRAINING and p.drain_id]
    if draining and me.drain_seen != draining[0]:
        me = me.model_copy(update={"drain_seen": draining[0]})
    if retry_failed_start and me.failed and not me.running:
        me = me.model_copy(update={"failed": ""})
    return me


def with_pending(me: UnitRollout, app: AppRollout, fingerprint: str) -> UnitRollout:
    """`pending`: the target or the rendered config differ from what the unit runs. A failed unit runs the
    release that failed, not `running`: it needs the target whatever that is."""
    outdated = me.running != app.target or me.fingerprint != fingerprint or me.phase is Phase.FAILED
    return me.model_copy(update={"pending": bool(app.target) and outdated})


def draining(me: UnitRollout, target: str, fingerprint: str) -> UnitRollout:
    return me.model_copy(update={"phase": Phase.DRAINING, "drain_id": drain_id(me, target, fingerprint)})


def failed(me: UnitRollout, attempt: str, failure: str) -> UnitRollout:
    """Kept drained and not retried until the attempt (target release + config) changes."""
    return me.model_copy(update={"phase": Phase.FAILED, "failed": attempt, "failure": failure})


def restarted(me: UnitRollout, target: str, fingerprint: str) -> UnitRollout:
    """Healthy on the target: back in service."""
    update = {"running": target, "fingerprint": fingerprint, "pending": False, "phase": Phase.IDLE}
    return me.model_copy(update={**update, "drain_id": "", "failed": "", "failure": ""})


def unit_step(me: UnitRollout, app: AppRollout, peers: Iterable[UnitRollout], attempt: str) -> Action:
    """What this unit does now. `attempt` names the change it would apply (target release + config)."""
    if not me.pending:
        return Action.NONE
    if not app.is_migrated(app.target):
        return Action.NONE
    if not me.running:
        return Action.START if me.failed != attempt else Action.NONE
    if app.grant != me.unit_name:
        return Action.NONE
    if me.phase is Phase.FAILED:
        return Action.RESTART if me.failed != attempt else Action.NONE
    others = list(peers)
    if me.phase is Phase.IDLE:
        return Action.DRAIN if others else Action.RESTART  # alone: nobody else could serve meanwhile anyway
    if not others or any(p.drain_seen == me.drain_id for p in others):
        return Action.RESTART  # acknowledged, or the peers left meanwhile (nobody would acknowledge)
    return Action.NONE


def paused(app: AppRollout, units: Iterable[UnitRollout]) -> bool:
    """The rollout waits for resume-refresh: a unit still needs the new release but the gate is closed."""
    units = list(units)
    if app.grant or not app.is_migrated(app.target):
        return False
    on_target = sum(1 for u in units if u.running == app.target and not u.pending)
    return any(is_refresh(u, app) for u in units) and on_target >= app.allowed
