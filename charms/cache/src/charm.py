#!/usr/bin/env python3
"""updown-cache: every event goes to one reconcile. Juju state -> CacheState (state.py) -> workload.py."""

from __future__ import annotations

import logging

import ops
from charmlibs.interfaces.tls_certificates import (
    CertificateRequestAttributes,
    Mode,
    TLSCertificatesRequiresV4,
)

import state as juju_state
import workload
from models import CacheState, RingMember, Telemetry, TLSMaterial
from state import APP, CERTIFICATES, RING
from updown_charms import cos_agent
from updown_charms.interface import CacheUnitData, RingUnitData
from updown_charms.status import StateError
from updown_charms.values import Role

logger = logging.getLogger(__name__)

LAYOUT = workload.Layout()


class CacheCharm(ops.CharmBase):
    _stored = ops.StoredState()  # type: ignore[no-untyped-call]

    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        self._stored.set_default(installed=False, role="")
        self.certificates = TLSCertificatesRequiresV4(
            self,
            CERTIFICATES,
            certificate_requests=self._certificate_requests(),
            mode=Mode.UNIT,
            refresh_events=[self.on.config_changed],
        )
        self.framework.observe(self.on.install, self._on_install)
        for event in (
            self.on.config_changed,
            self.on.upgrade_charm,
            self.on.start,
            self.on.secret_changed,
            self.on[RING].relation_joined,
            self.on[RING].relation_changed,
            self.on[RING].relation_departed,
            self.on[APP].relation_joined,
            self.on[APP].relation_changed,
            self.on[APP].relation_departed,
            self.on[APP].relation_broken,
            self.on[CERTIFICATES].relation_changed,
            self.on[cos_agent.RELATION].relation_joined,
            self.on[cos_agent.RELATION].relation_changed,
            self.on[CERTIFICATES].relation_broken,
            self.certificates.on.certificate_available,
        ):
            self.framework.observe(event, self._reconcile)
        self.framework.observe(self.on.collect_unit_status, self._on_collect_status)

    # -- events ------------------------------------------------------------------------------------------------

    def _on_install(self, event: ops.EventBase) -> None:
        role = Role.BACKEND if self.config.get("role") == Role.BACKEND.value else Role.FRONTEND
        self.unit.status = ops.MaintenanceStatus(
            "installing nginx" if role is Role.BACKEND else "installing haproxy and varnish"
        )
        workload.install(role, LAYOUT)
        self._stored.installed = True
        self._reconcile(event)

    def _reconcile(self, _event: ops.EventBase) -> None:
        self._publish_telemetry()
        try:
            state = self._build_state(publish=True)
        except StateError as problem:
            logger.info("not applying the workload config: %s", problem)
            return
        changed = workload.apply(state, LAYOUT)
        if changed:
            logger.info("applied %s", ", ".join(sorted(str(p) for p in changed)))

    def _on_collect_status(self, event: ops.CollectStatusEvent) -> None:
        try:
            state = self._build_state(publish=False)
        except StateError as problem:
            event.add_status(problem.status)
            return
        if state.config.role is Role.BACKEND:
            event.add_status(
                ops.ActiveStatus(f"backend: {len(state.origins)} app units, upstream {state.config.upstream_host}")
            )
            return
        event.add_status(
            ops.ActiveStatus(f"{state.config.role}: {len(state.ring)} ring units, {len(state.origins)} app units")
        )

    # -- Juju state -> CacheState ------------------------------------------------------------------------------

    def _build_state(self, *, publish: bool) -> CacheState:
        # Checked before the rest of the config: the other role's options would be reported as invalid instead.
        if self._stored.role and self._stored.role != str(self.config.get("role", "")).strip():
            raise StateError(
                ops.BlockedStatus(
                    f"role cannot change after deployment (deployed as {self._stored.role}): set it back, or "
                    "deploy another application for the other role"
                )
            )
        config = juju_state.load_config(self)
        if not self._stored.role and self._stored.installed:
            self._stored.role = config.role.value  # the first valid config fixes the role
        address = juju_state.unit_address(self)
        if publish:
            self._publish(config.role, address, config.cache_port)
        if config.role is Role.BACKEND:
            return self._backend_state(config, address)
        me = RingMember(unit_name=self.unit.name, address=address, port=config.cache_port)
        ring = juju_state.ring_members(self, me)
        if not self.model.relations[APP]:
            raise StateError(ops.BlockedStatus("no origin: integrate with updown-app (endpoint app)"))
        origins = juju_state.origins(self)
        if not origins:
            raise StateError(ops.WaitingStatus("waiting for the updown-app units to publish their address"))
        tls = self._tls(config)
        return CacheState(
            unit_name=self.unit.name,
            address=address,
            config=config,
            ring=ring,
            origins=origins,
            tls=tls,
        )

    def _backend_state(self, config: juju_state.CharmConfig, address: str) -> CacheState:
        """role=backend: no ring, no TLS of its own; the store from config or updown-app; the app units are its
        clients (the allow list)."""
        config = juju_state.backend_config(self, config)
        if not self.model.relations[APP]:
            raise StateError(ops.BlockedStatus("no client: integrate with updown-app (endpoint app)"))
        clients = juju_state.origins(self)
        if not clients:
            raise StateError(ops.WaitingStatus("waiting for the updown-app units to publish their address"))
        return CacheState(unit_name=self.unit.name, address=address, config=config, origins=clients)

    def _publish_telemetry(self) -> None:
        """What the COS agent scrapes here, the rules and dashboards: known from the role alone, so COS sees a
        unit (and alerts on it) even while its config is incomplete."""
        role = Role.BACKEND if str(self.config.get("role", "")).strip() == Role.BACKEND.value else Role.FRONTEND
        cos_agent.publish(self, workload.scrape_jobs(role, Telemetry()))

    def _publish(self, role: Role, address: str, port: int) -> None:
        ring = self.model.get_relation(RING)
        if ring is not None and role is Role.FRONTEND:
            RingUnitData(address=address, port=port).dump(ring.data[self.unit])
        for relation in self.model.relations[APP]:
            CacheUnitData(role=role, address=address, port=port).dump(relation.data[self.unit])

    def _tls(self, config: juju_state.CharmConfig) -> TLSMaterial:
        if config.tls_secret_id is not None:
            return juju_state.tls_from_secret(config.tls_secret_id)
        if not self.model.relations[CERTIFICATES]:
            raise StateError(
                ops.BlockedStatus("no TLS certificate: integrate with a certificates provider or set tls-secret-id")
            )
        requests = self._certificate_requests()
        if not requests:
            raise StateError(ops.BlockedStatus("no TLS certificate: public-hostname is not set"))
        provider_cert, key = self.certificates.get_assigned_certificate(requests[0])
        if provider_cert is None or key is None:
            raise StateError(ops.WaitingStatus("waiting for the TLS certificate from the certificates provider"))
        leaf = str(provider_cert.certificate).strip()
        chain = [str(c).strip() for c in provider_cert.chain if str(c).strip() != leaf]
        if not chain and provider_cert.ca:
            chain = [str(provider_cert.ca).strip()]
        return TLSMaterial(chain="\n".join([leaf, *chain]) + "\n", key=str(key))

    def _certificate_requests(self) -> list[CertificateRequestAttributes]:
        public = str(self.config.get("public-hostname", "")).strip().lower()
        private = str(self.config.get("private-hostname", "")).strip().lower()
        if not public:
            return []
        return [CertificateRequestAttributes(common_name=public, sans_dns=frozenset(h for h in (public, private) if h))]


if __name__ == "__main__":  # pragma: nocover
    ops.main(CacheCharm)
