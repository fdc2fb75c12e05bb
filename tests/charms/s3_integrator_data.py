"""The `s3-credentials` relation as Canonical's s3-integrator charm leaves it, for ops.testing. Its two tracks:

1/stable (charms.data_platform_libs.v0.s3): once the requirer wrote `bucket`, the leader writes every option that
is set, as strings, `tls-ca-chain` as a JSON list of the PEM certificates of its (base64) option, and
`access-key`/`secret-key` from `juju run s3-integrator/leader sync-s3-credentials access-key=... secret-key=...`.
Unset options are absent (the charm deletes them). Its library also keeps, under `data`, the requirer's databag
as it last saw it (JSON).

2/edge (object-storage-integrators, its v1 s3 lib on data_interfaces): `lib-version` first, the options set
(same spellings), and the keys of its `credentials` secret moved into a secret of its own, named by
`secret-extra`, because the requirer asked for them in `requested-secrets`.
"""

from __future__ import annotations

import json

from ops import testing


def options(
    *,
    endpoint: str | None = None,
    bucket: str = "updown",
    region: str | None = None,
    uri_style: str | None = None,
    ca_chain: list[str] | None = None,
    path: str | None = None,
) -> dict[str, str]:
    data = {"bucket": bucket}
    for key, value in (("endpoint", endpoint), ("region", region), ("s3-uri-style", uri_style), ("path", path)):
        if value:
            data[key] = value
    if ca_chain:
        data["tls-ca-chain"] = json.dumps(ca_chain)
    return data


def stable(access_key: str | None, secret_key: str | None, **opts: object) -> testing.Relation:
    """1/stable, after its config and (when the keys are given) sync-s3-credentials."""
    data = options(**opts)  # type: ignore[arg-type]
    requested = {"bucket": data["bucket"], "requested-secrets": '["access-key", "secret-key"]'}
    data["data"] = json.dumps(requested)
    if access_key and secret_key:
        data.update({"access-key": access_key, "secret-key": secret_key})
    return testing.Relation(
        endpoint="s3-credentials", interface="s3", remote_app_name="s3-integrator", remote_app_data=data
    )


def edge(access_key: str, secret_key: str, **opts: object) -> tuple[testing.Relation, testing.Secret]:
    """2/edge: the keys in the secret named by `secret-extra` (owned by the integrator, granted to us)."""
    secret = testing.Secret(tracked_content={"access-key": access_key, "secret-key": secret_key})
    data = {"lib-version": "1.0", **options(**opts), "secret-extra": secret.id}  # type: ignore[arg-type]
    relation = testing.Relation(
        endpoint="s3-credentials", interface="s3", remote_app_name="s3-integrator", remote_app_data=data
    )
    return relation, secret
