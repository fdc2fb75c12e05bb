#!/usr/bin/env python3
"""updown-app: every event goes to one reconcile. Juju state -> AppState (state.py) -> workload.py, with the
restarts staged one unit at a time by rollout.py."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path

import ops
import pydantic

import rollout
import state as juju_state
import workload
from interface import AppUnitData
from models import AppState, PauseAfter
from rollout import Action, AppRollout, Phase, UnitRollout
from state import BACKEND_CACHE, DATABASE, FRONTEND_CACHE, PEER, StateError

try:  # `charmcraft fetch-libs` brings it into lib/ at pack time (charmcraft.yaml `charm-libs`)
    from charms.grafana_agent.v0.cos_agent import COSAgentProvider  # type: ignore[import-not-found,unused-ignore]
except ImportError:
    COSAgentProvider = None

logger = logging.getLogger(__name__)

LAYOUT = workload.Layout()
# After a peer acknowledged our drain, the caches have had the same relation-changed: give their HAProxy and
# Varnish reloads a moment before the restart.
DRAIN_SETTLE = 5.0


class UpdownAppCharm(ops.CharmBase):
    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        self.framework.observe(self.on.install, self._on_install)
        for event in (
            self.on.config_changed,
            self.on.upgrade_charm,
            self.on.start,
            self.on.update_status,
            self.on.leader_elected,
            self.on.secret_changed,
            self.on[PEER].relation_created,
            self.on[PEER].relation_joined,
            self.on[PEER].relation_changed,
            self.on[PEER].relation_departed,
            self.on[DATABASE].relation_created,
            self.on[DATABASE].relation_changed,
            self.on[DATABASE].relation_broken,
            self.on[FRONTEND_CACHE].relation_joined,
            self.on[FRONTEND_CACHE].relation_changed,
            self.on[FRONTEND_CACHE].relation_departed,
            self.on[FRONTEND_CACHE].relation_broken,
            self.on[BACKEND_CACHE].relation_joined,
            self.on[BACKEND_CACHE].relation_changed,
            self.on[BACKEND_CACHE].relation_departed,
            self.on[BACKEND_CACHE].relation_broken,
        ):
            self.framework.observe(event, self._reconcile)
        self.framework.observe(self.on.collect_unit_status, self._on_collect_unit_status)
        self.framework.observe(self.on.collect_app_status, self._on_collect_app_status)
        self.framework.observe(self.on.unpublish_action, self._on_unpublish)
        self.framework.observe(self.on.purge_uploads_action, self._on_purge_uploads)
        self.framework.observe(self.on.resume_refresh_action, self._on_resume_refresh)
        self.framework.observe(self.on.rollback_action, self._on_rollback)
        self.framework.observe(self.on.show_config_action, self._on_show_config)
        if COSAgentProvider is not None:  # /metrics on the service port (plain HTTP, exempt from the redirect)
            port = int(str(self.config.get("port", 8000)))
            self._cos_agent = COSAgentProvider(self, metrics_endpoints=[{"path": "/metrics", "port": port}])

    # -- events ------------------------------------------------------------------------------------------------

    def _on_install(self, event: ops.EventBase) -> None:
        self.unit.status = ops.MaintenanceStatus("installing")
        workload.install_os()
        workload.prepare_dirs(LAYOUT)
        self._reconcile(event)

    def _reconcile(self, _event: ops.EventBase) -> None:
        juju_state.request_database(self)
        peer = self.model.get_relation(PEER)
        if peer is None:
            return  # the peer relation exists from the first hooks on; nothing can be staged without it
        app, me, peers = self._rollout(peer)
        me = rollout.observe(me, peers, retry_failed_start=isinstance(_event, ops.UpdateStatusEvent))
        if self.unit.is_leader():
            bundled = self._bundled_release()
            if bundled and bundled != app.bundled:
                app = rollout.new_target(app, bundled, self._pause())
        try:
            self._ensure_installed(app.target)
            st = self._build_state()
        except StateError as problem:
            logger.info("not applying the workload config: %s", problem)
            self._publish(peer, app, me, draining=me.phase is not Phase.IDLE)
            return
        # Cache units joining or leaving: the running app re-reads this file; nothing restarts for it.
        workload.write_files({LAYOUT.cache_units: workload.render_cache_units(st)})
        files = workload.rendered_files(st, LAYOUT)
        fingerprint = workload.fingerprint(files)
        attempt = f"{app.target}#{fingerprint}"
        me = rollout.with_pending(me, app, fingerprint)
        if self.unit.is_leader():
            app = self._migrate(app, st)
        for _ in range(3):  # the leader may grant itself, or a finished holder free the lock for the next unit
            if self.unit.is_leader():
                app = rollout.plan(app, [me, *peers])
            action = rollout.unit_step(me, app, peers, attempt)
            if action is Action.NONE:
                break
            me = self._act(action, me, app, st, files, fingerprint, attempt)
            if action is Action.DRAIN:
                break  # the caches only see `draining` once this hook ends
        self._publish(peer, app, me, draining=me.phase is not Phase.IDLE, state=st)

    def _act(
        self,
        action: Action,
        me: UnitRollout,
        app: AppRollout,
        st: AppState,
        files: dict[Path, str],
        fingerprint: str,
        attempt: str,
    ) -> UnitRollout:
        if action is Action.DRAIN:
            logger.info("draining before the restart onto %s", app.target)
            return rollout.draining(me, app.target, fingerprint)
        if action is Action.RESTART and me.phase is Phase.DRAINING:
            time.sleep(DRAIN_SETTLE)
        self.unit.status = ops.MaintenanceStatus(f"restarting onto {app.target}")
        changed = workload.write_files(files, private=LAYOUT.secret_files, group=self._group())
        workload.activate(app.target, LAYOUT)
        try:
            workload.restart(LAYOUT, unit_changed=LAYOUT.unit_file in changed)
        except subprocess.CalledProcessError as exc:
            logger.error("restarting onto %s failed: %s", app.target, workload.scrubbed_stderr(exc, st))
            return rollout.failed(me, attempt, "systemctl restart failed")
        ok, detail = workload.health_check(workload.health_url(st), st.config.health_check_timeout)
        if not ok:
            logger.warning("release %s failed its health check: %s", app.target, detail)
            return rollout.failed(me, attempt, detail)
        workload.prune_releases(LAYOUT, keep={app.target, app.previous, me.running} - {""})
        return rollout.restarted(me, app.target, fingerprint)

    def _migrate(self, app: AppRollout, st: AppState) -> AppRollout:
        """The leader migrates the schema once per release, with that release's code, before any unit runs it."""
        if not app.target or app.is_migrated(app.target):
            return app
        self.unit.status = ops.MaintenanceStatus(f"migrating the database for {app.target}")
        # Only database_url matters to `updown db upgrade`; a private copy keeps the live config untouched.
        with tempfile.TemporaryDirectory(prefix="updown-migrate-") as tmp:
            layout = dataclasses.replace(LAYOUT, config=Path(tmp) / "migrate.toml")
            workload.write_files(
                {layout.config: workload.render_config(st, layout)}, private=frozenset({layout.config})
            )
            try:
                out = workload.migrate(app.target, layout)
            except subprocess.CalledProcessError as exc:
                logger.error(
                    "migration for %s failed (exit %s): %s",
                    app.target,
                    exc.returncode,
                    workload.scrubbed_stderr(exc, st),
                )
                return app.model_copy(update={"migration_failed": app.target})  # retried on the next event
        logger.info("database migrated for %s: %s", app.target, out.strip()[-200:])
        return app.model_copy(update={"migrated": [*app.migrated, app.target], "migration_failed": ""})

    # -- status ------------------------------------------------------------------------------------------------

    def _on_collect_unit_status(self, event: ops.CollectStatusEvent) -> None:
        try:
            st = self._build_state()
        except StateError as problem:
            event.add_status(problem.status)
            return
        peer = self.model.get_relation(PEER)
        if peer is None:
            event.add_status(ops.WaitingStatus("waiting for the peer relation"))
            return
        app, me, peers = self._rollout(peer)
        target = app.target
        if target and target not in workload.installed_releases(LAYOUT):
            # the reconcile tried to install it just before this: say why it is not there
            if target == self._bundled_release():
                event.add_status(
                    ops.BlockedStatus(f"installing {target} from the wheelhouse failed: see juju debug-log")
                )
            else:
                event.add_status(ops.BlockedStatus(_not_carried(target)))
        elif me.phase is Phase.FAILED or (me.failed and not me.running):
            event.add_status(
                ops.BlockedStatus(f"{target} failed its health check: {_unready_message(me.failure)}; kept drained")
            )
        elif not target:
            event.add_status(ops.WaitingStatus("waiting for the leader to choose the release"))
        elif not app.is_migrated(target) and app.migration_failed == target and self.unit.is_leader():
            event.add_status(ops.BlockedStatus(f"the database migration for {target} failed: see juju debug-log"))
        elif not app.is_migrated(target):
            event.add_status(ops.WaitingStatus(f"waiting for the leader to migrate the database for {target}"))
        elif me.phase is Phase.DRAINING:
            event.add_status(ops.MaintenanceStatus(f"draining before the restart onto {target}"))
        elif me.pending and rollout.paused(app, [me, *peers]):
            event.add_status(ops.WaitingStatus(f"refresh to {target} paused: waiting for resume-refresh"))
        elif me.pending:
            event.add_status(ops.WaitingStatus(f"waiting for its turn to restart onto {target}"))
        elif me.running:
            ok, detail = workload.health_check(workload.health_url(st), timeout=2)
            if ok:
                event.add_status(ops.ActiveStatus(f"running {me.running}"))
            else:
                event.add_status(ops.BlockedStatus(_unready_message(detail)))
        else:
            event.add_status(ops.WaitingStatus("starting"))

    def _on_collect_app_status(self, event: ops.CollectStatusEvent) -> None:
        peer = self.model.get_relation(PEER)
        if peer is None or not self.unit.is_leader():
            return
        app, me, peers = self._rollout(peer)
        units = [me, *peers]
        name = self.app.name
        rollback = f"`juju run {name}/leader rollback` or `juju refresh {name} --revision <previous revision>`"
        failed = [u for u in units if u.phase is Phase.FAILED]
        if failed:
            u = failed[0]
            event.add_status(
                ops.BlockedStatus(
                    f"refresh to {app.target} stopped: {u.unit_name} failed its health check ({u.failure}) and "
                    f"stays drained; roll back with {rollback}"
                )
            )
        elif rollout.paused(app, units):
            done = [u.unit_name for u in units if u.running == app.target and not u.pending]
            event.add_status(
                ops.BlockedStatus(
                    f"refresh to {app.target} paused after {', '.join(done)}: check it (juju debug-log, "
                    f"its /metrics, downloads through the frontend), then `juju run {name}/leader resume-refresh`; "
                    f"to roll back: {rollback}"
                )
            )
        elif any(u.pending for u in units):
            count = sum(1 for u in units if u.running == app.target and not u.pending)
            event.add_status(ops.MaintenanceStatus(f"rolling onto {app.target}: {count}/{len(units)} units done"))
        elif app.target:
            event.add_status(ops.ActiveStatus(f"{app.target} on {len(units)} units"))

    # -- actions -----------------------------------------------------------------------------------------------

    def _on_unpublish(self, event: ops.ActionEvent) -> None:
        file_id = str(event.params.get("id", "")).strip()
        name = str(event.params.get("name", "")).strip()
        if bool(file_id) == bool(name):
            event.fail("give either id or name (/<package>/<revision>/<filename>)")
            return
        try:
            st = self._build_state()
        except StateError as problem:
            event.fail(f"the unit is not configured: {problem}")
            return
        try:
            if name:
                found = workload.find_published(LAYOUT, name)
                if found is None:
                    event.fail(f"no published file at {name}")
                    return
                file_id = found
            out = workload.unpublish(st, LAYOUT, file_id)
        except ValueError as exc:
            event.fail(str(exc))
            return
        except subprocess.CalledProcessError as exc:
            event.fail(f"unpublish failed: {workload.scrubbed_stderr(exc, st)}")
            return
        event.set_results({"result": out.strip(), "id": file_id})

    def _on_purge_uploads(self, event: ops.ActionEvent) -> None:
        try:
            out = workload.purge_uploads(LAYOUT)
        except (subprocess.CalledProcessError, FileNotFoundError) as exc:
            event.fail(f"purge-uploads failed: {getattr(exc, 'stderr', '') or exc}"[-500:])
            return
        event.set_results({"result": out.strip()})

    def _on_resume_refresh(self, event: ops.ActionEvent) -> None:
        peer = self._leader_peer(event)
        if peer is None:
            return
        app, me, peers = self._rollout(peer)
        if not rollout.paused(app, [me, *peers]):
            event.fail("no refresh is waiting to be resumed")
            return
        rollout.resume(app, self._pause(), [me, *peers]).dump(peer.data[self.app])
        event.set_results({"result": f"resumed the refresh to {app.target}"})
        self._reconcile(event)

    def _on_rollback(self, event: ops.ActionEvent) -> None:
        peer = self._leader_peer(event)
        if peer is None:
            return
        app, _, _ = self._rollout(peer)
        try:
            back = rollout.rollback(app)
        except ValueError as exc:
            event.fail(str(exc))
            return
        back.dump(peer.data[self.app])
        event.set_results({"result": f"rolling back from {app.target} to {back.target}"})
        self._reconcile(event)

    def _on_show_config(self, event: ops.ActionEvent) -> None:
        try:
            st = self._build_state()
        except StateError as problem:
            event.fail(f"the unit is not configured: {problem}")
            return
        settings = workload.shown_settings(st, LAYOUT)
        event.set_results(
            {
                "config": json.dumps(settings, indent=2, sort_keys=True),
                "hmac-key-ids": ",".join(sorted(st.secrets.hmac_keys)),
            }
        )

    # -- helpers -----------------------------------------------------------------------------------------------

    def _leader_peer(self, event: ops.ActionEvent) -> ops.Relation | None:
        if not self.unit.is_leader():
            action = event.handle.kind.removesuffix("_action").replace("_", "-")
            event.fail(f"run it on the leader: juju run {self.app.name}/leader {action}")
            return None
        peer = self.model.get_relation(PEER)
        if peer is None:
            event.fail("no peer relation yet")
        return peer

    def _rollout(self, peer: ops.Relation) -> tuple[AppRollout, UnitRollout, list[UnitRollout]]:
        app = AppRollout.load(peer.data[self.app])
        me = UnitRollout.load(peer.data[self.unit], unit_name=self.unit.name)
        peers = [UnitRollout.load(peer.data[u], unit_name=u.name) for u in sorted(peer.units, key=lambda u: u.name)]
        return app, me, peers

    def _pause(self) -> PauseAfter:
        try:
            return juju_state.load_config(self).pause_after_unit_refresh
        except StateError:
            return PauseAfter.FIRST

    def _bundled_release(self) -> str | None:
        return workload.wheelhouse_release(self.charm_dir / "wheelhouse")

    def _ensure_installed(self, target: str) -> None:
        """Install the target (and, ahead of its turn, the release this charm carries: side by side, harmless)."""
        bundled = self._bundled_release()
        installed = workload.installed_releases(LAYOUT)
        if bundled and bundled != target and bundled not in installed:
            self._install(bundled)
        if not target or target in installed:
            return
        if target != bundled:
            raise StateError(ops.BlockedStatus(_not_carried(target)))
        self._install(target)

    def _install(self, release: str) -> None:
        self.unit.status = ops.MaintenanceStatus(f"installing {release}")
        try:
            workload.install_release(self.charm_dir / "wheelhouse", release, LAYOUT)
        except subprocess.CalledProcessError as exc:
            logger.error("installing %s failed: %s", release, (exc.stderr or "").strip()[-1000:])
            raise StateError(
                ops.BlockedStatus(f"installing {release} from the wheelhouse failed: see juju debug-log")
            ) from exc

    def _build_state(self) -> AppState:
        config = juju_state.load_config(self)
        peer = self.model.get_relation(PEER)
        juju_state.storage_fits_units(config, 1 + (len(peer.units) if peer else 0))
        address = juju_state.unit_address(self)
        secrets = juju_state.secrets(config)
        database = juju_state.database(self)
        try:
            return AppState(
                unit_name=self.unit.name,
                address=address,
                config=config,
                database=database,
                secrets=secrets,
                caches=juju_state.caches(self),
                trusted_networks=juju_state.trusted_networks(self, config),
                workers=config.workers or workload.workers_for(os.cpu_count()),
            )
        except pydantic.ValidationError as exc:
            raise StateError(
                ops.BlockedStatus("; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors()))
            ) from exc

    def _group(self) -> str | None:
        return workload.USER if LAYOUT == workload.Layout() else None

    def _publish(
        self,
        peer: ops.Relation,
        app: AppRollout,
        me: UnitRollout,
        *,
        draining: bool,
        state: AppState | None = None,
    ) -> None:
        me.dump(peer.data[self.unit])
        if self.unit.is_leader():
            app.dump(peer.data[self.app])
        try:
            config = juju_state.load_config(self) if state is None else state.config
            address = juju_state.unit_address(self) if state is None else state.address
        except StateError:
            return
        # The port the service runs on now: a changed port only becomes true at this unit's restart.
        port = workload.running_port(LAYOUT) or config.port
        data = AppUnitData(address=address, port=port, health_path=workload.HEALTH_PATH, draining=draining)
        for endpoint in (FRONTEND_CACHE, BACKEND_CACHE):
            for relation in self.model.relations[endpoint]:
                data.dump(relation.data[self.unit])


def _not_carried(release: str) -> str:
    return (
        f"release {release} is not installed on this unit and this charm does not carry it: "
        "refresh to a charm revision that does"
    )


def _unready_message(detail: str) -> str:
    if "storage" in detail:
        return f"storage unreachable (readiness: {detail})"
    if "database" in detail:
        return f"database unreachable (readiness: {detail})"
    return f"the service is not ready ({detail})"


if __name__ == "__main__":  # pragma: nocover
    ops.main(UpdownAppCharm)
