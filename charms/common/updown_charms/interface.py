"""The `updown_cache` relation interface (the cache charm's endpoint `app`, updown-app's `frontend-cache` and
`backend-cache`) and the cache charm's peer `ring` data, as pydantic models: one schema, both charms read and
write it. Every value in a Juju databag is a string; `load` and `dump` convert. Documented in charms/cache/README.md."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Self

from pydantic import BaseModel, ConfigDict, Field

from updown_charms.values import Port, Role


class Databag(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    @classmethod
    def load(cls, databag: Mapping[str, str]) -> Self:
        """Parse a unit databag; raises pydantic.ValidationError when a key is missing or wrong."""
        return cls.model_validate(dict(databag))

    def dump(self, databag: MutableMapping[str, str]) -> None:
        for key, value in self.model_dump(by_alias=True, mode="json").items():
            databag[key] = str(value)


class AppUnitData(Databag):
    """Written by each updown-app unit in its unit databag: where it listens (plain HTTP, behind the caches)."""

    address: str
    port: Port
    health_path: str = Field("/readyz", alias="health-path", pattern=r"^/")
    # True while the unit is being restarted (staged rollouts): no new requests, in-flight ones finish.
    draining: bool = False


class StoreAppData(Databag):
    """Written by the updown-app leader in its application databag on `backend-cache`: the object store the
    backend cache units read from, as the app itself uses it. `upstream-url` is the origin (scheme://host[:port])
    of the URLs the app presigns; absent when the app has no fixed endpoint to give (local storage, Swift through
    the Keystone catalog without swift-storage-url, S3 without an endpoint). It may be plain http: the cache
    charm refuses it (it reads the store over HTTPS only) rather than this schema hiding it. `upstream-ca` is
    the PEM CA bundle that signs the store's certificate; absent: the system's CAs."""

    upstream_url: str = Field("", alias="upstream-url")
    upstream_ca: str = Field("", alias="upstream-ca")


class CacheUnitData(Databag):
    """Written by each cache unit in its unit databag.

    role=frontend: the app sends `PURGE <path>` (and `BAN` with `X-Ban-Url: <regex>`) to http://address:port
    of every frontend unit when a file is unpublished. role=backend: the app picks a unit for an object by
    consistent hashing over the units of this relation and reads the object through http://address:port.
    """

    role: Role
    address: str
    port: Port


class RingUnitData(Databag):
    """Written by each frontend unit in its peer (`ring`) unit databag: its Varnish."""

    address: str
    port: Port
