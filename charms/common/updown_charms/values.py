"""Validated value types both charms' config models use."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated

from pydantic import Field

Port = Annotated[int, Field(ge=1, le=65535)]
_PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+-----END CERTIFICATE-----")
HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")


class Role(StrEnum):
    """The cache charm's roles (the `role` key of the `updown_cache` relation, see interface.py)."""

    FRONTEND = "frontend"
    BACKEND = "backend"


def hostname(value: str) -> str:
    """A DNS host name, lower-cased; empty stays empty (the model says whether it is required)."""
    value = value.strip().lower()
    if value and not HOSTNAME.match(value):
        raise ValueError(f"not a hostname: {value!r}")
    return value


def pem_certificates(value: str) -> str:
    """PEM certificates only, one trailing newline; "" (the system's CAs) stays ""."""
    value = value.strip()
    if value and _PEM_CERT.sub("", value).strip():
        raise ValueError("must be PEM certificates only (-----BEGIN CERTIFICATE----- ...)")
    return value + "\n" if value else ""
