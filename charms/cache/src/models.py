"""The typed state of a cache unit: everything the workload needs, built by the charm (src/state.py) from Juju
config, relations and secrets, or directly by the local stack and the tests. No Juju imports here."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from updown_charms.interface import StoreAppData
from updown_charms.values import HOSTNAME, Port, Role, hostname, pem_certificates

_SIZE = re.compile(r"^[1-9][0-9]*[KMGT]$")
_UNITS = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def size_bytes(value: str) -> int:
    """A validated size ("8M") in bytes; nginx has no T suffix, so the backend role renders plain bytes."""
    return int(value[:-1]) * _UNITS[value[-1]]


def upstream_url(value: str) -> str:
    """The store a backend unit reads: https://host[:port] by host name, normalised; "" stays "" (not given)."""
    value = value.strip()
    if not value:
        return value
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        raise ValueError("bad port") from None
    # The app presigns URLs for the store and sends their path and query to the unit: only the origin here.
    if parts.scheme != "https" or not parts.hostname or parts.username or parts.password:
        raise ValueError("must be https://host[:port] (the store is always read over HTTPS)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("must be https://host[:port], without a path or query")
    host = parts.hostname.lower()
    if not HOSTNAME.match(host):
        raise ValueError(f"not a hostname: {host!r}")
    if re.fullmatch(r"[0-9.]+", host):  # nginx matches the certificate's DNS names only (and sends it as SNI)
        raise ValueError("name the store by its host name, not an IP address (its certificate is checked)")
    return f"https://{host}" + (f":{port}" if port else "")


class UpstreamError(ValueError):
    """A backend unit has no store it can read: the message says what to do."""


ConfigT = TypeVar("ConfigT", bound="CacheConfig")
# Related, but the app gave no store (or its leader has not written it yet).
NO_UPSTREAM = (
    "no upstream: updown-app publishes no store endpoint (it has none to give for local storage, Swift without "
    "swift-storage-url or S3 without an endpoint): set upstream-url"
)


def with_upstream(config: ConfigT, published: Sequence[StoreAppData]) -> ConfigT:
    """`config` with its store resolved: its own upstream-url (an operator's override), else the one updown-app
    published on the `app` relation (`published`: one per related application that gave one). upstream-ca
    likewise, except that the app's CA is only trusted for the app's store: an overriding upstream-url of
    another store with an empty upstream-ca gets the system's CAs. Raises UpstreamError."""
    stores = sorted({(p.upstream_url.strip(), p.upstream_ca.strip()) for p in published if p.upstream_url.strip()})
    if config.upstream_url:
        ca = config.upstream_ca or next(
            (_published_ca(c) for u, c in stores if _same_origin(u, config.upstream_url)), ""
        )
        return config.model_copy(update={"upstream_ca": ca})
    if len({url for url, _ in stores}) > 1:
        raise UpstreamError(
            f"the related updown-app applications read different stores ({', '.join(u for u, _ in stores)}): "
            "set upstream-url"
        )
    if not stores:
        raise UpstreamError(NO_UPSTREAM)
    app_url, app_ca = stores[0]
    if urlsplit(app_url).scheme.lower() == "http":
        raise UpstreamError(
            f"updown-app's store {app_url} is plain HTTP: the backend cache reads the store over HTTPS only; "
            "give the store an HTTPS endpoint by host name, or set upstream-url"
        )
    try:
        url = upstream_url(app_url)
    except ValueError as exc:
        raise UpstreamError(f"updown-app's store {app_url}: {exc}; set upstream-url") from exc
    ca = config.upstream_ca or _published_ca(app_ca)
    return config.model_copy(update={"upstream_url": url, "upstream_ca": ca})


def _same_origin(published: str, url: str) -> bool:
    try:
        return upstream_url(published) == url
    except ValueError:
        return False


def _published_ca(value: str) -> str:
    try:
        return pem_certificates(value)
    except ValueError as exc:
        raise UpstreamError(f"updown-app's store CA: {exc}; set upstream-ca") from exc


class CacheConfig(BaseModel):
    """The charm's config options (dashes become underscores), validated."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    role: Role = Role.FRONTEND
    public_hostname: str = ""
    private_hostname: str = ""
    cache_size: str = "1G"
    grace: int = Field(3600, ge=0)
    max_ttl: int = Field(604800, ge=1)
    hsts_max_age: int = Field(63072000, ge=0)
    http_port: Port = 80
    https_port: Port = 443
    cache_port: Port = 6081
    health_check_interval: int = Field(5, ge=1, le=3600)
    # role=backend: the object store nginx reads from (https://host[:port], nothing else), the CA bundle (PEM)
    # that signs its certificate (empty: the system's), and the size of the slices objects are cached in.
    upstream_url: str = ""
    upstream_ca: str = ""
    slice_size: str = "8M"

    @field_validator("public_hostname", "private_hostname")
    @classmethod
    def _hostname(cls, value: str) -> str:
        return hostname(value)

    @field_validator("cache_size", "slice_size")
    @classmethod
    def _size(cls, value: str) -> str:
        value = value.strip().upper()
        if not _SIZE.match(value):
            raise ValueError("must be a number with a K, M, G or T suffix, e.g. 4G")
        return value

    @field_validator("slice_size")
    @classmethod
    def _slice_size(cls, value: str) -> str:
        if not 64 * 1024 <= size_bytes(value) <= 1024**3:
            raise ValueError("must be between 64K and 1G")
        return value

    @field_validator("upstream_url")
    @classmethod
    def _upstream_url(cls, value: str) -> str:
        return upstream_url(value)

    @field_validator("upstream_ca")
    @classmethod
    def _upstream_ca(cls, value: str) -> str:
        return pem_certificates(value)

    @model_validator(mode="after")
    def _role_requirements(self) -> CacheConfig:
        if self.role is Role.BACKEND:  # the frontend's hostnames, TLS and HTTP(S) ports mean nothing here
            return self  # an empty upstream-url: the one updown-app publishes (with_upstream)
        if self.role is Role.FRONTEND and not self.public_hostname:
            raise ValueError("public-hostname is required for role=frontend")
        if self.private_hostname and self.private_hostname == self.public_hostname:
            raise ValueError("private-hostname must differ from public-hostname")
        if len({self.http_port, self.https_port, self.cache_port}) != 3:
            raise ValueError("http-port, https-port and cache-port must differ")
        return self

    @property
    def upstream_host(self) -> str:
        return urlsplit(self.upstream_url).hostname or ""

    @property
    def upstream_port(self) -> int:
        return urlsplit(self.upstream_url).port or 443


class _Server(BaseModel):
    """A unit HAProxy or Varnish sends requests to."""

    model_config = ConfigDict(frozen=True)

    unit_name: str  # "updown-cache/3"
    address: str
    port: Port

    @property
    def server_name(self) -> str:
        return self.unit_name.replace("/", "-")


class RingMember(_Server):
    """One frontend unit's Varnish, as every HAProxy of the ring sees it."""

    @property
    def unit_number(self) -> int:
        return int(self.unit_name.rsplit("/", 1)[1])


class Origin(_Server):
    """One updown-app unit."""

    health_path: str = "/readyz"
    draining: bool = False  # gets no new requests (HAProxy `disabled`, left out of Varnish's director)


class TLSMaterial(BaseModel):
    """The certificate chain (leaf first) and its private key, PEM."""

    model_config = ConfigDict(frozen=True)

    chain: str
    key: str

    def as_haproxy_pem(self) -> str:
        return self.chain.strip() + "\n" + self.key.strip() + "\n"


class Telemetry(BaseModel):
    """Loopback ports of a unit's metrics endpoints: the COS agent runs on the same machine and scrapes them there;
    nothing off the machine can reach them. Not config options: the local stack alone moves them (one machine)."""

    model_config = ConfigDict(frozen=True)

    haproxy: Port = 9101  # HAProxy's built-in Prometheus exporter, and the certificate's expiry (role=frontend)
    varnish_exporter: Port = 9131  # prometheus-varnish-exporter (role=frontend)
    nginx_status: Port = 9112  # nginx's stub_status, read by the exporter only (role=backend)
    nginx_exporter: Port = 9113  # prometheus-nginx-exporter (role=backend)


class CacheState(BaseModel):
    """Everything the workload renders from. Ring members and origins are sorted, so equal inputs give
    byte-identical configs on every unit."""

    model_config = ConfigDict(frozen=True)

    unit_name: str
    address: str
    config: CacheConfig
    ring: tuple[RingMember, ...] = ()
    origins: tuple[Origin, ...] = ()
    tls: TLSMaterial | None = None
    bind_address: str = "0.0.0.0"  # where HAProxy and Varnish listen; the stack uses one loopback address a unit
    telemetry: Telemetry = Telemetry()

    @model_validator(mode="after")
    def _backend_upstream(self) -> CacheState:
        if self.config.role is Role.BACKEND and not self.config.upstream_url:
            raise ValueError("role=backend needs an upstream: upstream-url, or the store updown-app publishes")
        return self

    @field_validator("ring")
    @classmethod
    def _sort_ring(cls, ring: tuple[RingMember, ...]) -> tuple[RingMember, ...]:
        return tuple(sorted(ring, key=lambda m: m.unit_number))

    @field_validator("origins")
    @classmethod
    def _sort_origins(cls, origins: tuple[Origin, ...]) -> tuple[Origin, ...]:
        return tuple(sorted(origins, key=lambda o: o.unit_name))
