"""Build the typed CacheState from Juju: config, the peer ring, the `app` relation and TLS material. Every
problem becomes a StateError with the message the unit shows (collect-status)."""

from __future__ import annotations

import logging

import ops
import pydantic

from models import CacheConfig, Origin, RingMember, TLSMaterial, UpstreamError, with_upstream
from updown_charms import relations, status
from updown_charms.interface import AppUnitData, RingUnitData, StoreAppData
from updown_charms.status import StateError

logger = logging.getLogger(__name__)

RING = "ring"
APP = "app"
CERTIFICATES = "certificates"


class CharmConfig(CacheConfig):
    """CacheConfig plus the options that only mean something to Juju."""

    model_config = pydantic.ConfigDict(frozen=True, extra="ignore", arbitrary_types_allowed=True)

    tls_secret_id: ops.Secret | None = None


def load_config(charm: ops.CharmBase) -> CharmConfig:
    return status.load_config(charm, CharmConfig)


def unit_address(charm: ops.CharmBase) -> str:
    return relations.bind_address(charm, RING)


def ring_members(charm: ops.CharmBase, me: RingMember) -> tuple[RingMember, ...]:
    """This unit plus every peer that published its Varnish; peers without (valid) data are skipped."""
    peers = relations.published(charm.model.relations[RING], RingUnitData)
    return (me, *(RingMember(unit_name=unit.name, address=data.address, port=data.port) for unit, data in peers))


def origins(charm: ops.CharmBase) -> tuple[Origin, ...]:
    return tuple(
        Origin(
            unit_name=unit.name,
            address=data.address,
            port=data.port,
            health_path=data.health_path,
            draining=data.draining,
        )
        for unit, data in relations.published(charm.model.relations[APP], AppUnitData)
    )


def backend_config(charm: ops.CharmBase, config: CharmConfig) -> CharmConfig:
    """role=backend: `config` with its store resolved (its own upstream-url / upstream-ca, else what the
    updown-app leader published in its application data on `app`)."""
    if not config.upstream_url and not charm.model.relations[APP]:
        raise StateError(
            ops.BlockedStatus(
                "no upstream: integrate with updown-app (endpoint app), which publishes its store, or set upstream-url"
            )
        )
    try:
        return with_upstream(config, published_stores(charm))
    except UpstreamError as problem:
        raise StateError(ops.BlockedStatus(str(problem))) from problem


def published_stores(charm: ops.CharmBase) -> list[StoreAppData]:
    stores = []
    for relation in charm.model.relations[APP]:
        if relation.app is None:
            continue
        try:
            stores.append(StoreAppData.load(relation.data[relation.app]))
        except pydantic.ValidationError:  # not a schema problem the operator can fix: read again on the next change
            logger.info("%s has not published a usable store yet", relation.app.name)
    return stores


def tls_from_secret(secret: ops.Secret) -> TLSMaterial:
    try:
        content = secret.get_content(refresh=True)
    except (ops.SecretNotFoundError, ops.ModelError) as exc:
        raise StateError(ops.BlockedStatus("tls-secret-id: secret not found or not granted")) from exc
    if not content.get("certificate") or not content.get("key"):
        raise StateError(ops.BlockedStatus('tls-secret-id: the secret needs keys "certificate" and "key"'))
    return TLSMaterial(chain=content["certificate"], key=content["key"])
