#!/usr/bin/env python3
"""updown-app: every event goes to one reconcile. Juju state -> AppState (state.py) -> the steps of deploy.py and
workload.py, with the restarts staged one unit at a time by rollout.py; the statuses come from statuses.py and
the actions from actions.py. This module only reads and writes Juju (databags, status, action results)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import ops

import actions
import deploy
import rollout
import state as juju_state
import statuses
import workload
from models import AppState, PauseAfter
from rollout import Action, AppRollout, Phase, UnitRollout
from s3_integrator import S3_CREDENTIALS
from state import BACKEND_CACHE, DATABASE, FRONTEND_CACHE, PEER
from updown_charms import cos_agent
from updown_charms.interface import AppUnitData
from updown_charms.status import StateError

logger = logging.getLogger(__name__)

LAYOUT = workload.Layout()
# After a peer acknowledged our drain, the caches have had the same relation-changed: give their HAProxy and
# Varnish reloads a moment before the restart.
DRAIN_SETTLE = 5.0


class UpdownAppCharm(ops.CharmBase):
    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        self.framework.observe(self.on.install, self._on_install)
        relation_events = {
            PEER: ("created", "joined", "changed", "departed"),
            DATABASE: ("created", "changed", "broken"),
            S3_CREDENTIALS: ("created", "changed", "broken"),
            FRONTEND_CACHE: ("joined", "changed", "departed", "broken"),
            BACKEND_CACHE: ("joined", "changed", "departed", "broken"),
        }
        events = [self.on.config_changed, self.on.upgrade_charm, self.on.start, self.on.update_status]
        events += [self.on.leader_elected, self.on.secret_changed]
        events += [
            getattr(self.on[name], f"relation_{kind}") for name, kinds in relation_events.items() for kind in kinds
        ]
        for event in events:
            self.framework.observe(event, self._reconcile)
        self.framework.observe(self.on.collect_unit_status, self._on_collect_unit_status)
        self.framework.observe(self.on.collect_app_status, self._on_collect_app_status)
        self.framework.observe(self.on.unpublish_action, self._on_unpublish)
        self.framework.observe(self.on.purge_uploads_action, self._on_purge_uploads)
        self.framework.observe(self.on.resume_refresh_action, self._on_resume_refresh)
        self.framework.observe(self.on.rollback_action, self._on_rollback)
        self.framework.observe(self.on.show_config_action, self._on_show_config)
        for event in (self.on[cos_agent.RELATION].relation_joined, self.on[cos_agent.RELATION].relation_changed):
            self.framework.observe(event, self._on_cos_agent)

    # -- events ------------------------------------------------------------------------------------------------

    def _on_install(self, event: ops.EventBase) -> None:
        self.unit.status = ops.MaintenanceStatus("installing")
        workload.install_os()
        workload.prepare_dirs(LAYOUT)
        self._reconcile(event)

    def _reconcile(self, _event: ops.EventBase) -> None:
        juju_state.request_database(self)
        juju_state.request_s3(self)
        self._publish_store()
        peer = self.model.get_relation(PEER)
        if peer is None:
            return  # the peer relation exists from the first hooks on; nothing can be staged without it
        app, me, peers = self._rollout(peer)
        me = rollout.observe(me, peers, retry_failed_start=isinstance(_event, ops.UpdateStatusEvent))
        bundled = self._bundled_release()
        if self.unit.is_leader() and bundled and bundled != app.bundled:
            app = rollout.new_target(app, bundled, self._pause())
        try:
            deploy.ensure_installed(app.target, bundled, self._wheelhouse, LAYOUT, self._say)
            st = juju_state.app_state(self)
        except StateError as problem:
            logger.info("not applying the workload config: %s", problem)
            self._publish(peer, app, me, draining=me.phase is not Phase.IDLE)
            return
        # Cache units joining or leaving: the running app re-reads this file; nothing restarts for it.
        workload.write_files({LAYOUT.cache_units: workload.render_cache_units(st.caches)})
        files = workload.rendered_files(st, LAYOUT)
        fingerprint = workload.fingerprint(files)
        attempt = f"{app.target}#{fingerprint}"
        me = rollout.with_pending(me, app, fingerprint)
        if self.unit.is_leader():
            app = deploy.migrate(app, st, LAYOUT, self._say)
        for _ in range(3):  # the leader may grant itself, or a finished holder free the lock for the next unit
            if self.unit.is_leader():
                app = rollout.plan(app, [me, *peers])
            action = rollout.unit_step(me, app, peers, attempt)
            if action is Action.NONE:
                break
            if action is Action.DRAIN:
                logger.info("draining before the restart onto %s", app.target)
                me = rollout.draining(me, app.target, fingerprint)
                break  # the caches only see `draining` once this hook ends
            if action is Action.RESTART and me.phase is Phase.DRAINING:
                time.sleep(DRAIN_SETTLE)
            me = deploy.restart_onto(me, app, st, files, attempt, LAYOUT, self._say)
        self._publish(peer, app, me, draining=me.phase is not Phase.IDLE, state=st)

    def _publish_store(self) -> None:
        """The leader tells the backend caches which store to read (application data: Juju lets the leader alone
        write it). While config or s3-integrator are unusable the last store published stays: the units still
        run on it, and the unit's status says what is wrong."""
        if not self.unit.is_leader() or not self.model.relations[BACKEND_CACHE]:
            return
        try:
            store = juju_state.store(self)
        except StateError as problem:
            logger.info("not publishing the store to the backend caches: %s", problem)
            return
        for relation in self.model.relations[BACKEND_CACHE]:
            store.dump(relation.data[self.app])

    def _on_cos_agent(self, _event: ops.EventBase) -> None:
        try:
            port = workload.running_port(LAYOUT) or juju_state.load_config(self).port
        except StateError:
            port = int(str(self.config.get("port", 8000)))
        self._publish_telemetry(port)

    def _publish_telemetry(self, port: int) -> None:
        """/metrics on the service port (plain HTTP, exempt from the redirect), which answers loopback only (the
        COS agent's scrape) and is never routed from the public by the frontend caches."""
        cos_agent.publish(self, [cos_agent.scrape_job("updown", port, "/metrics")])

    # -- status ------------------------------------------------------------------------------------------------

    def _on_collect_unit_status(self, event: ops.CollectStatusEvent) -> None:
        try:
            st = juju_state.app_state(self)
        except StateError as problem:
            event.add_status(problem.status)
            return
        peer = self.model.get_relation(PEER)
        if peer is None:
            event.add_status(ops.WaitingStatus("waiting for the peer relation"))
            return
        app, me, peers = self._rollout(peer)
        event.add_status(
            statuses.unit_status(
                app,
                me,
                peers,
                installed=workload.installed_releases(LAYOUT),
                bundled=self._bundled_release(),
                is_leader=self.unit.is_leader(),
                health=lambda: workload.health_check(workload.health_url(st), timeout=2),
            )
        )

    def _on_collect_app_status(self, event: ops.CollectStatusEvent) -> None:
        peer = self.model.get_relation(PEER)
        if peer is None or not self.unit.is_leader():
            return
        app, me, peers = self._rollout(peer)
        shown = statuses.app_status(app, [me, *peers], self.app.name)
        if shown is not None:
            event.add_status(shown)

    # -- actions -----------------------------------------------------------------------------------------------

    def _on_unpublish(self, event: ops.ActionEvent) -> None:
        self._run(event, lambda: actions.unpublish(event.params, lambda: juju_state.app_state(self), LAYOUT))

    def _on_purge_uploads(self, event: ops.ActionEvent) -> None:
        self._run(event, lambda: actions.purge_uploads(LAYOUT))

    def _on_show_config(self, event: ops.ActionEvent) -> None:
        self._run(event, lambda: actions.show_config(lambda: juju_state.app_state(self), LAYOUT))

    def _on_resume_refresh(self, event: ops.ActionEvent) -> None:
        self._run_on_leader(event, lambda app, units: actions.resume_refresh(app, units, self._pause()))

    def _on_rollback(self, event: ops.ActionEvent) -> None:
        self._run_on_leader(event, lambda app, _units: actions.rollback(app))

    def _run(self, event: ops.ActionEvent, action: Callable[[], actions.Results]) -> None:
        try:
            event.set_results(action())
        except actions.ActionFailed as exc:
            event.fail(str(exc))

    def _run_on_leader(
        self,
        event: ops.ActionEvent,
        action: Callable[[AppRollout, list[UnitRollout]], tuple[AppRollout, actions.Results]],
    ) -> None:
        """A rollout action: the leader changes the app databag, then reconciles at once."""
        if not self.unit.is_leader():
            name = event.handle.kind.removesuffix("_action").replace("_", "-")
            event.fail(f"run it on the leader: juju run {self.app.name}/leader {name}")
            return
        peer = self.model.get_relation(PEER)
        if peer is None:
            event.fail("no peer relation yet")
            return
        app, me, peers = self._rollout(peer)
        try:
            changed, results = action(app, [me, *peers])
        except actions.ActionFailed as exc:
            event.fail(str(exc))
            return
        changed.dump(peer.data[self.app])
        event.set_results(results)
        self._reconcile(event)

    # -- Juju reads and writes ---------------------------------------------------------------------------------

    def _say(self, message: str) -> None:
        self.unit.status = ops.MaintenanceStatus(message)

    @property
    def _wheelhouse(self) -> Path:
        return self.charm_dir / "wheelhouse"

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
        return workload.wheelhouse_release(self._wheelhouse)

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
        self._publish_telemetry(port)
        data = AppUnitData(address=address, port=port, health_path=workload.HEALTH_PATH, draining=draining)
        for endpoint in (FRONTEND_CACHE, BACKEND_CACHE):
            for relation in self.model.relations[endpoint]:
                data.dump(relation.data[self.unit])


if __name__ == "__main__":  # pragma: nocover
    ops.main(UpdownAppCharm)
