"""The real private-host ``Authorizer``: an SSO bearer token, then the store's access check.

Built from ``settings.private`` by ``build_authorizer``; without an SSO mode and an access-check URL the service
keeps ``DenyAll`` (private downloads fail closed).
"""

from __future__ import annotations

import logging

import httpx

from updown_app.auth.access_check import AccessChecker
from updown_app.auth.private import Principal
from updown_app.auth.tokens import CachedTokenValidator, bearer_token, create_token_validator
from updown_app.core.errors import Forbidden
from updown_app.metadata.models import File, Visibility
from updown_app.settings import Settings

log = logging.getLogger("updown.auth")


class StoreAuthorizer:
    def __init__(self, tokens: CachedTokenValidator, access: AccessChecker, http: httpx.AsyncClient) -> None:
        self.tokens = tokens
        self.access = access
        self.http = http

    async def authenticate(self, authorization: str | None) -> Principal:
        return await self.tokens.authenticate(bearer_token(authorization))

    async def authorize(self, principal: Principal, file: File) -> None:
        if file.visibility == Visibility.public:
            return  # anyone may have a public file; the store need not be asked
        if not await self.access.allowed(principal.user_id, file.package, principal.expires_at):
            log.info("private download denied", extra={"user": principal.user_id, "package": file.package})
            raise Forbidden("forbidden", "you are not allowed to download this package")

    async def aclose(self) -> None:
        await self.http.aclose()


def _signing_key(settings: Settings) -> tuple[str, bytes]:
    check = settings.private.access_check
    if check.secret is not None:
        if check.key_id is None:
            raise ValueError("private.access_check.secret needs private.access_check.key_id")
        return check.key_id, check.secret.get_secret_value().encode()
    keys = settings.signing_keys()
    if check.key_id is None:
        if len(keys) != 1:
            raise ValueError("private.access_check.key_id must name the HMAC key our access checks are signed with")
        return next(iter(keys.items()))
    if check.key_id not in keys:
        raise ValueError("private.access_check.key_id names no configured HMAC key")
    return check.key_id, keys[check.key_id]


def build_authorizer(settings: Settings) -> StoreAuthorizer | None:
    """The authorizer ``settings.private`` describes, or None when private downloads are not configured."""
    private = settings.private
    if private.sso.mode is None and private.access_check.url is None:
        return None
    if private.sso.mode is None or private.access_check.url is None:
        raise ValueError("private downloads need both private.sso.mode and private.access_check.url")
    key_id, secret = _signing_key(settings)
    timeout = max(private.sso.timeout, private.access_check.timeout)
    http = httpx.AsyncClient(
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
    )
    tokens = create_token_validator(private.sso, http, private.retry_after)
    assert tokens is not None
    access = AccessChecker(private.access_check, key_id, secret, http, private.retry_after)
    log.info(
        "private downloads enabled",
        extra={"sso_mode": private.sso.mode, "access_check_key_id": key_id},
    )
    return StoreAuthorizer(tokens, access, http)
