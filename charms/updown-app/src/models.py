"""The typed state of an updown-app unit: everything the workload needs, built by the charm (src/state.py) from
Juju config, relations and secrets, or directly by the tests. No Juju imports here."""

from __future__ import annotations

import ipaddress
import re
from enum import StrEnum
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from updown_charms.interface import StoreAppData
from updown_charms.values import Port, Role, hostname, pem_certificates

# A release is the updown-app package version carried by the charm's wheelhouse (PEP 440, no local part).
RELEASE = re.compile(r"^[0-9][0-9A-Za-z.+!-]*$")


class PauseAfter(StrEnum):
    """`pause-after-unit-refresh`: when a refresh waits for `resume-refresh`."""

    FIRST = "first"  # after the first (canary) unit, then the rest one by one without pausing
    ALL = "all"  # after every unit
    NONE = "none"  # never


class AppConfig(BaseModel):
    """The charm's config options (dashes become underscores), validated. Secrets are not here: config holds
    only the ids of Juju secrets (see src/state.py)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    public_hostname: str = ""
    private_hostname: str = ""
    port: Port = 8000
    workers: int = Field(0, ge=0, le=64)  # 0: sized to the machine
    storage_backend: Literal["local", "swift", "s3"] = "local"
    swift_auth: Literal["keystone", "tempauth"] = "keystone"
    swift_auth_url: str = ""
    swift_username: str = ""
    swift_user_domain_name: str = "Default"
    swift_project_name: str = ""
    swift_project_domain_name: str = "Default"
    swift_application_credential_id: str = ""
    swift_region_name: str = ""
    swift_storage_url: str = ""
    swift_container: str = "updown"
    s3_bucket: str = "updown"
    s3_region: str = ""
    s3_endpoint_url: str = ""
    s3_addressing_style: Literal["auto", "path", "virtual"] = "auto"
    storage_ca: str = ""  # PEM; normalised to one trailing newline
    storage_connect_timeout: float = Field(5.0, gt=0)
    storage_first_byte_timeout: float = Field(30.0, gt=0)
    storage_idle_timeout: float = Field(30.0, gt=0)
    sso_mode: Literal["", "introspection", "jwt"] = ""
    sso_issuer: str = ""
    sso_audience: str = ""
    sso_introspection_url: str = ""
    sso_client_id: str = ""
    sso_jwks_url: str = ""
    sso_timeout: float = Field(5.0, gt=0)
    access_check_url: str = ""
    access_check_key_id: str = ""
    access_check_timeout: float = Field(5.0, gt=0)
    max_upload_size: int = Field(10 * 1024**3, ge=1)
    max_clock_skew: int = Field(300, ge=1, le=3600)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    pause_after_unit_refresh: PauseAfter = PauseAfter.FIRST
    drain_timeout: int = Field(300, ge=1, le=86400)
    health_check_timeout: int = Field(60, ge=1, le=3600)
    trusted_networks: str = "auto"

    @field_validator("trusted_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        value = value.strip()
        if value != "auto":
            for item in filter(None, (v.strip() for v in value.split(","))):
                ipaddress.ip_network(item, strict=False)  # ValueError names the bad one
        return value

    @field_validator("storage_ca")
    @classmethod
    def _pem(cls, value: str) -> str:
        return pem_certificates(value)

    @field_validator("public_hostname", "private_hostname")
    @classmethod
    def _hostname(cls, value: str) -> str:
        return hostname(value)

    @field_validator(
        "swift_auth_url", "swift_storage_url", "s3_endpoint_url", "sso_introspection_url", "sso_jwks_url",
        "access_check_url",
    )  # fmt: skip
    @classmethod
    def _url(cls, value: str) -> str:
        value = value.strip()
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"not an http(s) URL: {value!r}")
        return value

    @model_validator(mode="after")
    def _check(self) -> AppConfig:
        if not self.public_hostname or not self.private_hostname:
            raise ValueError("public-hostname and private-hostname are required")
        if self.public_hostname == self.private_hostname:
            raise ValueError("private-hostname must differ from public-hostname")
        if self.storage_backend == "swift" and not (self.swift_auth_url or self.swift_storage_url):
            raise ValueError("storage-backend=swift needs swift-auth-url")
        if self.storage_backend == "swift" and not (self.swift_username or self.swift_application_credential_id):
            raise ValueError("storage-backend=swift needs swift-username or swift-application-credential-id")
        if bool(self.sso_mode) != bool(self.access_check_url):
            raise ValueError("private downloads need both sso-mode and access-check-url (or neither)")
        if self.sso_mode == "introspection" and not (self.sso_introspection_url and self.sso_client_id):
            raise ValueError("sso-mode=introspection needs sso-introspection-url and sso-client-id")
        if self.sso_mode == "jwt" and not (self.sso_jwks_url and self.sso_issuer and self.sso_audience):
            raise ValueError("sso-mode=jwt needs sso-jwks-url, sso-issuer and sso-audience")
        return self


def store_ca(config: AppConfig, s3_ca_chain: str = "") -> str:
    """The PEM CAs the object store's certificate is checked against, by the app and the backend caches alike:
    s3-integrator's tls-ca-chain when it gives one (it describes the store it hands out), else storage-ca; empty:
    the system's CAs."""
    if config.storage_backend == "local":
        return ""
    return (s3_ca_chain if config.storage_backend == "s3" else "") or config.storage_ca


def store_upstream(config: AppConfig, s3_ca_chain: str = "") -> StoreAppData:
    """Where the backend cache units read objects from: the origin of the URLs this app presigns with `config`
    (s3-integrator's values already in it), and the CA its certificate is checked against (store_ca). Empty
    where the charm cannot know it: local storage, Swift whose storage URL comes from the Keystone catalog at run
    time, S3 without an endpoint (AWS: the SDK picks the host by region and bucket)."""
    if config.storage_backend == "swift" and config.swift_storage_url:
        # TempURLs are on the storage URL's host
        return StoreAppData(upstream_url=_origin(config.swift_storage_url), upstream_ca=store_ca(config))
    if config.storage_backend == "s3" and config.s3_endpoint_url:
        origin = _origin(config.s3_endpoint_url)
        if origin and config.s3_addressing_style == "virtual" and not _is_ip(urlsplit(origin).hostname or ""):
            # virtual-hosted: the SDK presigns https://<bucket>.<endpoint host>/<key> (path style, and "auto"
            # with an endpoint, keep the endpoint's host: /<bucket>/<key>)
            scheme, _, authority = origin.partition("://")
            origin = f"{scheme}://{config.s3_bucket}.{authority}"
        return StoreAppData(upstream_url=origin, upstream_ca=store_ca(config, s3_ca_chain))
    return StoreAppData()


def _origin(url: str) -> str:
    """scheme://host[:port] of a URL (its path is the app's business: it goes in every presigned URL)."""
    parts = urlsplit(url.strip())
    try:
        port = parts.port
    except ValueError:  # the app cannot use it either; nothing to give
        return ""
    host = (parts.hostname or "").lower()
    if not host:
        return ""
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme.lower()}://{host}" + (f":{port}" if port else "")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


class Database(BaseModel):
    """What the postgresql charm gave us on the `database` relation."""

    model_config = ConfigDict(frozen=True)

    host: str
    port: Port = 5432
    name: str
    username: str
    password: SecretStr
    tls: bool = False

    def url(self) -> str:
        from urllib.parse import quote

        user = quote(self.username, safe="")
        password = quote(self.password.get_secret_value(), safe="")
        host = f"[{self.host}]" if ":" in self.host else self.host
        query = "?ssl=require" if self.tls else ""
        return f"postgresql+asyncpg://{user}:{password}@{host}:{self.port}/{quote(self.name, safe='')}{query}"


class Secrets(BaseModel):
    """Secret values read from Juju user secrets. Never logged (SecretStr)."""

    model_config = ConfigDict(frozen=True)

    hmac_keys: dict[str, SecretStr]
    swift_password: SecretStr | None = None
    swift_application_credential_secret: SecretStr | None = None
    swift_temp_url_key: SecretStr | None = None
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None
    sso_client_secret: SecretStr | None = None

    @field_validator("hmac_keys")
    @classmethod
    def _some_key(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        if not value:
            raise ValueError("the HMAC keys secret holds no key")
        return value


class CacheUnit(BaseModel):
    """One unit of a related cache application (frontend: purge endpoint and trusted proxy; backend: read cache)."""

    model_config = ConfigDict(frozen=True)

    unit_name: str
    role: Role
    address: str
    port: Port

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}"


class AppState(BaseModel):
    """Everything the workload renders from."""

    model_config = ConfigDict(frozen=True)

    unit_name: str
    address: str
    config: AppConfig
    database: Database
    secrets: Secrets
    caches: tuple[CacheUnit, ...] = ()
    workers: int = Field(1, ge=1)  # resolved: config.workers, or sized to the machine
    # resolved trusted-networks: with "auto", the networks the frontend units reach this unit on
    trusted_networks: tuple[str, ...] = ()
    bind_address: str = "0.0.0.0"
    # PEM CA chain s3-integrator gave (its tls-ca-chain); what the app trusts is store_ca
    s3_ca_chain: str = ""

    @field_validator("caches")
    @classmethod
    def _sorted(cls, caches: tuple[CacheUnit, ...]) -> tuple[CacheUnit, ...]:
        return tuple(sorted(caches, key=lambda c: (c.role, c.unit_name)))

    @model_validator(mode="after")
    def _backends_need_presigned_urls(self) -> AppState:
        """Backend cache units fetch objects with presigned URLs (the app refuses to start otherwise)."""
        if self.backends and self.config.storage_backend == "local":
            raise ValueError("backend-cache needs storage-backend swift (with a temp-url-key) or s3")
        if self.backends and self.config.storage_backend == "swift" and self.secrets.swift_temp_url_key is None:
            raise ValueError("backend-cache with swift needs temp-url-key in the storage-credentials secret")
        return self

    @property
    def store_ca(self) -> str:
        """The PEM CAs the app checks the object store (and Keystone) with; empty: the system's CAs."""
        return store_ca(self.config, self.s3_ca_chain)

    @property
    def frontends(self) -> tuple[CacheUnit, ...]:
        return tuple(c for c in self.caches if c.role is Role.FRONTEND)

    @property
    def backends(self) -> tuple[CacheUnit, ...]:
        return tuple(c for c in self.caches if c.role is Role.BACKEND)
