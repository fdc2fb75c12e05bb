"""Build the typed AppState from Juju: config, user secrets, the `database` relation (postgresql), the
`s3-credentials` relation (s3-integrator, src/s3_integrator.py) and the cache relations. Every problem becomes
a StateError with the exact message the unit shows (collect-status).

The database relation uses dpcharmlibs-interfaces' models and repositories, speaking the v0 form of the
`postgresql_client` interface: the library's requirer handler writes only its v1 form (`version: v1`,
`requests`), which the postgresql 16/stable provider (data_interfaces v0 `DatabaseProvides`, reading
`database` and `requested-secrets`) ignores, while every provider, v1 ones included, answers v0 requests.
The library's v0 response model is adjusted where the real provider's data trips it (PostgresResponse).
"""

from __future__ import annotations

import logging
import os
import re

import ops
import pydantic
from dpcharmlibs.interfaces import DataContractV0, OpsRelationRepositoryInterface, TlsSecretStr

import s3_integrator
import v0_request
import workload
from models import AppConfig, AppState, CacheUnit, Database, Secrets, store_upstream
from s3_integrator import S3_CREDENTIALS, S3Connection
from updown_charms import relations, status
from updown_charms.interface import CacheUnitData, StoreAppData
from updown_charms.status import StateError
from updown_charms.values import Role

logger = logging.getLogger(__name__)

PEER = "rollout"
DATABASE = "database"
FRONTEND_CACHE = "frontend-cache"
BACKEND_CACHE = "backend-cache"
DATABASE_NAME = "updown"
REQUESTED_SECRETS = ["username", "password", "tls", "tls-ca", "uris", "read-only-uris"]
_KEY_ID = re.compile(r"^[a-z](?:-?[a-z0-9]){2,}$")  # what Juju allows as a secret's key


class CharmConfig(AppConfig):
    """AppConfig plus the options that only mean something to Juju (the ids of user secrets)."""

    model_config = pydantic.ConfigDict(frozen=True, extra="ignore", arbitrary_types_allowed=True)

    hmac_keys: ops.Secret | None = None
    storage_credentials: ops.Secret | None = None
    sso_client_secret: ops.Secret | None = None


class PostgresResponse(DataContractV0):
    """The provider's answer. The library decodes each databag value as JSON (`version: 16.10` would become the
    float 16.1) and the `tls` secret value as a JSON bool, but the postgresql charm writes "True"/"False"."""

    tls: TlsSecretStr = pydantic.Field(default=None)  # type: ignore[assignment]

    @pydantic.field_validator("version", mode="before")
    @classmethod
    def _text(cls, value: object) -> str | None:
        return None if value is None else str(value)


def load_config(charm: ops.CharmBase) -> CharmConfig:
    return status.load_config(charm, CharmConfig)


def request_s3(charm: ops.CharmBase) -> None:
    """The leader asks s3-integrator for credentials for our bucket (s3-bucket, raw: config may be invalid)."""
    s3_integrator.request(charm, str(charm.config.get("s3-bucket") or "updown"))


def with_s3(config: CharmConfig, s3: S3Connection | None) -> CharmConfig:
    """The s3-integrator's store in place of the s3-* options (an option stays where the integrator gives no
    value: its bucket, region, endpoint or URI style). Related, the backend is s3; swift and the relation
    together are refused rather than one silently ignored."""
    if s3 is None:
        return config
    if config.storage_backend == "swift":
        raise StateError(
            ops.BlockedStatus(
                f"storage-backend=swift but related to s3-integrator ({S3_CREDENTIALS}): "
                "remove the relation or set storage-backend=s3"
            )
        )
    overrides = {
        "storage_backend": "s3",
        "s3_bucket": s3.bucket or config.s3_bucket,
        "s3_endpoint_url": s3.endpoint_url or config.s3_endpoint_url,
        "s3_region": s3.region or config.s3_region,
        "s3_addressing_style": s3.addressing_style or config.s3_addressing_style,
    }
    try:
        return CharmConfig.model_validate({**dict(config), **overrides})
    except pydantic.ValidationError as exc:
        problems = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
        raise StateError(ops.BlockedStatus(f"s3-credentials: {problems}")) from exc


def with_s3_keys(user_secrets: Secrets, s3: S3Connection | None) -> Secrets:
    """The integrator's keys in place of storage-credentials' access-key-id and secret-access-key."""
    if s3 is None:
        return user_secrets
    return user_secrets.model_copy(
        update={"s3_access_key_id": s3.access_key_id, "s3_secret_access_key": s3.secret_access_key}
    )


def storage_fits_units(config: CharmConfig, units: int) -> None:
    """storage-backend=local keeps the files on one unit's disk: a second unit would answer from a different
    set of files (an upload on one, 404 on the other). Refused rather than served inconsistently."""
    if config.storage_backend == "local" and units > 1:
        raise StateError(
            ops.BlockedStatus(
                f"storage-backend=local stores files on one unit but there are {units}: set storage-backend to "
                "swift or s3 (with storage-credentials), or scale to one unit"
            )
        )


def unit_address(charm: ops.CharmBase) -> str:
    return relations.bind_address(charm, PEER)


def _content(secret: ops.Secret, option: str) -> dict[str, str]:
    try:
        return secret.get_content(refresh=True)
    except (ops.SecretNotFoundError, ops.ModelError) as exc:
        raise StateError(
            ops.BlockedStatus(f"{option}: secret not found or not granted (juju grant-secret <secret> updown-app)")
        ) from exc


def secrets(config: CharmConfig) -> Secrets:
    """Read the user secrets named by config. HMAC keys: one secret key per key id, its value the HMAC secret;
    rotation = add the new key id, let the units roll, switch the store over, then remove the old id."""
    if config.hmac_keys is None:
        raise StateError(ops.BlockedStatus("no HMAC key secret: set hmac-keys to a Juju secret of {key-id: secret}"))
    keys = _content(config.hmac_keys, "hmac-keys")
    if not keys:
        raise StateError(ops.BlockedStatus("hmac-keys: the secret holds no key"))
    bad = sorted(k for k in keys if not _KEY_ID.match(k))
    if bad:
        raise StateError(ops.BlockedStatus(f"hmac-keys: invalid key id(s): {', '.join(bad)}"))
    storage: dict[str, str] = {}
    if config.storage_credentials is not None:
        storage = _content(config.storage_credentials, "storage-credentials")
    if config.storage_backend == "swift" and not (
        storage.get("password") or storage.get("application-credential-secret")
    ):
        raise StateError(
            ops.BlockedStatus(
                "storage-credentials: storage-backend=swift needs a secret with password or "
                "application-credential-secret"
            )
        )
    if config.storage_backend == "s3" and bool(storage.get("access-key-id")) != bool(storage.get("secret-access-key")):
        raise StateError(ops.BlockedStatus("storage-credentials: access-key-id and secret-access-key go together"))
    sso: dict[str, str] = {}
    if config.sso_mode == "introspection":
        if config.sso_client_secret is None:
            raise StateError(ops.BlockedStatus("sso-mode=introspection needs sso-client-secret (a Juju secret)"))
        sso = _content(config.sso_client_secret, "sso-client-secret")
        if not sso.get("client-secret"):
            raise StateError(ops.BlockedStatus('sso-client-secret: the secret needs the key "client-secret"'))

    def opt(value: str | None) -> pydantic.SecretStr | None:
        return pydantic.SecretStr(value) if value else None

    return Secrets(
        hmac_keys={k: pydantic.SecretStr(v) for k, v in keys.items()},
        swift_password=opt(storage.get("password")),
        swift_application_credential_secret=opt(storage.get("application-credential-secret")),
        swift_temp_url_key=opt(storage.get("temp-url-key")),
        s3_access_key_id=opt(storage.get("access-key-id")),
        s3_secret_access_key=opt(storage.get("secret-access-key")),
        sso_client_secret=opt(sso.get("client-secret")),
    )


def request_database(charm: ops.CharmBase) -> None:
    """The leader asks for the database (v0 form: `database` and `requested-secrets` in the app databag)."""
    v0_request.request(charm, DATABASE, {"database": DATABASE_NAME}, REQUESTED_SECRETS)


def database(charm: ops.CharmBase) -> Database:
    relation = charm.model.get_relation(DATABASE)
    if relation is None:
        raise StateError(
            ops.BlockedStatus("no database: integrate with postgresql (juju integrate updown-app postgresql)")
        )
    if relation.app is None:
        raise StateError(ops.WaitingStatus("waiting for the database"))
    interface = OpsRelationRepositoryInterface(charm.model, DATABASE, PostgresResponse)
    try:
        response = interface.build_model(relation.id, component=relation.app)
    except (pydantic.ValidationError, ops.SecretNotFoundError, ops.ModelError) as exc:
        logger.info("database relation data not usable yet: %s", type(exc).__name__)
        raise StateError(ops.WaitingStatus("waiting for the database credentials")) from exc
    if not (response.endpoints and response.username and response.password):
        raise StateError(ops.WaitingStatus("waiting for the database credentials"))
    host, _, port = response.endpoints.split(",")[0].strip().rpartition(":")
    tls = str(response.tls).lower() == "true"
    return Database(
        host=host.strip("[]"),
        port=int(port or 5432),
        name=response.resource or DATABASE_NAME,
        username=response.username,
        password=pydantic.SecretStr(response.password),
        tls=tls,
    )


def trusted_networks(charm: ops.CharmBase, config: AppConfig) -> tuple[str, ...]:
    """trusted-networks: "auto" is the subnets of the frontend-cache binding (where the frontends reach us),
    once a frontend is related; otherwise the CIDRs given (empty: only the frontend units' own addresses)."""
    if config.trusted_networks != "auto":
        return tuple(sorted(filter(None, (v.strip() for v in config.trusted_networks.split(",")))))
    if not charm.model.relations[FRONTEND_CACHE]:
        return ()
    binding = charm.model.get_binding(FRONTEND_CACHE)
    if binding is None:
        return ()
    subnets = {i.subnet for i in binding.network.interfaces if i.subnet is not None}
    return tuple(sorted(str(n) for n in subnets if n.prefixlen < n.max_prefixlen))  # a /32 is only ourselves


def caches(charm: ops.CharmBase) -> tuple[CacheUnit, ...]:
    """Every unit of the related cache applications that published its address, with the role of its endpoint."""
    found: list[CacheUnit] = []
    for endpoint, role in ((FRONTEND_CACHE, Role.FRONTEND), (BACKEND_CACHE, Role.BACKEND)):
        for unit, data in relations.published(charm.model.relations[endpoint], CacheUnitData):
            if data.role is not role:
                logger.warning("%s is a %s cache on the %s endpoint: ignored", unit.name, data.role, endpoint)
                continue
            found.append(CacheUnit(unit_name=unit.name, role=role, address=data.address, port=data.port))
    return tuple(found)


def store(charm: ops.CharmBase) -> StoreAppData:
    """The store the backend cache units read (published on backend-cache): from config and s3-integrator only,
    so it is known before the database is; a StateError while either is unusable."""
    s3 = s3_integrator.connection(charm)
    return store_upstream(with_s3(load_config(charm), s3), s3.ca_chain if s3 else "")


def app_state(charm: ops.CharmBase) -> AppState:
    """Everything the workload needs, from Juju; the first problem found stops it as a StateError."""
    config = load_config(charm)
    s3 = s3_integrator.connection(charm)
    config = with_s3(config, s3)
    peer = charm.model.get_relation(PEER)
    storage_fits_units(config, 1 + (len(peer.units) if peer else 0))
    address = unit_address(charm)
    user_secrets = with_s3_keys(secrets(config), s3)
    db = database(charm)
    try:
        return AppState(
            unit_name=charm.unit.name,
            address=address,
            config=config,
            database=db,
            secrets=user_secrets,
            caches=caches(charm),
            trusted_networks=trusted_networks(charm, config),
            workers=config.workers or workload.workers_for(os.cpu_count()),
            s3_ca_chain=s3.ca_chain if s3 else "",
        )
    except pydantic.ValidationError as exc:
        raise StateError(
            ops.BlockedStatus("; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors()))
        ) from exc
