"""Validated value types both charms' config models use."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated

from pydantic import Field

Port = Annotated[int, Field(ge=1, le=65535)]
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
