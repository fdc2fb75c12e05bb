"""The hook that decides private downloads.

The private host asks an ``Authorizer`` twice: who is asking (before anything about the file is revealed) and
whether that principal may have this file. Until an authorizer is configured the service fails closed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from updown_app.core.errors import Forbidden, Unauthenticated
from updown_app.metadata.models import File


@dataclass(frozen=True)
class Principal:
    user_id: str
    expires_at: float | None = None


class Authorizer(Protocol):
    async def authenticate(self, authorization: str | None) -> Principal:
        """The caller named by the request's ``Authorization`` header (None when absent), or Unauthenticated
        (no/invalid credentials) / Unavailable (identity provider down). A header value, not the HTTP request:
        the domain knows no HTTP framework."""
        ...

    async def authorize(self, principal: Principal, file: File) -> None:
        """Return when allowed; Forbidden when denied, Unavailable when the decision cannot be made."""
        ...


class DenyAll:
    """The default: no private download is possible until an authorizer is configured."""

    async def authenticate(self, authorization: str | None) -> Principal:
        raise Unauthenticated("unauthorized", "private downloads need authentication", "Bearer")

    async def authorize(self, principal: Principal, file: File) -> None:
        raise Forbidden("forbidden", "access denied")
