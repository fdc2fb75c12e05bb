"""The hook that decides private downloads.

The private host asks an ``Authorizer`` twice: who is asking (before anything about the file is revealed) and
whether that principal may have this file. Until an authorizer is configured the service fails closed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from starlette.requests import Request

from updown_app.http.errors import ApiError
from updown_app.metadata.models import File


@dataclass(frozen=True)
class Principal:
    user_id: str
    expires_at: float | None = None


class Authorizer(Protocol):
    async def authenticate(self, request: Request) -> Principal:
        """The caller, or ApiError 401 (no/invalid credentials) / 503 (identity provider unreachable)."""
        ...

    async def authorize(self, principal: Principal, file: File) -> None:
        """Return when allowed; ApiError 403 when denied, 503 when the decision cannot be made."""
        ...


class DenyAll:
    """The default: no private download is possible until an authorizer is configured."""

    async def authenticate(self, request: Request) -> Principal:
        raise ApiError(401, "unauthorized", "private downloads need authentication", {"www-authenticate": "Bearer"})

    async def authorize(self, principal: Principal, file: File) -> None:
        raise ApiError(403, "forbidden", "access denied")
