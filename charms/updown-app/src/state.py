"""Build the typed AppState from Juju: config, user secrets, the `database` relation (postgresql) and the cache
relations. Every problem becomes a StateError with the exact message the unit shows (collect-status).

The database relation uses dpcharmlibs-interfaces' models and repositories, speaking the v0 form of the
`postgresql_client` interface: the library's requirer handler writes only its v1 form (`version: v1`,
`requests`), which the postgresql 16/stable provider (data_interfaces v0 `DatabaseProvides`, reading
`database` and `requested-secrets`) ignores, while every provider, v1 ones included, answers v0 requests.
The library's v0 response model is adjusted where the real provider's data trips it (PostgresResponse).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass

import ops
import pydantic
from dpcharmlibs.interfaces import DataContractV0, OpsRelationRepository, OpsRelationRepositoryInterface, TlsSecretStr

from interface import CacheUnitData
from models import AppConfig, CacheUnit, Database, Role, Secrets

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


@dataclass(frozen=True)
class StateError(Exception):
    status: ops.StatusBase

    def __str__(self) -> str:
        return self.status.message


def load_config(charm: ops.CharmBase) -> CharmConfig:
    try:
        return charm.load_config(CharmConfig)
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            (f"{'.'.join(str(p) for p in err['loc']).replace('_', '-')}: " if err["loc"] else "")
            + err["msg"].removeprefix("Value error, ")
            for err in exc.errors()
        )
        raise StateError(ops.BlockedStatus(f"invalid config: {problems}")) from exc


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
    binding = charm.model.get_binding(PEER)
    address = binding.network.bind_address if binding else None
    if address is None:
        raise StateError(ops.WaitingStatus("waiting for a network address"))
    return str(address)


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
    if not charm.unit.is_leader():
        return
    for relation in charm.model.relations[DATABASE]:
        repository = OpsRelationRepository(charm.model, relation, charm.app)
        if repository.get_field("database") != DATABASE_NAME:
            repository.write_field("database", DATABASE_NAME)
        if repository.get_field("requested-secrets") != json.dumps(REQUESTED_SECRETS):
            repository.write_field("requested-secrets", json.dumps(REQUESTED_SECRETS))


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
        for relation in charm.model.relations[endpoint]:
            for unit in relation.units:
                try:
                    data = CacheUnitData.load(relation.data[unit])
                except pydantic.ValidationError:
                    logger.info("cache unit %s has not published its address yet", unit.name)
                    continue
                if data.role is not role:
                    logger.warning("%s is a %s cache on the %s endpoint: ignored", unit.name, data.role, endpoint)
                    continue
                found.append(CacheUnit(unit_name=unit.name, role=role, address=data.address, port=data.port))
    return tuple(found)
