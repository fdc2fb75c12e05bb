"""The steps the reconcile carries out on this unit, without Juju: install a release from the wheelhouse, migrate
the database for it (the leader), restart onto a release and config and health-check it. Each reports what it is
doing through `say` (the charm's maintenance status) and returns the rollout's next state; a step that cannot
go on raises a StateError with the status to show."""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import ops

import rollout
import statuses
import workload
from models import AppState
from rollout import AppRollout, UnitRollout
from updown_charms.status import StateError

logger = logging.getLogger(__name__)

Say = Callable[[str], None]


def service_group(layout: workload.Layout) -> str | None:
    """The group the secret files belong to: the service's, on a real unit (a relocated layout is a test's)."""
    return workload.USER if layout == workload.Layout() else None


def ensure_installed(target: str, bundled: str | None, wheelhouse: Path, layout: workload.Layout, say: Say) -> None:
    """Install the target (and, ahead of its turn, the release this charm carries: side by side, harmless)."""
    installed = workload.installed_releases(layout)
    if bundled and bundled != target and bundled not in installed:
        install(bundled, wheelhouse, layout, say)
    if not target or target in installed:
        return
    if target != bundled:
        raise StateError(ops.BlockedStatus(statuses.not_carried(target)))
    install(target, wheelhouse, layout, say)


def install(release: str, wheelhouse: Path, layout: workload.Layout, say: Say) -> None:
    say(f"installing {release}")
    try:
        workload.install_release(wheelhouse, release, layout)
    except subprocess.CalledProcessError as exc:
        logger.error("installing %s failed: %s", release, (exc.stderr or "").strip()[-1000:])
        raise StateError(ops.BlockedStatus(statuses.install_failed(release))) from exc


def migrate(app: AppRollout, st: AppState, layout: workload.Layout, say: Say) -> AppRollout:
    """The leader migrates the schema once per release, with that release's code, before any unit runs it."""
    if not app.target or app.is_migrated(app.target):
        return app
    say(f"migrating the database for {app.target}")
    # Only database_url matters to `updown db upgrade`; a private copy keeps the live config untouched.
    with tempfile.TemporaryDirectory(prefix="updown-migrate-") as tmp:
        private = dataclasses.replace(layout, config=Path(tmp) / "migrate.toml")
        workload.write_files({private.config: workload.render_config(st, private)}, private=frozenset({private.config}))
        try:
            out = workload.migrate(app.target, private)
        except subprocess.CalledProcessError as exc:
            logger.error(
                "migration for %s failed (exit %s): %s", app.target, exc.returncode, workload.scrubbed_stderr(exc, st)
            )
            return app.model_copy(update={"migration_failed": app.target})  # retried on the next event
    logger.info("database migrated for %s: %s", app.target, out.strip()[-200:])
    return app.model_copy(update={"migrated": [*app.migrated, app.target], "migration_failed": ""})


def restart_onto(
    me: UnitRollout,
    app: AppRollout,
    st: AppState,
    files: dict[Path, str],
    attempt: str,
    layout: workload.Layout,
    say: Say,
) -> UnitRollout:
    """Write the config, switch to the target release, restart and health-check: restarted, or failed (the
    rollout stops on this unit, kept drained)."""
    say(f"restarting onto {app.target}")
    changed = workload.write_files(files, private=layout.secret_files, group=service_group(layout))
    workload.activate(app.target, layout)
    try:
        workload.restart(layout, unit_changed=layout.unit_file in changed)
    except subprocess.CalledProcessError as exc:
        logger.error("restarting onto %s failed: %s", app.target, workload.scrubbed_stderr(exc, st))
        return rollout.failed(me, attempt, "systemctl restart failed")
    ok, detail = workload.health_check(workload.health_url(st), st.config.health_check_timeout)
    if not ok:
        logger.warning("release %s failed its health check: %s", app.target, detail)
        return rollout.failed(me, attempt, detail)
    workload.prune_releases(layout, keep={app.target, app.previous, me.running} - {""})
    return rollout.restarted(me, app.target, workload.fingerprint(files))
