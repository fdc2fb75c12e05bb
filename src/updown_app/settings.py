"""Typed settings: environment variables (``UPDOWN_*``, nested with ``__``) over a TOML config file.

Precedence, highest first: explicit keyword arguments, environment, the TOML file named by ``--config`` or
``UPDOWN_CONFIG``, then defaults. Secrets are ``SecretStr`` so they never print in reprs or logs.
"""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, Field, IPvAnyNetwork, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

MiB = 1024 * 1024
GiB = 1024 * MiB


class LocalStorageSettings(BaseModel):
    path: Path | None = Field(default=None, description="Directory for objects; default <data_dir>/objects.")


class StorageTimeouts(BaseModel):
    """Network timeouts (seconds) of an object-store backend."""

    connect_timeout: float = Field(default=5.0, gt=0, description="Opening a connection to the store.")
    first_byte_timeout: float = Field(
        default=30.0, gt=0, description="From a request sent (body included) to the response headers."
    )
    idle_timeout: float = Field(default=30.0, gt=0, description="Longest pause while a body is sent or received.")
    retries: int = Field(
        default=3, ge=0, le=10, description="Retries of idempotent calls (GET, HEAD, DELETE, listing)."
    )
    retry_backoff: float = Field(
        default=0.25, ge=0, description="First retry delay; doubles each retry (capped at 5 s)."
    )
    breaker_cooldown: float = Field(
        default=5.0,
        ge=0,
        description="Seconds the store is skipped after a call failed for it being unreachable (retries spent): "
        "calls answer 503 at once meanwhile, then one tries it again. 0: never skipped.",
    )


class SwiftStorageSettings(StorageTimeouts):
    """OpenStack Swift through its native API, with Keystone v3 or tempauth (v1)."""

    auth: Literal["keystone", "tempauth"] = "keystone"
    auth_url: str = Field(default="", description="Keystone v3 URL (…/v3), or the tempauth URL (…/auth/v1.0).")
    username: str = Field(default="", description="Keystone user name, or tempauth 'account:user'.")
    password: SecretStr = Field(default=SecretStr(""), description="Keystone password, or the tempauth key.")
    user_domain_name: str = "Default"
    project_name: str = ""
    project_domain_name: str = "Default"
    application_credential_id: str = Field(
        default="", description="Keystone application credential (instead of username/password)."
    )
    application_credential_secret: SecretStr = SecretStr("")
    region_name: str | None = Field(default=None, description="Catalog region of the object-store endpoint.")
    interface: Literal["public", "internal", "admin"] = "public"
    storage_url: str | None = Field(
        default=None, description="Swift account URL; overrides the one from the catalog or tempauth."
    )
    container: str = "updown"
    segment_container: str | None = Field(
        default=None, description="Container of SLO segments; default '<container>_segments'."
    )
    create_container: bool = Field(default=True, description="Create the containers when missing.")
    slo_threshold: int = Field(
        default=1 * GiB, ge=1, description="Objects larger than this are uploaded as SLOs (always above 5 GiB)."
    )
    segment_size: int = Field(default=256 * MiB, ge=1, le=5 * GiB, description="SLO segment size.")
    temp_url_key: SecretStr | None = Field(
        default=None, description="TempURL key; set on the account (or container) at start-up when given."
    )
    temp_url_key_scope: Literal["account", "container"] = Field(
        default="account",
        description="Where the TempURL key is set. A container key can't reach segments in another container, "
        "so with 'container' the SLO segments are kept in the object container under '.segments/'.",
    )
    temp_url_digest: Literal["sha256", "sha512"] = "sha256"
    verify_tls: bool | str = Field(
        default=True,
        description="False, or a CA bundle path: the certificates of Swift and of Keystone (auth_url) are checked "
        "against it instead of the system's CAs (a private CA usually signs both).",
    )

    @model_validator(mode="after")
    def _check_auth(self) -> SwiftStorageSettings:
        if self.auth == "tempauth" and not self.username:
            raise ValueError("swift tempauth needs username ('account:user') and password (the key)")
        if self.auth == "keystone" and not self.application_credential_id and not self.username:
            raise ValueError("swift keystone auth needs username/password or an application credential")
        return self


class S3StorageSettings(StorageTimeouts):
    """Amazon S3 or any S3 API. Credentials come from the standard AWS chain (environment, shared config and
    credentials files with an optional profile, container or instance metadata): none are kept here."""

    bucket: str = "updown"
    region: str | None = Field(default=None, description="Region (SigV4 scope); default from the AWS config.")
    endpoint_url: str | None = Field(default=None, description="Endpoint of an S3-compatible store.")
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    profile: str | None = Field(default=None, description="Profile of the shared AWS config files.")
    create_bucket: bool = Field(default=False, description="Create the bucket when missing.")
    multipart_threshold: int = Field(
        default=16 * MiB, ge=1, le=5 * GiB, description="Objects larger than this use a multipart upload."
    )
    part_size: int = Field(
        default=16 * MiB,
        ge=5 * MiB,
        le=5 * GiB,
        description="Multipart part size; each part is held in memory to compute its Content-MD5.",
    )
    verify_tls: bool | str = Field(default=True, description="False, or a CA bundle path for the endpoint.")


class StorageSettings(BaseModel):
    backend: Literal["local", "swift", "s3"] = "local"
    local: LocalStorageSettings = LocalStorageSettings()
    swift: SwiftStorageSettings | None = None
    s3: S3StorageSettings | None = None

    @model_validator(mode="after")
    def _backend_configured(self) -> StorageSettings:
        if self.backend == "swift" and self.swift is None:
            raise ValueError("storage.backend = 'swift' needs a [storage.swift] section")
        if self.backend == "s3" and self.s3 is None:
            self.s3 = S3StorageSettings()
        return self


# Private downloads (docs/private-downloads.md) ---------------------------------------------------------------------

ASYMMETRIC_JWT_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


class IntrospectionSettings(BaseModel):
    """RFC 7662 token introspection with the service's client credentials (HTTP Basic, client_secret_basic)."""

    url: str = Field(description="The SSO's introspection endpoint.")
    client_id: str
    client_secret: SecretStr


class JwtSettings(BaseModel):
    """JWT access tokens verified offline against the SSO's JWKS."""

    jwks_url: str
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"], min_length=1)
    leeway: float = Field(default=30.0, ge=0, le=300, description="Seconds of clock skew for nbf/iat (exp is strict).")
    jwks_max_age: float = Field(default=3600.0, gt=0, description="Seconds before the JWKS is fetched again.")
    jwks_min_refetch_interval: float = Field(
        default=30.0, ge=0, description="At most one JWKS fetch per this many seconds on an unknown kid."
    )

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, value: list[str]) -> list[str]:
        bad = [alg for alg in value if alg not in ASYMMETRIC_JWT_ALGORITHMS]
        if bad:
            raise ValueError(f"unsupported JWT algorithm(s) {bad}: only asymmetric algorithms are allowed")
        return value


class SsoSettings(BaseModel):
    mode: Literal["introspection", "jwt"] | None = Field(
        default=None, description="How bearer tokens are validated; None: private downloads are refused."
    )
    issuer: str | None = Field(default=None, description="Required `iss` (always checked for JWT).")
    audience: str | None = Field(default=None, description="Required `aud` (always checked for JWT).")
    user_claim: str = Field(default="sub", description="The claim that names the user.")
    introspection: IntrospectionSettings | None = None
    jwt: JwtSettings | None = None
    timeout: float = Field(default=5.0, gt=0, description="Seconds for one SSO call, end to end.")
    cache_ttl: float = Field(default=300.0, ge=0, description="Longest a valid token is trusted without asking.")
    negative_cache_ttl: float = Field(default=10.0, ge=0, description="How long an invalid token is remembered.")
    cache_size: int = Field(default=10_000, ge=1)

    @model_validator(mode="after")
    def _check(self) -> SsoSettings:
        if self.mode == "introspection" and self.introspection is None:
            raise ValueError("sso.mode = 'introspection' needs sso.introspection (url, client_id, client_secret)")
        if self.mode == "jwt":
            if self.jwt is None:
                raise ValueError("sso.mode = 'jwt' needs sso.jwt (jwks_url)")
            if not self.issuer or not self.audience:
                raise ValueError("sso.mode = 'jwt' needs sso.issuer and sso.audience")
        return self


class AccessCheckSettings(BaseModel):
    url: str | None = Field(default=None, description="The store's access-check endpoint (POST, signed).")
    key_id: str | None = Field(default=None, description="Key id our requests are signed with.")
    secret: SecretStr | None = Field(
        default=None, description="Secret for key_id; default: the hmac_keys entry of that key id."
    )
    timeout: float = Field(default=5.0, gt=0, description="Seconds for one access check, end to end.")
    allowed_ttl: float = Field(default=300.0, ge=0, description="How long an 'allowed' answer is cached.")
    denied_ttl: float = Field(default=30.0, ge=0, description="How long a 'denied' answer is cached.")
    cache_size: int = Field(default=100_000, ge=1)


class LinkSettings(BaseModel):
    keys: dict[str, SecretStr] = Field(
        default_factory=dict, description="HMAC keys for download links by key id; empty: links are off."
    )
    signing_key_id: str | None = Field(default=None, description="Key id new links use; default: the only key.")
    default_ttl: int = Field(default=3600, ge=1, description="Seconds a minted link lives by default.")
    max_ttl: int = Field(default=7 * 86400, ge=1, description="Longest lifetime a link may be minted with.")

    @model_validator(mode="after")
    def _check(self) -> LinkSettings:
        if self.signing_key_id is not None and self.signing_key_id not in self.keys:
            raise ValueError("links.signing_key_id must name one of links.keys")
        if self.keys and self.signing_key_id is None and len(self.keys) > 1:
            raise ValueError("links.signing_key_id is needed when several link keys are configured")
        if self.default_ttl > self.max_ttl:
            raise ValueError("links.default_ttl must not exceed links.max_ttl")
        return self


class PrivateDownloadSettings(BaseModel):
    sso: SsoSettings = SsoSettings()
    access_check: AccessCheckSettings = AccessCheckSettings()
    links: LinkSettings = LinkSettings()
    retry_after: int = Field(default=30, ge=1, description="Retry-After seconds on 503 (SSO/store unavailable).")

    @model_validator(mode="after")
    def _check(self) -> PrivateDownloadSettings:
        if (self.sso.mode is None) != (self.access_check.url is None):
            raise ValueError("private downloads need both private.sso.mode and private.access_check.url")
        return self

    @property
    def enabled(self) -> bool:
        return self.sso.mode is not None and self.access_check.url is not None


class UploadSettings(BaseModel):
    """Resumable uploads (tus 1.0): sessions in the database, parts in object storage."""

    expiry: int = Field(default=24 * 3600, ge=60, description="Seconds a resumable upload session lives.")
    part_size: int = Field(
        default=8 * MiB, ge=64 * 1024, le=512 * MiB, description="Largest part stored per write (memory bound)."
    )
    lease: float = Field(
        default=10.0, gt=0, description="Seconds a PATCH holds its session without renewing (crashed units)."
    )
    purge_interval: float = Field(
        default=600.0, ge=0, description="Seconds between purges of expired sessions by the service; 0: off."
    )


class SweepSettings(BaseModel):
    """The sweeper (``updown sweep``; services/sweeper.py): objects no file records and partial local writes."""

    grace: float = Field(
        default=24 * 3600.0,
        ge=0,
        description="Seconds since its last write before a leftover may be removed; longer than any upload takes.",
    )
    interval: float = Field(
        default=3600.0, ge=0, description="Seconds between the service's sweeps (the first soon after start); 0: off."
    )


def _cache_unit_url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an http(s) URL: {url!r}")
    return url.rstrip("/")


# A cache unit's address, as the settings and the units file (cache_units.py) give it.
CacheUnitUrl = Annotated[str, AfterValidator(_cache_unit_url)]


class CacheSettings(BaseModel):
    """The caching tier in front of and behind the app (charms/cache). The updown-app charm fills these from the
    cache relations; the local stack sets them directly."""

    frontends: list[CacheUnitUrl] = Field(
        default_factory=list,
        description="Varnish of every frontend cache unit (http://address:port): purged on unpublish.",
    )
    backends: dict[str, CacheUnitUrl] = Field(
        default_factory=dict,
        description="{unit name: http://address:port} of the backend read caches; objects are read through the "
        "unit chosen by consistent hashing on the object key. Empty: the store is read directly.",
    )
    units_file: Path | None = Field(
        default=None,
        description='JSON {"frontends": [...], "backends": {...}} replacing the two lists, re-read when it changes '
        "(the updown-app charm rewrites it as cache units come and go, without restarting the app).",
    )
    purge_timeout: float = Field(default=2.0, gt=0, description="Seconds for one PURGE request.")
    purge_retries: int = Field(
        default=3, ge=0, description="Retries, within the unpublish request, of a purge of an unreachable unit."
    )
    purge_give_up: float = Field(
        default=600.0, ge=0, description="Seconds a failed purge keeps being retried in the background."
    )


class IndexSettings(BaseModel):
    """The signed (TUF) index of the published public files; see docs/index-and-mirroring.md."""

    root_dir: Path | None = Field(
        default=None,
        description="Directory of the signed root versions (1.root.json, 2.root.json...) made with `updown keys`; "
        "unset: no index.",
    )
    keys_file: Path | None = Field(
        default=None, description="JSON {name: PEM private key} of the online keys (targets, snapshot, timestamp)."
    )
    targets_expiry: int = Field(default=30 * 86400, ge=60, description="Seconds targets metadata is valid.")
    snapshot_expiry: int = Field(default=7 * 86400, ge=60, description="Seconds snapshot metadata is valid.")
    timestamp_expiry: int = Field(default=86400, ge=10, description="Seconds timestamp metadata is valid.")
    refresh_interval: float = Field(
        default=60.0, gt=0, description="Seconds between checks re-signing metadata past half its validity."
    )
    timestamp_max_age: int = Field(default=10, ge=0, description="Cache-Control max-age of timestamp.json.")


class UpstreamSettings(BaseModel):
    """Pull-through downloads from an upstream updown, verified against its TUF index."""

    url: str = Field(default="", description="Upstream base URL; set (with root_file): pull-through on.")
    root_file: Path | None = Field(default=None, description="The upstream's root.json trusted first.")
    refresh_interval: float = Field(
        default=30.0, ge=0, description="Seconds the upstream's index is reused before it is refreshed."
    )
    timeout: float = Field(default=30.0, gt=0, description="Seconds for a request to the upstream.")
    ca_bundle: Path | None = Field(default=None, description="CA bundle for the upstream's certificate.")

    @model_validator(mode="after")
    def _together(self) -> UpstreamSettings:
        if bool(self.url) != (self.root_file is not None):
            raise ValueError("upstream.url and upstream.root_file go together")
        if self.url and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"upstream.url is not an http(s) URL: {self.url!r}")
        return self


class ConnectionLimits(BaseModel):
    """What one client connection may hold of the server (the single node is exposed directly)."""

    max_header_bytes: int = Field(
        default=32 * 1024, ge=1024, description="Bytes of a request line and headers together; more: 431."
    )
    max_header_count: int = Field(default=100, ge=8, description="Header fields of a request; more: 431.")
    header_timeout: float = Field(
        default=15.0,
        gt=0,
        description="Seconds for a whole request head, from its first byte (or the connection's start).",
    )
    body_timeout: float = Field(default=30.0, gt=0, description="Longest pause while a request body is received.")
    send_timeout: float = Field(
        default=60.0, gt=0, description="Longest time a client may accept no byte of a response."
    )
    idle_timeout: int = Field(default=75, ge=1, description="Seconds an idle keep-alive connection is kept.")
    tls_handshake_timeout: float = Field(default=10.0, gt=0, description="Seconds for a TLS handshake.")
    max_connections: int = Field(
        default=4096, ge=16, description="Open connections per process; more are answered 503 and closed."
    )
    retry_after: int = Field(default=5, ge=1, description="Retry-After of the 503 when max_connections is reached.")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="UPDOWN_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    # Where the embedded defaults (SQLite, objects, generated TLS material and keys) live.
    data_dir: Path = Path("updown-data")
    database_url: str | None = Field(default=None, description="SQLAlchemy async URL; default SQLite in data_dir.")
    auto_migrate: bool = Field(default=True, description="Run Alembic migrations at start-up.")
    storage: StorageSettings = StorageSettings()

    # Hostnames decide public vs private downloads (compared without port, case-insensitively).
    public_host: str = "localhost"
    private_host: str = "private.localhost"

    # Signed requests.
    hmac_keys: dict[str, SecretStr] = Field(default_factory=dict)
    hmac_keys_file: Path | None = Field(
        default=None, description="JSON object {key_id: secret}; merged with hmac_keys."
    )
    max_clock_skew: int = Field(default=300, ge=1, description="Seconds a signed timestamp may be off.")

    # Limits.
    max_upload_size: int = Field(default=10 * GiB, ge=1)
    chunk_size: int = Field(default=1 * MiB, ge=4096, description="Bytes per read/write on transfers.")

    # Listening. Single node: HTTPS on ``port`` with TLS served by the app, plain HTTP on ``http_port`` answering
    # 308. Behind a proxy (tls = false): plain HTTP on ``port``, trusting X-Forwarded-Proto from trusted_proxies.
    bind: str = "127.0.0.1"
    port: int = 8443
    http_port: int | None = Field(default=8080, description="Plain-HTTP redirect listener (tls on); None: off.")
    workers: int = Field(default=1, ge=1, description="Worker processes (behind a proxy).")
    tcp_notsent_lowat: int = Field(
        default=64 * 1024, ge=0, description="Unsent bytes the kernel queues per connection; 0: no limit."
    )
    tls: bool = Field(default=True, description="False when a proxy terminates TLS in front of the app.")
    tls_cert: Path | None = None
    tls_key: Path | None = None
    https_redirect_port: int | None = Field(
        default=None, description="Port in redirect targets; default port when tls is on, else 443."
    )
    trusted_proxies: list[str] = Field(
        default_factory=list, description="Addresses/CIDRs whose X-Forwarded-Proto/For are trusted."
    )
    # What one client connection may hold: head size and fields, header/body/send/idle timeouts, connections.
    limits: ConnectionLimits = ConnectionLimits()
    metrics_allowed: list[IPvAnyNetwork] = Field(
        default_factory=lambda: [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")],
        description="Addresses/CIDRs /metrics answers (the client's address, after trusted proxies); others: 403.",
    )

    # Private downloads: SSO tokens, the store's access checks, download links.
    private: PrivateDownloadSettings = PrivateDownloadSettings()

    # Resumable uploads (tus).
    uploads: UploadSettings = UploadSettings()
    sweep: SweepSettings = SweepSettings()

    # The caching tier: purge endpoints (frontend units) and read caches (backend units).
    caches: CacheSettings = CacheSettings()

    # Channels' "latest" redirects, the signed index, pull-through from an upstream (docs/index-and-mirroring.md).
    latest_max_age: int = Field(default=10, ge=0, description="Cache-Control max-age of a latest redirect.")
    index: IndexSettings = IndexSettings()
    upstream: UpstreamSettings = UpstreamSettings()

    lookup_cache_ttl: float | None = Field(
        default=None,
        ge=0,
        description="Seconds other processes may keep serving a file unpublished elsewhere; 0 disables the cache. "
        "Default: 1 s on a single node, 0 behind the frontend caches (caches.frontends), where a stale answer "
        "would be cached again right after the purge.",
    )

    # Operations.
    log_level: str = "info"
    access_log: bool = True

    _config_file: ClassVar[Path | None] = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config = cls._config_file or (Path(os.environ["UPDOWN_CONFIG"]) if "UPDOWN_CONFIG" in os.environ else None)
        if config is not None:
            if not config.is_file():
                raise ValueError(f"config file not found: {config}")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config))
        return tuple(sources)

    @classmethod
    def load(cls, config_file: Path | None = None, **overrides: Any) -> Settings:
        cls._config_file = config_file
        try:
            return cls(**overrides)
        finally:
            cls._config_file = None

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_networks(cls, value: list[str]) -> list[str]:
        for item in value:
            ipaddress.ip_network(item, strict=False)
        return value

    @field_validator("public_host", "private_host")
    @classmethod
    def _lower_host(cls, value: str) -> str:
        return value.strip().lower()

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.public_host == self.private_host:
            raise ValueError("public_host and private_host must differ")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        return self

    # Derived values -------------------------------------------------------------------------------------------

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir.resolve() / 'updown.db'}"

    @property
    def objects_path(self) -> Path:
        return self.storage.local.path or self.data_dir / "objects"

    @property
    def resolved_lookup_cache_ttl(self) -> float:
        if self.lookup_cache_ttl is not None:
            return self.lookup_cache_ttl
        return 0.0 if self.caches.frontends or self.caches.units_file else 1.0

    @property
    def redirect_port(self) -> int:
        if self.https_redirect_port is not None:
            return self.https_redirect_port
        return self.port if self.tls else 443

    def signing_keys(self) -> dict[str, bytes]:
        """All active HMAC keys, by key id (config and key file merged)."""
        keys = {kid: secret.get_secret_value().encode() for kid, secret in self.hmac_keys.items()}
        if self.hmac_keys_file is not None and self.hmac_keys_file.exists():
            loaded = json.loads(self.hmac_keys_file.read_text())
            if not isinstance(loaded, dict):
                raise ValueError("hmac_keys_file must hold a JSON object {key_id: secret}")
            keys.update({str(k): str(v).encode() for k, v in loaded.items()})
        return keys
