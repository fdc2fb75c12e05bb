"""What the unit and the application show (collect-status), decided from the state the charm read: pure functions
of the rollout's peer data, the releases on disk and the built AppState (or the StateError that stopped it). The
only look at the running service, the unit's health check, is a callable the charm passes in."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import ops

import rollout
from rollout import AppRollout, Phase, UnitRollout


def not_carried(release: str) -> str:
    return (
        f"release {release} is not installed on this unit and this charm does not carry it: "
        "refresh to a charm revision that does"
    )


def install_failed(release: str) -> str:
    return f"installing {release} from the wheelhouse failed: see juju debug-log"


def unready_message(detail: str) -> str:
    if "storage" in detail:
        return f"storage unreachable (readiness: {detail})"
    if "database" in detail:
        return f"database unreachable (readiness: {detail})"
    return f"the service is not ready ({detail})"


def unit_status(
    app: AppRollout,
    me: UnitRollout,
    peers: Sequence[UnitRollout],
    *,
    installed: Sequence[str],
    bundled: str | None,
    is_leader: bool,
    health: Callable[[], tuple[bool, str]],
) -> ops.StatusBase:
    """The unit's status once its state is built: the rollout's stage, else the running service's health."""
    target = app.target
    if target and target not in installed:
        # the reconcile tried to install it just before this: say why it is not there
        return ops.BlockedStatus(install_failed(target) if target == bundled else not_carried(target))
    if me.phase is Phase.FAILED or (me.failed and not me.running):
        return ops.BlockedStatus(f"{target} failed its health check: {unready_message(me.failure)}; kept drained")
    if not target:
        return ops.WaitingStatus("waiting for the leader to choose the release")
    if not app.is_migrated(target) and app.migration_failed == target and is_leader:
        return ops.BlockedStatus(f"the database migration for {target} failed: see juju debug-log")
    if not app.is_migrated(target):
        return ops.WaitingStatus(f"waiting for the leader to migrate the database for {target}")
    if me.phase is Phase.DRAINING:
        return ops.MaintenanceStatus(f"draining before the restart onto {target}")
    if me.pending and rollout.paused(app, [me, *peers]):
        return ops.WaitingStatus(f"refresh to {target} paused: waiting for resume-refresh")
    if me.pending:
        return ops.WaitingStatus(f"waiting for its turn to restart onto {target}")
    if me.running:
        ok, detail = health()
        return ops.ActiveStatus(f"running {me.running}") if ok else ops.BlockedStatus(unready_message(detail))
    return ops.WaitingStatus("starting")


def app_status(app: AppRollout, units: Sequence[UnitRollout], app_name: str) -> ops.StatusBase | None:
    """The application's status (the leader's view of the rollout); None while there is nothing to say."""
    rollback = f"`juju run {app_name}/leader rollback` or `juju refresh {app_name} --revision <previous revision>`"
    failed = [u for u in units if u.phase is Phase.FAILED]
    if failed:
        u = failed[0]
        return ops.BlockedStatus(
            f"refresh to {app.target} stopped: {u.unit_name} failed its health check ({u.failure}) and "
            f"stays drained; roll back with {rollback}"
        )
    if rollout.paused(app, units):
        done = [u.unit_name for u in units if u.running == app.target and not u.pending]
        return ops.BlockedStatus(
            f"refresh to {app.target} paused after {', '.join(done)}: check it (juju debug-log, "
            f"its /metrics, downloads through the frontend), then `juju run {app_name}/leader resume-refresh`; "
            f"to roll back: {rollback}"
        )
    if any(u.pending for u in units):
        count = sum(1 for u in units if u.running == app.target and not u.pending)
        return ops.MaintenanceStatus(f"rolling onto {app.target}: {count}/{len(units)} units done")
    if app.target:
        return ops.ActiveStatus(f"{app.target} on {len(units)} units")
    return None
