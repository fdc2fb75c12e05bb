"""A requirer's request in the v0 form of Canonical's data-platform interfaces (postgresql_client, s3): the
leader writes its fields and the secret fields it wants (`requested-secrets`) in its application databag.

Written only when a value differs: every write fires relation-changed on the provider's side.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import ops
from dpcharmlibs.interfaces import OpsRelationRepository


def request(charm: ops.CharmBase, endpoint: str, fields: Mapping[str, str], requested_secrets: Sequence[str]) -> None:
    if not charm.unit.is_leader():
        return
    wanted = {**fields, "requested-secrets": json.dumps(list(requested_secrets))}
    for relation in charm.model.relations[endpoint]:
        repository = OpsRelationRepository(charm.model, relation, charm.app)
        for key, value in wanted.items():
            if repository.get_field(key) != value:
                repository.write_field(key, value)
