"""The `s3-credentials` relation (interface `s3`) with Canonical's s3-integrator charm, read with
dpcharmlibs-interfaces' repositories (no S3 requirer classes there: the model below is ours).

What the integrator writes in its application databag, both tracks:
  bucket, endpoint, region, path, s3-uri-style, s3-api-version, storage-class, attributes, tls-ca-chain
  (a JSON list of PEM certificates), delete-older-than-days; access-key and secret-key.
1/stable (charms.data_platform_libs.v0.s3) writes the keys in the databag itself, and publishes anything only
once the requirer has written `bucket`. 2/edge (its v1 lib on data_interfaces) moves the keys into a Juju secret
named by `secret-extra` when the requirer lists them in `requested-secrets`, and honours the requirer's bucket
only then. So the leader writes both: `bucket` (s3-bucket) and `requested-secrets`.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import ops
import pydantic
from dpcharmlibs.interfaces import OpsRelationRepositoryInterface
from dpcharmlibs.interfaces.models import ProviderCommonModel
from dpcharmlibs.interfaces.types import ExtraSecretStr

import v0_request
from updown_charms.status import StateError
from updown_charms.values import pem_certificates

logger = logging.getLogger(__name__)

S3_CREDENTIALS = "s3-credentials"
REQUESTED_SECRETS = ["access-key", "secret-key"]
SYNC = "juju run s3-integrator/leader sync-s3-credentials access-key=<key> secret-key=<secret>"
WAITING = f"waiting for s3-integrator credentials ({SYNC})"
# s3-uri-style as the integrator's users spell it (pgBackRest: host/path) -> our s3-addressing-style
URI_STYLES = {"path": "path", "host": "virtual", "virtual": "virtual", "virtual-hosted": "virtual"}


def _text(value: object) -> str | None:
    """The library decodes every databag value as JSON: a bucket `2024` or a key of digits becomes a number."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    raise ValueError(f"expected a string, got {type(value).__name__}")


class S3IntegratorData(ProviderCommonModel):
    """The integrator's databag. The keys: in the databag (1/stable), or in the `secret-extra` secret (2/edge)."""

    access_key: ExtraSecretStr = pydantic.Field(default=None)
    secret_key: ExtraSecretStr = pydantic.Field(default=None)
    bucket: str | None = None
    endpoint: str | None = None
    region: str | None = None
    path: str | None = None
    s3_uri_style: str | None = None
    s3_api_version: str | None = None
    tls_ca_chain: list[str] | None = None

    @pydantic.field_validator(
        "access_key", "secret_key", "bucket", "endpoint", "region", "path", "s3_uri_style", "s3_api_version",
        mode="before",
    )  # fmt: skip
    @classmethod
    def _as_text(cls, value: object) -> str | None:
        return _text(value)

    @pydantic.field_validator("tls_ca_chain", mode="before")
    @classmethod
    def _chain(cls, value: object) -> Any:
        if isinstance(value, str):  # one PEM, not a JSON list
            return [value] if value.strip() else None
        return value


class S3Connection(pydantic.BaseModel):
    """What the integrator gave, checked: the overrides of the s3-* options and of storage-credentials."""

    model_config = pydantic.ConfigDict(frozen=True)

    bucket: str | None
    endpoint_url: str | None
    region: str | None
    addressing_style: str | None
    ca_chain: str  # PEM, empty: the system's CAs
    access_key_id: pydantic.SecretStr
    secret_access_key: pydantic.SecretStr


def request(charm: ops.CharmBase, bucket: str) -> None:
    """The leader asks for credentials: `bucket` (1/stable publishes nothing before it) and the keys as secrets."""
    v0_request.request(charm, S3_CREDENTIALS, {"bucket": bucket}, REQUESTED_SECRETS)


def connection(charm: ops.CharmBase) -> S3Connection | None:
    """The integrator's S3 store; None without the relation. A relation without keys yet blocks the unit."""
    relation = charm.model.get_relation(S3_CREDENTIALS)
    if relation is None:
        return None
    if relation.app is None:
        raise StateError(ops.BlockedStatus(WAITING))
    interface = OpsRelationRepositoryInterface(charm.model, S3_CREDENTIALS, S3IntegratorData)
    try:
        data = interface.build_model(relation.id, component=relation.app)
    except (ops.SecretNotFoundError, ops.ModelError) as exc:
        logger.info("s3-integrator secret not readable yet: %s", type(exc).__name__)
        raise StateError(ops.BlockedStatus(WAITING)) from exc
    except pydantic.ValidationError as exc:
        fields = ", ".join(sorted({str(e["loc"][0]).replace("_", "-") for e in exc.errors() if e["loc"]}))
        raise StateError(ops.BlockedStatus(f"s3-credentials: s3-integrator sent unusable {fields}")) from exc
    if not (data.access_key and data.secret_key):
        raise StateError(ops.BlockedStatus(WAITING))
    return _checked(data, data.access_key, data.secret_key)


def _checked(data: S3IntegratorData, access_key: str, secret_key: str) -> S3Connection:
    """What updown cannot do with the integrator's options blocks, naming the option to change."""
    if (data.path or "").strip("/"):
        raise StateError(
            ops.BlockedStatus(
                f"s3-integrator path={data.path!r}: updown keeps its objects at the root of its own bucket; "
                "unset it (juju config s3-integrator path=)"
            )
        )
    if data.s3_api_version and data.s3_api_version.strip().lower() not in ("4", "v4", "s3v4"):
        raise StateError(
            ops.BlockedStatus(f"s3-integrator s3-api-version={data.s3_api_version}: updown signs with SigV4 only")
        )
    style = (data.s3_uri_style or "").strip().lower()
    if style and style not in URI_STYLES:
        raise StateError(
            ops.BlockedStatus(f"s3-integrator s3-uri-style={data.s3_uri_style!r}: use path or host (virtual)")
        )
    try:
        chain = "".join(pem_certificates(c) for c in data.tls_ca_chain or [])
    except ValueError as exc:
        raise StateError(ops.BlockedStatus("s3-integrator tls-ca-chain: not a list of PEM certificates")) from exc
    return S3Connection(
        bucket=data.bucket or None,
        endpoint_url=(data.endpoint or "").strip() or None,
        region=(data.region or "").strip() or None,
        addressing_style=URI_STYLES[style] if style else None,
        ca_chain=chain,
        access_key_id=pydantic.SecretStr(access_key),
        secret_access_key=pydantic.SecretStr(secret_key),
    )
